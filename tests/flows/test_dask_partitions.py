"""A large input scored as partitions on a real local Dask cluster (two worker processes,
through prefect-dask) gives exactly the file a single-process `score_files` writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from common import fleet
from prefect_helpers import DATA, ROOT

from pipeline.runtime import Scorer, score_files
from pipeline.runtime.partitions import plan_partitions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def large_batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60,000 tabular rows in 12 row groups of 5,000 (rows varied so that no two are alike)."""
    batch = pl.read_csv(DATA / "tabular" / "batch.csv")
    rows = (
        pl.concat([batch] * 60)
        .with_row_index("n")
        .with_columns(batch_id=pl.col("n").cast(pl.Int64), temperature=pl.col("temperature") + (pl.col("n") % 97) * 0.1)
        .drop("n")
    )
    path = tmp_path_factory.mktemp("large") / "large.parquet"
    rows.write_parquet(path, row_group_size=5_000)
    return path


def test_partitions_follow_row_groups(large_batch: Path, tabular_model: Path) -> None:
    planned = plan_partitions(large_batch, Scorer.load(tabular_model), rows_per_partition=12_000)
    assert [(p.first_row, p.rows) for p in planned] == [(0, 15_000), (15_000, 15_000), (30_000, 15_000), (45_000, 15_000)]


def test_dask_cluster_scores_like_one_process(
    prefect_server: dict[str, str], large_batch: Path, tabular_model: Path, tmp_path: Path
) -> None:
    single = score_files(Scorer.load(tabular_model), large_batch, tmp_path / "single.parquet").output
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.score_partitions",
            str(large_batch),
            "--output",
            str(tmp_path / "dask.parquet"),
            "--model",
            str(tabular_model),
            "--rows-per-partition",
            "10000",
            "--workers",
            "2",
        ],
        env={**prefect_server, "PREFECT_LOGGING_LEVEL": "INFO"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "6 partition(s)" in result.stdout + result.stderr
    assert "scored on 2 worker process(es)" in result.stdout + result.stderr  # both workers took partitions
    on_dask, alone = pl.read_parquet(tmp_path / "dask.parquet"), pl.read_parquet(single)
    assert on_dask.columns == alone.columns and on_dask.height == alone.height == 60_000
    derived = ["score", "percentile"]
    assert on_dask.drop(derived).equals(alone.drop(derived))  # keys, flags, top features, in order
    np.testing.assert_allclose(on_dask["score"].to_numpy(), alone["score"].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(on_dask["percentile"].to_numpy(), alone["percentile"].to_numpy(), atol=1e-3)
    assert not list(tmp_path.glob(".parts-*"))  # the partition parts were cleaned up


def test_a_fleet_is_partitioned_by_entity_and_scored_on_dask_like_one_process(
    prefect_server: dict[str, str], sensor_model: Path, tmp_path: Path
) -> None:
    """Windows need each machine's series whole: a fleet file is cut into groups of whole
    machines, and the cluster's file equals the single-process one, row for row; a machine
    whose rows cannot be scored (a repeated time) is left out and named in the log."""
    data = fleet()
    repeat = data.filter(pl.col("machine") == "press-02-2").head(1)
    pl.concat([data, repeat]).write_parquet(tmp_path / "fleet.parquet")
    planned = plan_partitions(tmp_path / "fleet.parquet", Scorer.load(sensor_model), rows_per_partition=2500)
    assert [len(p.entities or []) for p in planned] == [2] * 6
    assert [e for p in planned for e in p.entities or []] == sorted(data["machine"].unique())
    single = score_files(Scorer.load(sensor_model), tmp_path / "fleet.parquet", tmp_path / "single.parquet")
    assert list(single.inputs.failed) == ["press-02-2"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.score_partitions",
            str(tmp_path / "fleet.parquet"),
            "--output",
            str(tmp_path / "dask.parquet"),
            "--model",
            str(sensor_model),
            "--rows-per-partition",
            "2500",
            "--workers",
            "2",
        ],
        env={**prefect_server, "PREFECT_LOGGING_LEVEL": "INFO"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "6 partition(s)" in result.stdout + result.stderr
    assert "entity press-02-2 not scored: time" in result.stdout + result.stderr
    on_dask, alone = pl.read_parquet(tmp_path / "dask.parquet"), pl.read_parquet(single.output)
    assert on_dask.height == alone.height == data.height - 1152
    assert on_dask.equals(alone)


def test_local_cluster_listens_on_loopback_only() -> None:
    """Dask's default binds the scheduler's dashboard to every interface (0.0.0.0:8787)."""
    from distributed import LocalCluster

    from flows.score_partitions import LOCAL_CLUSTER

    with LocalCluster(n_workers=1, **{**LOCAL_CLUSTER, "dashboard_address": "127.0.0.1:0"}) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert cluster.dashboard_link.startswith("http://127.0.0.1:")
        assert all(worker.startswith("tcp://127.0.0.1:") for worker in cluster.scheduler_info["workers"])
    assert LOCAL_CLUSTER["host"] == "127.0.0.1" and LOCAL_CLUSTER["dashboard_address"].startswith("127.0.0.1:")


def test_n32_partitions_scored_by_two_model_versions_are_never_combined(
    large_batch: Path, tabular_model: Path, tmp_path: Path
) -> None:
    """N32: a version folder replaced while the workers loaded it gave one output from two
    models (median scores alternating 17.9 / 21.5 by partition) with nothing naming the model.
    Every row now carries `model_version`, and parts from two versions are not combined."""
    import json
    import shutil

    from pipeline.core.errors import PipelineError
    from pipeline.runtime.partitions import combine_parts, score_partition

    replaced = tmp_path / "replaced"
    shutil.copytree(tabular_model, replaced)
    manifest = json.loads((replaced / "manifest.json").read_text())
    (replaced / "manifest.json").write_text(json.dumps({**manifest, "version": "3"}))
    first, second = plan_partitions(large_batch, Scorer.load(tabular_model), rows_per_partition=12_000)[:2]
    parts = [
        score_partition(Scorer.load(tabular_model), first, tmp_path)[0],
        score_partition(Scorer.load(replaced), second, tmp_path)[0],
    ]
    assert pl.read_parquet(parts[0])["model_version"].unique().to_list() == [Scorer.load(tabular_model).manifest.key]
    with pytest.raises(PipelineError, match="scored by 2 model versions"):
        combine_parts(parts, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()
    assert combine_parts(parts[:1], tmp_path / "out.parquet").is_file()


def test_n29_n30_a_file_redelivered_after_planning_is_refused_not_mixed(
    large_batch: Path, tabular_model: Path, tmp_path: Path
) -> None:
    """N29: a file re-delivered (new values) after partition 0 was scored was combined with it:
    7 anomalies from the old rows, 750 from the new, no error. N30: re-delivered without one
    machine, its rows were dropped without a word. Each partition now checks the file against
    the plan (size, times, inode) before and after it reads."""
    from pipeline.core.errors import DataError
    from pipeline.runtime.partitions import score_partition

    batch = tmp_path / "batch.parquet"
    batch.write_bytes(large_batch.read_bytes())
    scorer = Scorer.load(tabular_model)
    first, second = plan_partitions(batch, scorer, rows_per_partition=12_000)[:2]
    score_partition(scorer, first, tmp_path)
    redelivered = pl.read_parquet(batch).with_columns(pl.col("temperature") + 500)
    redelivered.write_parquet(tmp_path / "incoming.parquet", row_group_size=5_000)
    (tmp_path / "incoming.parquet").replace(batch)  # delivered by rename, as the inbox asks
    with pytest.raises(DataError, match="changed after its partitions were planned"):
        score_partition(scorer, second, tmp_path)
