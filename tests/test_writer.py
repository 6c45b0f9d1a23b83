"""The scores writer (issue 37): polars' streaming sink fed chunk by chunk (every output format:
tests/test_own_data.py), files that read together, a real full disk; and the ordered map that
scores two chunks of a table at once."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from common import DATA, small_tmpfs
from polars.testing import assert_frame_equal

from pipeline.core.atomic import atomic_output
from pipeline.core.errors import DataError
from pipeline.runtime import Scorer, score_files, write_scores
from pipeline.runtime.prefetch import in_order

TABLE = DATA / "tabular" / "batch.csv"


def test_in_order_keeps_the_order_holds_at_most_its_workers_and_raises_in_order() -> None:
    running, most = 0, 0
    lock = threading.Lock()

    def slow(item: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02 if item % 3 == 0 else 0.001)  # later items finish first
        with lock:
            running -= 1
        if item == 7:
            raise DataError("chunk 7 is damaged")
        return item * 10

    got = []
    with pytest.raises(DataError, match="chunk 7"):
        for value in in_order(slow, iter(range(20)), workers=2):
            got.append(value)
    assert got == [0, 10, 20, 30, 40, 50, 60] and most == 2
    assert list(in_order(slow, iter(range(5)), workers=1)) == [0, 10, 20, 30, 40]


def test_scores_files_of_two_batches_and_two_models_are_read_together(
    tabular_model: Path, sensor_model: Path, tmp_path: Path
) -> None:
    """Text columns are written as categories shared by every file: an Enum per file (its own
    name, its model's inputs) made `pl.scan_parquet("scores/**")` fail with "Enum mismatch"."""
    scorer = Scorer.load(tabular_model)
    half = pl.read_csv(TABLE).head(400)
    half.write_csv(tmp_path / "first.csv")
    pl.read_csv(TABLE).tail(300).write_csv(tmp_path / "second.csv")
    for name in ("first", "second"):
        score_files(scorer, tmp_path / f"{name}.csv", tmp_path / "scores" / f"{name}.parquet")
    score_files(Scorer.load(sensor_model), DATA / "sensors" / "batch.parquet", tmp_path / "scores" / "sensors.parquet")
    together = (
        pl.scan_parquet(tmp_path / "scores" / "*.parquet", missing_columns="insert", extra_columns="ignore")
        .select("source_file", "top1_feature", "score")
        .collect()
    )
    counts = together.group_by(pl.col("source_file").cast(pl.String)).len()
    assert dict(counts.iter_rows()) == {"first.csv": 400, "second.csv": 300, "batch.parquet": 4608}
    alone = pl.read_parquet(tmp_path / "scores" / "first.parquet")
    assert_frame_equal(
        alone,
        scorer.score(half)
        .with_columns(
            pl.lit("first.csv", dtype=pl.Categorical).alias("source_file"),
            pl.lit(scorer.manifest.key, dtype=pl.Categorical).alias("model_version"),
        )
        .select(alone.columns),
        check_exact=False,
        rel_tol=1e-6,
    )


def test_an_error_of_the_stream_reaches_the_caller_as_it_was(tmp_path: Path) -> None:
    def broken():
        yield pl.DataFrame({"score": [1.0, 2.0]})
        raise DataError("file 'b.csv' changed while it was being read")

    with pytest.raises(DataError, match="changed while"):
        write_scores(broken(), tmp_path / "scores.parquet", ".parquet")
    assert write_scores(iter([]), tmp_path / "none.parquet", ".parquet") == 0
    assert not (tmp_path / "none.parquet").exists()


def test_a_stream_that_fails_leaves_no_temporary_behind(tmp_path: Path) -> None:
    """Given a path, polars could create it after the stream's error had reached the caller,
    so the temporary `atomic_output` had removed came back (6 of 40 tries, each with 0.2 s
    to appear; under load a full-disk test of the flow found one)."""

    def failing() -> Iterator[pl.DataFrame]:
        yield pl.DataFrame({"a": np.arange(100_000), "b": np.ones(100_000)})
        raise OSError(errno.ENOSPC, "no space left on device")

    for attempt in range(20):
        with pytest.raises(OSError), atomic_output(tmp_path / f"{attempt}.parquet") as temporary:
            write_scores(failing(), temporary, ".parquet")
    time.sleep(0.2)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def tiny_output_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "tiny", "256k") as mount:
        yield mount


def test_a_real_full_disk_under_the_writer_is_enospc_and_leaves_nothing(
    tabular_model: Path, tiny_output_disk: Path, tmp_path: Path
) -> None:
    """polars reports the disk's error as a ComputeError naming "os error 28"; the writer gives
    it back as OSError(ENOSPC), which the flow retries as transient and the CLI shows on one line."""
    rows = pl.concat([pl.read_csv(TABLE)] * 20)
    rows.write_parquet(tmp_path / "rows.parquet")
    with pytest.raises(OSError) as raised:
        score_files(Scorer.load(tabular_model), tmp_path / "rows.parquet", tiny_output_disk / "scores.parquet")
    assert raised.value.errno == errno.ENOSPC
    assert list(tiny_output_disk.iterdir()) == []
