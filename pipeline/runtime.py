"""Scoring with onnxruntime alone: this module (and what it imports) never imports torch.

Scores are negative ELBO estimates, higher = more anomalous. Three estimators:
`elbo` (default, deterministic, z = mu), `mc` (Monte-Carlo ELBO with `samples` draws) and
`iwae` (importance-weighted bound, tighter, → −log p(x) as samples grow). The random
draws come from a numpy generator seeded by `seed`, so the same seed gives the same scores."""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
from queue import Full, Queue
from typing import TypeVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.special import logsumexp

from pipeline import ingest
from pipeline.atomic import atomic_output
from pipeline.errors import DataError, ModelArtifactError, PipelineError
from pipeline.faults import crash_point
from pipeline.manifest import Manifest, read_manifest, resolve_model_dir, verified_bytes
from pipeline.quantize import INT8_GRAPH
from pipeline.schema import (
    InputReport, check_columns, coerce, entity_bounds, make_windows, sort_for_windows, source_matrix, to_matrix,
)
from pipeline.threshold import percentile_of

log = logging.getLogger(__name__)
T = TypeVar("T")

Estimator = Literal["elbo", "mc", "iwae"]
Provider = Literal["auto", "cpu", "cuda", "tensorrt"]
Precision = Literal["fp32", "int8"]
ORT_BATCH = 4096  # rows per call for the other graphs: 2k–8k stays in cache (see PERF_NOTES)
# The scorer on the CPU: one single-threaded session per core, each scoring its own chunks of
# CPU_CHUNK rows, was 1.5× faster than one session splitting every operator over both cores
# (no barrier per operator), and 2,048 rows was the best chunk (BENCHMARKS.md, bench/speed.py).
CPU_CHUNK = 2048
GPU_CHUNK = 262144
# With `auto`, a batch goes to the GPU only from this many rows: below it, launches and copies
# cost more than the CPU pool's arithmetic (bench/gpu.py measures where the curves cross;
# BENCHMARKS.md, "GPU"). An explicit `cuda` or `tensorrt` sends every batch to the GPU.
GPU_MIN_ROWS = 1024
TENSORRT_CACHE = ".tensorrt-cache"  # inside the version folder; dot-named, so no manifest file
CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def _gpu_visible() -> bool:
    """A cheap check before asking onnxruntime for CUDA (it lists CUDA even with no GPU)."""
    if sys.platform == "linux":
        return Path("/dev/nvidiactl").exists() or Path("/dev/nvidia0").exists()
    return True


def select_providers(requested: Provider = "auto") -> list[str]:
    """Execution providers to try, in order; CPU always comes last as the fallback."""
    available = ort.get_available_providers()
    if requested == "cpu":
        return [CPU]
    if requested in ("cuda", "tensorrt"):
        wanted = CUDA if requested == "cuda" else TENSORRT
        if wanted not in available:
            raise PipelineError(
                f"provider '{requested}' was requested, but this onnxruntime offers {available}. "
                "Install onnxruntime-gpu, or use --provider cpu."
            )
        return [wanted, CUDA, CPU] if requested == "tensorrt" else [CUDA, CPU]
    if CUDA in available and _gpu_visible():
        return [CUDA, CPU]
    return [CPU]


def provider_options(providers: list[str], cache_dir: Path | None = None,
                     fp16: bool = False) -> list[tuple[str, dict[str, str]]]:
    """(provider, options) pairs. TensorRT keeps its built engines in `cache_dir`, so a model
    pays the engine build (seconds to minutes) once, not at every load; `fp16` lets it run
    in half precision (its score change is measured in bench/gpu.py, not assumed)."""
    pairs: list[tuple[str, dict[str, str]]] = []
    for name in providers:
        options: dict[str, str] = {}
        if name == TENSORRT:
            options["trt_fp16_enable"] = "True" if fp16 else "False"
            if cache_dir is not None:
                options.update(trt_engine_cache_enable="True", trt_engine_cache_path=str(cache_dir),
                               trt_timing_cache_enable="True", trt_timing_cache_path=str(cache_dir))
        pairs.append((name, options))
    return pairs


def tensorrt_cache(folder: Path) -> Path | None:
    """The engine cache beside a model version, or None where the folder is read-only
    (engines are then rebuilt at each load, which is said once)."""
    cache = folder / TENSORRT_CACHE
    try:
        cache.mkdir(exist_ok=True)
    except OSError as exc:
        log.warning("TensorRT engine cache disabled: cannot create '%s' (%s).", cache, exc.strerror)
        return None
    return cache


def cpu_cores() -> int:
    """Cores this process may run on (a container's or taskset's limit, not the host's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def open_session(model: Path | bytes, requested: Provider = "auto", name: str = "model",
                 threads: int | None = None, cache_dir: Path | None = None) -> ort.InferenceSession:
    """An InferenceSession on the best working provider; says so when it falls back.
    `threads` sets onnxruntime's intra-op threads (None: its default, one per core);
    `cache_dir` holds TensorRT's engines when that provider is asked for."""
    providers = select_providers(requested)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: provider probing is reported by us, once
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    path = model if isinstance(model, Path) else name
    try:
        session = ort.InferenceSession(str(model) if isinstance(model, Path) else model, sess_options=options,
                                       providers=provider_options(providers, cache_dir))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ModelArtifactError(f"onnxruntime cannot load '{path}': {str(exc).strip().splitlines()[0]}") from exc
    used = session.get_providers()
    if providers[0] != CPU and providers[0] not in used:
        if requested != "auto":
            raise PipelineError(f"provider '{requested}' failed to start for '{path}' (got {used}); no GPU is usable.")
        log.warning("CUDA provider is installed but not working; scoring on the CPU.")
    return session


def check_graph(session: ort.InferenceSession, graph: str, manifest: Manifest, path: Path) -> None:
    """The graph's own metadata and signature must match its role in this manifest."""
    meta = session.get_modelmeta().custom_metadata_map
    found = {"graph": meta.get("graph"), "model_name": meta.get("model_name"), "created_at": meta.get("created_at")}
    wanted = {"graph": graph, "model_name": manifest.name, "created_at": manifest.created_at}
    io = {"inputs": [i.name for i in session.get_inputs()], "outputs": [o.name for o in session.get_outputs()]}
    if found != wanted or io != manifest.graphs.get(graph):
        raise ModelArtifactError(
            f"'{path}' is not this model's {graph} graph (it says {found}, {io}; the manifest expects {wanted}, "
            f"{manifest.graphs.get(graph)}). Files from different exports were mixed; re-export the model.")
    if "threshold" in meta and float(meta["threshold"]) != manifest.threshold.value:
        raise ModelArtifactError(
            f"'{path}' was exported with threshold {meta['threshold']}, but the manifest says "
            f"{manifest.threshold.value!r}: the manifest was edited. Re-fit thresholds with `vad threshold`.")
    takes_rows = graph in ("scorer", INT8_GRAPH, "scorer_sampled")
    if takes_rows and session.get_inputs()[0].shape[1] != len(manifest.input_names):
        raise ModelArtifactError(f"'{path}' takes {session.get_inputs()[0].shape[1]} inputs; the manifest lists "
                                 f"{len(manifest.input_names)}. Re-export the model.")


@dataclass
class ScoreArrays:
    """Per-row scores with either per-input negative log-likelihood terms (raw units) or,
    from the scorer graph's own ranking, the top source columns' indices and shares."""

    score: np.ndarray
    feature_nll: np.ndarray | None = None
    top_index: np.ndarray | None = None
    top_share: np.ndarray | None = None


class KernelPool:
    """The scorer graph run over row chunks. On the CPU, one single-threaded session per core,
    each taking its own chunks; a batch of one chunk or less runs in the caller's thread (no
    hand-off: batch-1 latency). With a GPU, one GPU session takes large chunks: every batch when
    the GPU was asked for by name, and under `auto` only batches of `gpu_min_rows` or more,
    the rest going to the CPU sessions, which are faster there (bench/gpu.py)."""

    def __init__(self, model: bytes, provider: Provider, name: str, cache_dir: Path | None = None) -> None:
        self.gpu: ort.InferenceSession | None = None
        if select_providers(provider)[0] != CPU:
            session = open_session(model, provider, name, threads=1, cache_dir=cache_dir)  # CPU threads only feed it
            if session.get_providers()[0] != CPU:
                self.gpu = session
        self.gpu_min_rows = GPU_MIN_ROWS if provider == "auto" else 0
        workers = 0 if self.gpu is not None and self.gpu_min_rows == 0 else cpu_cores()
        self.cpu = [open_session(model, "cpu", name, threads=1) for _ in range(workers)]
        outputs = (self.gpu or self.cpu[0]).get_outputs()
        self.top_k = int(outputs[-1].shape[1]) if outputs[-1].name == "top_share" else 0
        self.chunk, self.gpu_chunk = CPU_CHUNK, GPU_CHUNK
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="vad-score") if workers > 1 else None
        self._local = threading.local()
        self._next = itertools.count(1)  # pool threads take sessions 1, 2, …; the caller's is 0

    @property
    def sessions(self) -> list[ort.InferenceSession]:
        """Every session this pool opened: the GPU's first, then the CPU's."""
        return ([self.gpu] if self.gpu is not None else []) + self.cpu

    def describe(self) -> str:
        """Where batches run, for people: the provider, and the GPU's batch floor under auto."""
        if self.gpu is None:
            return CPU
        if not self.cpu:
            return self.gpu.get_providers()[0]
        return f"{self.gpu.get_providers()[0]} (batches of {self.gpu_min_rows:,}+ rows; smaller ones on {CPU})"

    def on_gpu(self, rows: int) -> bool:
        """Whether a batch of `rows` goes to the GPU session."""
        return self.gpu is not None and (not self.cpu or rows >= self.gpu_min_rows)

    def _session(self) -> ort.InferenceSession:
        if not hasattr(self._local, "index"):
            self._local.index = next(self._next) % len(self.cpu)
        return self.cpu[self._local.index]

    def run(self, outputs: list[str], x: np.ndarray) -> list[np.ndarray]:
        """The named outputs for all rows of `x` (C-contiguous float32), chunk results joined."""
        if len(x) == 0:  # the graph cannot broadcast over zero rows: answer with empty outputs
            return empty_outputs((self.gpu or self.cpu[0]), outputs)
        on_gpu = self.on_gpu(len(x))
        chunk = self.gpu_chunk if on_gpu else self.chunk
        starts = range(0, len(x), chunk)
        if on_gpu:
            parts = [self.gpu.run(outputs, {"x": x[i:i + chunk]}) for i in starts]
        elif self._pool is None or len(x) <= chunk:
            parts = [self.cpu[0].run(outputs, {"x": x[i:i + chunk]}) for i in starts]
        else:
            parts = list(self._pool.map(lambda i: self._session().run(outputs, {"x": x[i:i + chunk]}), starts))
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(outputs))]


def empty_outputs(session: ort.InferenceSession, names: list[str]) -> list[np.ndarray]:
    """The named outputs for zero rows, shaped and typed as the graph declares them."""
    types = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_}
    declared = {o.name: o for o in session.get_outputs()}
    return [np.zeros([0, *[d if isinstance(d, int) else 0 for d in declared[n].shape[1:]]], types[declared[n].type])
            for n in names]


@dataclass
class ScoreReport:
    """What `score_files` did: counts, repairs, where the output went, the top rows."""

    output: Path
    files: list[Path]
    rows: int = 0
    anomalies: int = 0
    threshold: float = 0.0
    inputs: InputReport = field(default_factory=InputReport)
    top: list[dict] = field(default_factory=list)


class Scorer:
    """A loaded model version: `Scorer.load(path).score(frame) -> frame`."""

    def __init__(self, folder: Path, manifest: Manifest, provider: Provider = "auto",
                 precision: Precision = "fp32") -> None:
        if precision not in ("fp32", "int8"):
            raise PipelineError(f"precision must be fp32 or int8, got {precision!r}.")
        if precision == "int8" and INT8_GRAPH not in manifest.graphs:
            raise PipelineError(f"model '{folder}' has no int8 scorer; train it with `[export] int8 = true` "
                                "(or `vad train --int8`), or score with precision fp32.")
        self.folder, self.manifest, self.provider = folder, manifest, provider
        self.scorer_graph = INT8_GRAPH if precision == "int8" else "scorer"
        self.schema = manifest.feature_schema
        self._sessions: dict[str, ort.InferenceSession] = {}
        self.source_names, self._to_source = source_matrix(self.schema.input_sources)
        self._baseline = np.asarray(manifest.feature_baseline, dtype=np.float32)
        self._names = pl.Series(self.source_names, dtype=pl.Enum(self.source_names))
        self._kernel: KernelPool | None = None
        self._percentiles = manifest.validation.get("score_percentiles")  # absent in older models

    @classmethod
    def load(cls, path: str | Path, provider: Provider = "auto", precision: Precision = "fp32") -> "Scorer":
        """Load a version folder (or a model folder's `latest`), checking every sha256 first.
        There is no way to skip the checks: each graph is opened from checked bytes anyway.
        `precision="int8"` scores with the int8 scorer, when the model was exported with one."""
        folder = resolve_model_dir(path)
        scorer = cls(folder, read_manifest(folder), provider, precision)
        scorer.kernel()  # fail at load, not at the first batch, if the graph is wrong
        return scorer

    @property
    def threshold(self) -> float:
        return self.manifest.threshold.value

    def session(self, graph: str) -> ort.InferenceSession:
        """The graph's session, from bytes checked against the manifest, refused unless the
        graph is the one the manifest describes (a swapped or foreign file)."""
        if graph not in self._sessions:
            file = f"{graph}.onnx"
            session = open_session(verified_bytes(self.folder, self.manifest, file), self.provider,
                                   str(self.folder / file), cache_dir=self._tensorrt_cache())
            check_graph(session, graph, self.manifest, self.folder / file)
            self._sessions[graph] = session
        return self._sessions[graph]

    def kernel(self) -> KernelPool:
        """The scorer graph's sessions (fp32 or int8), checked like `session`, opened once."""
        if self._kernel is None:
            file = self.folder / f"{self.scorer_graph}.onnx"
            kernel = KernelPool(verified_bytes(self.folder, self.manifest, file.name), self.provider, str(file),
                                cache_dir=self._tensorrt_cache())
            for session in kernel.sessions:
                check_graph(session, self.scorer_graph, self.manifest, file)
            self._kernel = kernel
        return self._kernel

    def _tensorrt_cache(self) -> Path | None:
        return tensorrt_cache(self.folder) if self.provider == "tensorrt" else None

    # -- arrays -------------------------------------------------------------------------
    def score_array(self, x: np.ndarray, estimator: Estimator = "elbo", samples: int = 16, seed: int = 0,
                    top_k: int | None = None) -> ScoreArrays:
        """Score raw model inputs (rows × inputs, float32). Higher = more anomalous.
        With `top_k` (elbo only), the graph's own ranking of the top source columns comes back
        instead of the per-input terms, when the graph ranks at least that many."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(self.manifest.input_names):
            raise PipelineError(f"inputs must have shape (rows, {len(self.manifest.input_names)}), got {x.shape}.")
        if estimator == "elbo":
            if top_k is not None and top_k <= self.kernel().top_k:
                score, index, share = self.kernel().run(["score", "top_index", "top_share"], x)
                return ScoreArrays(score, top_index=index[:, :top_k], top_share=share[:, :top_k])
            score, nll = self.kernel().run(["score", "feature_nll"], x)
            return ScoreArrays(score, nll)
        if estimator not in ("mc", "iwae"):
            raise PipelineError(f"estimator must be one of elbo, mc, iwae, got {estimator!r}.")
        if samples < 1:
            raise PipelineError(f"samples must be ≥ 1, got {samples}.")
        if len(x) == 0:
            return ScoreArrays(np.zeros(0, np.float32), np.zeros((0, x.shape[1]), np.float32))
        rng = np.random.default_rng(seed)
        latent = int(self.manifest.model["latent"])
        session = self.session("scorer_sampled")
        batch = max(1, ORT_BATCH // samples)
        scores, nlls = [], []
        for i in range(0, len(x), batch):
            chunk = x[i:i + batch]
            eps = rng.standard_normal((len(chunk), samples, latent), dtype=np.float32)
            log_weight, nll = session.run(None, {"x": chunk, "eps": eps})
            # log_weight: [rows, samples, members]; each member's bound, then the member mean.
            if estimator == "mc":
                bound = log_weight.mean(axis=1, dtype=np.float64)
            else:  # log-mean-exp of the importance weights
                bound = logsumexp(log_weight.astype(np.float64), axis=1) - np.log(samples)
            scores.append(-bound.mean(axis=1))
            nlls.append(nll)
        return ScoreArrays(np.concatenate(scores).astype(np.float32), np.concatenate(nlls))

    def contributions(self, feature_nll: np.ndarray) -> np.ndarray:
        """Each source column's share of the excess NLL over its validation mean (rows sum to 1,
        or 0 where no feature is above its normal level)."""
        excess = np.maximum(feature_nll - self._baseline, 0.0) @ self._to_source
        total = excess.sum(axis=1, keepdims=True)
        return np.divide(excess, total, out=np.zeros_like(excess), where=total > 0)

    # -- frames -------------------------------------------------------------------------
    def prepare(self, frame: pl.DataFrame, file: str | None = None, row_offset: int = 0
                ) -> tuple[np.ndarray, pl.DataFrame, InputReport]:
        """Validate and encode a frame: model inputs, the key columns per scored row, repairs."""
        frame = coerce(frame, self.schema, file, row_offset)
        resorted = False
        if self.schema.mode == "sensor":
            frame, resorted = sort_for_windows(frame, self.schema, file, row_offset)
        matrix, report = to_matrix(frame, self.schema, file, row_offset, keep_infinite=True)
        report.resorted = resorted
        if self.schema.mode == "sensor" and self.schema.window and self.schema.window.length > 1:
            if frame.height:
                matrix, _ = make_windows(matrix, entity_bounds(frame, self.schema), self.schema.window, pad=True)
            else:  # no series, no windows: an empty batch scores to an empty frame
                matrix = np.zeros((0, len(self.manifest.input_names)), np.float32)
        return matrix, frame.select(self.schema.key_columns), report

    def score_with_report(self, frame: pl.DataFrame, *, estimator: Estimator = "elbo", samples: int = 16,
                          seed: int = 0, threshold: float | None = None, top_k: int = 3,
                          file: str | None = None, row_offset: int = 0) -> tuple[pl.DataFrame, InputReport]:
        """Score every row (every time step in sensor mode) and explain it."""
        return self.score_prepared(self.prepare(frame, file, row_offset), estimator=estimator, samples=samples,
                                   seed=seed, threshold=threshold, top_k=top_k)

    def score_prepared(self, prepared: tuple[np.ndarray, pl.DataFrame, InputReport], *, estimator: Estimator = "elbo",
                       samples: int = 16, seed: int = 0, threshold: float | None = None,
                       top_k: int = 3) -> tuple[pl.DataFrame, InputReport]:
        """`score_with_report` on the output of `prepare` (which can run in another thread)."""
        x, keys, report = prepared
        k = min(top_k, len(self.source_names))
        arrays = self.score_array(x, estimator, samples, seed, top_k=k)
        limit = self.threshold if threshold is None else threshold
        if arrays.top_index is None:  # rank in numpy: sampled estimators, models whose graph does not rank
            shares = self.contributions(arrays.feature_nll)
            index = np.argsort(-shares, axis=1, kind="stable")[:, :k]
            share = np.take_along_axis(shares, index, axis=1)
        else:
            index, share = arrays.top_index, arrays.top_share
        columns: dict[str, pl.Series] = {"score": pl.Series(arrays.score.astype(np.float64)),
                                         "is_anomaly": pl.Series(self.flags(arrays.score, limit, keys))}
        if self._percentiles is not None:
            columns["percentile"] = pl.Series(percentile_of(arrays.score, self._percentiles))
        for i in range(k):  # column names as an Enum: a gather of small codes, no Python strings
            columns[f"top{i + 1}_feature"] = self._names.gather(index[:, i])
            columns[f"top{i + 1}_share"] = pl.Series(share[:, i].astype(np.float32, copy=False))
        scored = keys.with_columns(**columns) if keys.width else pl.DataFrame(columns)  # no key columns
        return scored, report

    def flags(self, scores: np.ndarray, limit: float, keys: pl.DataFrame) -> np.ndarray:
        """Rows above `limit`; with the model's persistence rule (k of the last n rows of each
        entity's series, in time order), only those whose run of exceedances is long enough."""
        rule = self.manifest.threshold.persistence
        if rule.k <= 1:
            return scores > limit
        return persistent(scores > limit, entity_bounds(keys, self.schema), rule.k, rule.n)

    def score(self, frame: pl.DataFrame, **options) -> pl.DataFrame:
        """Score a frame; repairs (imputed values, unseen categories) are logged as warnings."""
        scored, report = self.score_with_report(frame, **options)
        if report.repaired:
            log.warning("input repairs: %s", report.summary())
        return scored

    def encode(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Latent means per row and ensemble member (`m0_z0` … `m{M-1}_z{k}`; members' latent
        spaces are unrelated), with the row keys."""
        x, keys, _ = self.prepare(frame)
        mu = self.kernel().run(["mu"], np.ascontiguousarray(x, dtype=np.float32))[0]
        rows, members, latent = mu.shape
        names = [f"m{m}_z{i}" for m in range(members) for i in range(latent)]
        return keys.with_columns(pl.DataFrame(mu.reshape(rows, members * latent), schema=names))

    def sample(self, n: int, seed: int = 0) -> pl.DataFrame:
        """Synthetic normal rows: decoder means at z ~ N(0, I) of a member drawn per row (the
        ensemble as a mixture), in raw units (one column per model input; in tabular mode
        one-hot groups collapse back to their most likely category)."""
        if n < 1:
            raise PipelineError(f"the number of rows to sample must be at least 1, got {n}.")
        rng = np.random.default_rng(seed)
        members, latent = int(self.manifest.model.get("members", 1)), int(self.manifest.model["latent"])
        z = rng.standard_normal((n, members, latent), dtype=np.float32)
        member = rng.integers(members, size=n)
        mean = self.session("decoder").run(["mean"], {"z": z})[0][np.arange(n), member]
        raw = self.manifest.scaler.build().inverse(mean)
        frame = pl.DataFrame(raw, schema=self.manifest.input_names)
        if self.schema.mode != "tabular":
            return frame
        out = {}
        for col in self.schema.columns:
            if col.kind == "numeric":
                out[col.name] = frame[col.name]
            else:
                block = frame.select([f"{col.name}={c}" for c in col.categories]).to_numpy()
                out[col.name] = pl.Series(np.asarray(col.categories)[block.argmax(axis=1)])
        return pl.DataFrame(out)


def persistent(exceeds: np.ndarray, bounds: list[tuple[int, int]], k: int, n: int) -> np.ndarray:
    """True where at least `k` of the last `n` rows of the same span (itself included) exceed;
    a series' first rows count only the rows it has."""
    flags = np.zeros_like(exceeds)
    for start, stop in bounds:
        counts = np.concatenate([[0], np.cumsum(exceeds[start:stop], dtype=np.int64)])
        ends = np.arange(1, stop - start + 1)
        flags[start:stop] = counts[ends] - counts[np.maximum(ends - n, 0)] >= k
    return flags


def default_chunk_rows(scorer: Scorer) -> int:
    """Rows read per chunk: larger on a GPU, where each chunk's fixed costs (a launch, copies,
    Python's bookkeeping) are paid against a kernel that is 10× faster (bench/gpu.py)."""
    return 262144 if scorer.kernel().gpu is not None else 65536


def score_files(scorer: Scorer, source: str | Path, output: str | Path, *, chunk_rows: int | None = None,
                estimator: Estimator = "elbo", samples: int = 16, seed: int = 0,
                threshold: float | None = None, top_k: int = 3, keep_top: int = 10) -> ScoreReport:
    """Score a file, glob or folder into one Parquet file, written atomically.

    Tabular files stream in chunks of `chunk_rows`; a sensor file is read whole, because its
    rows are sorted by entity and time before windowing. Each output row carries the input
    file name. On any error the temporary file is removed and nothing is left behind."""
    files = ingest.resolve_sources(source)
    output = Path(output)
    if any(output.resolve() == file.resolve() for file in files):
        raise PipelineError(f"the output '{output}' is one of the inputs: scoring would replace the data it reads. "
                            "Choose another --output.")
    chunk_rows = chunk_rows or default_chunk_rows(scorer)
    for file in files:  # every file's columns are checked before anything is written
        check_columns(ingest.file_columns(file), scorer.schema, str(file))
    report = ScoreReport(output=output, files=files, threshold=scorer.threshold if threshold is None else threshold)
    best: list[tuple[float, int, dict]] = []
    tiebreak = itertools.count()  # equal scores (the same row in two files) must never compare the dicts
    writer: pq.ParquetWriter | None = None
    writing = ThreadPoolExecutor(1, thread_name_prefix="vad-write")  # writes chunk n while n + 1 is scored
    pending = None
    options = dict(estimator=estimator, samples=samples, seed=seed, threshold=threshold, top_k=top_k)
    with atomic_output(output) as temporary:
        try:
            # Three stages overlap: reading and preparing (a thread, up to two chunks ahead),
            # scoring (a thread, one chunk ahead of this one) and writing (a thread, one behind).
            for file, scored, inputs in _prefetched(_scored_chunks(scorer, files, chunk_rows, options), depth=1):
                scored = scored.with_columns(source_file=pl.lit(file.name, dtype=pl.Enum([file.name])))
                crash_point("score")
                table = scored.to_arrow()
                if writer is None:
                    writer = open_scores_writer(temporary, table.schema, top_k)
                if pending is not None:
                    pending.result()
                    crash_point("write")
                pending = writing.submit(writer.write_table, table)
                report.rows += scored.height
                report.anomalies += int(scored["is_anomaly"].sum())
                report.inputs.add(inputs)
                floor = best[0][0] if best and len(best) == keep_top else -np.inf  # only rows that can enter
                for row in scored.filter(pl.col("score") > floor).top_k(keep_top, by="score").iter_rows(named=True):
                    heapq.heappush(best, (row["score"], next(tiebreak), row))
                    if len(best) > keep_top:
                        heapq.heappop(best)
            if pending is not None:
                pending.result()
                crash_point("write")
            if writer is None:
                raise DataError(f"there are no rows to score in '{source}'.")
        except BaseException:
            if pending is not None:
                pending.exception()  # let a write in flight finish before the file is closed
            raise
        finally:
            if writer is not None:
                writer.close()
            writing.shutdown()
    report.top = [row for _, _, row in sorted(best, key=lambda item: -item[0])]
    return report


def open_scores_writer(path: Path, schema: pa.Schema, top_k: int) -> pq.ParquetWriter:
    """The scores file's writer. store_schema=False: Enum columns are written as dictionary-
    encoded strings and read back as plain strings. Measured on 1 M rows: lz4 wrote 3× faster
    than zstd; scores and shares barely compress (22 → 19 MB), and leaving them uncompressed
    and without dictionaries cut the write by a quarter. Column statistics cost a third of
    the write; the ranked explanations are never filtered on, so only the other columns get them."""
    texts = [f.name for f in schema if not pa.types.is_floating(f.type)]
    compression = {f.name: "lz4" if f.name in texts else "none" for f in schema}
    ranked = {f"top{i + 1}_{what}" for i in range(top_k) for what in ("feature", "share")}
    return pq.ParquetWriter(path, schema, compression=compression, store_schema=False, use_dictionary=texts,
                            write_statistics=[n for n in schema.names if n not in ranked])


def _scored_chunks(scorer: Scorer, files: list[Path], chunk_rows: int, options: dict
                   ) -> Iterator[tuple[Path, pl.DataFrame, InputReport]]:
    """(file, scored rows, input report) pieces of every file in turn. The seed advances with
    the rows scored, so sampled scores do not depend on how files are cut into chunks. A
    file written to while it was read is refused once it is done."""
    rows = 0
    for file in files:
        before = ingest.file_stamp(file)
        for _, prepared in _prefetched(_prepared_chunks(scorer, file, chunk_rows)):
            crash_point("read")
            scored, inputs = scorer.score_prepared(prepared, **{**options, "seed": options["seed"] + rows})
            rows += scored.height
            yield file, scored, inputs
        ingest.check_unchanged(file, before)


def _prepared_chunks(scorer: Scorer, file: Path, chunk_rows: int
                     ) -> Iterator[tuple[int, tuple[np.ndarray, pl.DataFrame, InputReport]]]:
    """(row offset, prepared inputs) pieces of one file: streamed for tables, whole for
    sensor series (their rows are sorted before windowing)."""
    columns = scorer.schema.source_columns
    if scorer.schema.mode == "sensor":
        yield 0, scorer.prepare(ingest.read_file(file, columns), str(file), 0)
        return
    offset = 0
    for batch in ingest.iter_file_batches(file, columns, chunk_rows):
        yield offset, scorer.prepare(batch, str(file), offset)
        offset += batch.height


def _prefetched(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """`items`, produced up to `depth` ahead by a background thread, so reading and preparing
    the next chunk overlaps scoring this one. An error in the producer is raised here, in order."""
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def offer(entry: tuple) -> bool:
        """Queue `entry` unless the consumer has gone (then no put may block for ever)."""
        while not stop.is_set():
            try:
                queue.put(entry, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((done, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            offer((done, exc))
        finally:
            getattr(items, "close", lambda: None)()  # a nested prefetch stops its own thread now

    thread = threading.Thread(target=produce, name="vad-read", daemon=True)
    thread.start()
    try:
        while True:
            item, error = queue.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()
