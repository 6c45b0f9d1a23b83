"""Prefect flow `vad-score-partitions`: one large input scored as partitions (Parquet row
groups, files, or a fleet file's groups of whole entities) mapped over a Dask cluster through
prefect-dask's DaskTaskRunner, then combined into one file equal to what `vad score` writes.

Local cluster (default: 2 worker processes):
    python -m flows.score_partitions data/big.parquet --output runs/big-scores.parquet
An existing cluster (every worker must see the model folder and the input files):
    python -m flows.score_partitions s3-mounted/big/ --output … --address tcp://scheduler:8786"""

import os
import socket
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import typer
from prefect import Flow, flow, get_run_logger, task
from prefect_dask.task_runners import DaskTaskRunner

from pipeline.artifact.manifest import resolve_model_dir
from pipeline.core.errors import PipelineError, exit_on_user_error
from pipeline.runtime import Scorer, partitions


@lru_cache(maxsize=4)
def _scorer(model_dir: str) -> Scorer:
    """One Scorer per worker process and model, loaded (and checked) on first use."""
    return Scorer.load(model_dir)


@dataclass(frozen=True)
class ScoredPartition:
    """One partition's scores file, the worker process that wrote it, and its entities left out."""

    part: str
    worker: str  # host:pid
    failed_entities: dict[str, str]
    rows: int


@task
def plan(source: str, model_dir: str, rows_per_partition: int) -> list[partitions.Partition]:
    return partitions.plan_partitions(source, _scorer(model_dir), rows_per_partition)


@task(retries=2, retry_delay_seconds=2)
def score_partition(model_dir: str, partition: partitions.Partition, parts_dir: str) -> ScoredPartition:
    part, report = partitions.score_partition(_scorer(model_dir), partition, parts_dir)
    return ScoredPartition(part, f"{socket.gethostname()}:{os.getpid()}", report.failed, report.rows)


@task
def combine(parts: list[str], output: str) -> str:
    return str(partitions.combine_parts(parts, output))


# A local cluster listens on loopback only, its dashboard too (Dask's default is every interface).
LOCAL_CLUSTER = {"threads_per_worker": 1, "processes": True, "host": "127.0.0.1", "dashboard_address": "127.0.0.1:8787"}


# prefect-dask types its runner for its own futures, Prefect for PrefectFuture: the same protocol.
@flow(name="vad-score-partitions", task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 2, **LOCAL_CLUSTER}))  # type: ignore[arg-type]
def score_partitions_flow(
    source: str, output: str, model: str = "exported/demo-tabular", rows_per_partition: int = 262_144
) -> str:
    """Plan the partitions, score each on the cluster, combine them in order."""
    model_dir = str(resolve_model_dir(model))
    planned = plan(source, model_dir, rows_per_partition)
    get_run_logger().info("%d partition(s) of %s", len(planned), source)
    with tempfile.TemporaryDirectory(prefix=".parts-", dir=Path(output).parent) as parts_dir:
        scored = [f.result() for f in score_partition.map(model_dir, planned, parts_dir)]
        get_run_logger().info("scored on %d worker process(es)", len({s.worker for s in scored}))
        failed = dict(sorted(e for s in scored for e in s.failed_entities.items()))
        for entity, why in failed.items():
            get_run_logger().warning("entity %s not scored: %s", entity, why)
        if failed and not sum(s.rows for s in scored):  # every entity failed: the input itself is wrong
            raise PipelineError(f"no entity of '{source}' could be scored; the first: {next(iter(failed.values()))}")
        return combine([s.part for s in scored], output)


def with_cluster(address: Optional[str], workers: int) -> Flow[..., Any]:
    """The flow on an existing Dask scheduler (by address), or on a local cluster of `workers` processes."""
    runner = (
        DaskTaskRunner(address=address)
        if address
        else DaskTaskRunner(cluster_kwargs={"n_workers": workers, **LOCAL_CLUSTER})
    )
    return score_partitions_flow.with_options(task_runner=runner)  # type: ignore[arg-type]


def main(
    source: str = typer.Argument(..., help="File, folder or glob to score."),
    output: str = typer.Option(..., help="Parquet file for the scores."),
    model: str = typer.Option("exported/demo-tabular", help="Model folder (its latest version) or a version folder."),
    rows_per_partition: int = typer.Option(262_144, help="Rows per partition (Parquet row groups are kept whole)."),
    address: Optional[str] = typer.Option(None, help="Address of an existing Dask scheduler; default: a local cluster."),
    workers: int = typer.Option(2, help="Worker processes of the local cluster."),
) -> None:
    """Score a large input on a Dask cluster."""
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    print(with_cluster(address, workers)(source=source, output=output, model=model, rows_per_partition=rows_per_partition))


if __name__ == "__main__":
    # Run from the module imported by its name: tasks are pickled by reference, and a worker of
    # an existing cluster can import `flows.score_partitions`, never this process's `__main__`
    # (the README's `--address` command failed so: "Can't get attribute '_scorer' on <module
    # '__main__'>"; a local cluster's workers re-import `__main__` and hid it).
    from flows import score_partitions

    exit_on_user_error(lambda: typer.run(score_partitions.main))
