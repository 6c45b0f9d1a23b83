"""Sensor fleets: files scored a group of whole entities at a time, and entities that fail alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from common import ROOT, fleet
from polars.testing import assert_frame_equal

from pipeline.core.errors import DataError
from pipeline.core.faults import CRASH_ENV
from pipeline.runtime import Scorer, score_files


def test_a_fleet_split_by_entity_scores_as_the_whole_file_and_as_each_entity_alone(
    sensor_model: Path, tmp_path: Path
) -> None:
    """Past a few chunks' rows a fleet file is split by entity and scored a group at a time:
    the same rows, in the same order, with the same scores as the file read whole, and each
    entity's scores are those of its rows scored alone. The split files are removed."""
    data = fleet()
    data.write_parquet(tmp_path / "fleet.parquet", row_group_size=1000)
    scorer = Scorer.load(sensor_model)
    whole = score_files(scorer, tmp_path / "fleet.parquet", tmp_path / "out" / "whole.parquet")
    grouped = score_files(scorer, tmp_path / "fleet.parquet", tmp_path / "out" / "grouped.parquet", chunk_rows=2500)
    assert grouped.rows == whole.rows == data.height
    a, b = pl.read_parquet(whole.output), pl.read_parquet(grouped.output)
    assert_frame_equal(a, b)
    assert b["machine"].n_unique() == 12 and b["machine"].is_sorted()
    for machine in ("press-01-0", "press-03-2"):
        alone = scorer.score(data.filter(pl.col("machine") == machine))
        assert_frame_equal(
            b.filter(pl.col("machine") == machine).drop("source_file", "model_version"), alone, check_dtypes=False
        )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["grouped.parquet", "whole.parquet"]


@pytest.mark.parametrize("chunk_rows", [None, 2500, 1000], ids=["whole", "grouped", "one-per-group"])
def test_an_entity_with_bad_time_data_fails_alone(sensor_model: Path, tmp_path: Path, chunk_rows: int | None) -> None:
    """One machine repeats an hour (a clock change), another lost a reading, the last one (in
    sorted order) a timestamp: all three are left out and named with the row in the file,
    however the file is cut; the others are scored as they would be alone."""
    data = fleet().with_row_index("n")
    repeat = data.filter(pl.col("machine") == "press-02-1").slice(10, 1)
    lost = data.filter(pl.col("machine") == "press-04-0")["n"][5]
    no_time = data.filter(pl.col("machine") == "press-04-2")["n"][7]
    broken = pl.concat([data, repeat]).with_columns(
        pl.when(pl.col("n") == lost).then(None).otherwise(pl.col("vibration")).alias("vibration"),
        pl.when(pl.col("n") == no_time).then(None).otherwise(pl.col("timestamp")).alias("timestamp"),
    )
    broken.drop("n").write_parquet(tmp_path / "fleet.parquet")
    row_of = {n: i + 1 for i, n in enumerate(broken["n"].to_list()) if n in (lost, no_time)}
    scorer = Scorer.load(sensor_model)
    report = score_files(scorer, tmp_path / "fleet.parquet", tmp_path / "scores.parquet", chunk_rows=chunk_rows)
    assert set(report.inputs.failed) == {"press-02-1", "press-04-0", "press-04-2"}
    assert "appears twice" in report.inputs.failed["press-02-1"]
    assert f"column 'vibration', row {row_of[lost]}" in report.inputs.failed["press-04-0"]
    assert f"column 'timestamp', row {row_of[no_time]}" in report.inputs.failed["press-04-2"]
    assert "3 entities not scored" in report.inputs.summary()
    scored = pl.read_parquet(tmp_path / "scores.parquet")
    assert scored["machine"].n_unique() == 9 and report.rows == scored.height
    alone = scorer.score(data.drop("n").filter(pl.col("machine") == "press-03-1"))
    assert_frame_equal(
        scored.filter(pl.col("machine") == "press-03-1").drop("source_file", "model_version"), alone, check_dtypes=False
    )


@pytest.mark.parametrize("chunk_rows", [None, 1000], ids=["whole", "one-per-group"])
def test_a_batch_where_every_entity_fails_is_refused_with_the_first_error(
    sensor_model: Path, tmp_path: Path, chunk_rows: int | None
) -> None:
    data = fleet(copies=1).with_columns(pl.lit(None, pl.Float64).alias("pressure"))
    data.write_parquet(tmp_path / "fleet.parquet")
    with pytest.raises(DataError, match="column 'pressure' has a missing value"):
        score_files(
            Scorer.load(sensor_model), tmp_path / "fleet.parquet", tmp_path / "scores.parquet", chunk_rows=chunk_rows
        )
    assert not (tmp_path / "scores.parquet").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["fleet.parquet"]  # no split files left behind


def test_n24_a_killed_fleet_run_leaves_no_copy_of_its_batch_behind(sensor_model: Path, tmp_path: Path) -> None:
    """N24: each killed run of a fleet file left its split copy (`.vad-entities-*/`, the whole
    batch again) beside the output for ever; the next run now removes the dead runs' copies."""
    fleet().write_parquet(tmp_path / "fleet.parquet", row_group_size=1000)
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "score",
        str(sensor_model),
        str(tmp_path / "fleet.parquet"),
        "--chunk-rows",
        "1000",
        "--output",
        str(out / "scores.parquet"),
    ]
    for point in ("read", "score", "write"):
        killed = subprocess.run(
            command, env=os.environ | {CRASH_ENV: point}, cwd=ROOT, capture_output=True, timeout=300, check=False
        )
        assert killed.returncode == -9, killed.stderr[-2000:]
        assert len(list(out.glob(".vad-entities-*"))) == 1  # its own copy; the run before's is gone
    scored = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=300, check=False)
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["scores.parquet"]


def test_n27_a_fleet_file_redelivered_between_its_count_and_its_split_is_one_clear_error(
    sensor_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """N27: a file re-delivered with one more machine after its entities were counted raised
    polars' `incomplete mapping specified for replace_strict`: a traceback on the command line,
    polars' wording in the ledger. The re-delivery happens for real, right after the count."""
    from pipeline.runtime import entities

    data = fleet()
    data.write_parquet(tmp_path / "fleet.parquet", row_group_size=1000)
    count = entities.plan_groups

    def count_then_redeliver(*args, **kwargs):
        groups = count(*args, **kwargs)
        extra = data.filter(pl.col("machine") == "press-01-0").with_columns(machine=pl.lit("press-99-9"))
        pl.concat([data, extra]).write_parquet(tmp_path / "incoming.parquet", row_group_size=1000)
        (tmp_path / "incoming.parquet").replace(tmp_path / "fleet.parquet")
        return groups

    monkeypatch.setattr(entities, "plan_groups", count_then_redeliver)
    with pytest.raises(DataError, match="changed while it was being read"):
        score_files(Scorer.load(sensor_model), tmp_path / "fleet.parquet", tmp_path / "out.parquet", chunk_rows=1000)
    assert not (tmp_path / "out.parquet").exists()
