"""Scoring an exported model with onnxruntime: providers and sessions, the kernel pool,
`Scorer`, file and partition scoring, and the read-ahead that overlaps them.

May import `pipeline.core`, `pipeline.data` and `pipeline.artifact`, onnxruntime, polars and
numpy; never torch, onnx or scikit-learn (`make lint` checks it): this is what a scoring-only
deployment installs and loads. pyarrow (the `flows` extra's) only where a Dask flow plans
partitions along Parquet row groups. The names below are the public API."""

from pipeline.runtime.files import ScoreReport, default_chunk_rows, score_files
from pipeline.runtime.kernel import KernelPool
from pipeline.runtime.providers import Provider, cpu_cores, open_session, select_providers
from pipeline.runtime.scorer import Estimator, Missing, Precision, ScoreOptions, Scorer
from pipeline.runtime.steps import EntityState, StepRule, StreamStates, persistent
from pipeline.runtime.writer import write_scores

__all__ = [
    "EntityState",
    "Estimator",
    "KernelPool",
    "Missing",
    "Precision",
    "Provider",
    "ScoreOptions",
    "ScoreReport",
    "Scorer",
    "StepRule",
    "StreamStates",
    "cpu_cores",
    "default_chunk_rows",
    "open_session",
    "persistent",
    "score_files",
    "select_providers",
    "write_scores",
]
