"""Paths and settings the test modules share (importable as `common`; a `conftest` import
would be ambiguous, since tests/flows has its own conftest)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
SHARED = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))
FAST_TRAIN = {"epochs": 6, "patience": 3, "progress": False}


def fleet(copies: int = 3) -> pl.DataFrame:
    """The demo batch's 4 machines, each repeated as `copies` machines with other readings,
    rows shuffled (arrival order is not time order)."""
    batch = pl.read_parquet(DATA / "sensors" / "batch.parquet").drop("label", "anomaly_kind")
    parts = [batch.with_columns(pl.col("machine") + f"-{i}", pl.col("load") * (1 + 0.05 * i)) for i in range(copies)]
    return pl.concat(parts).sample(fraction=1.0, shuffle=True, seed=7)


def messy_sensor_history(folder: Path, days_later: int = 0, name: str = "history.csv") -> Path:
    """Two machines of the demo history with 30 readings sent twice (a resend, values moved)
    and a vibration value missing every 97th row: a file that needs both data policies."""
    history = pl.read_parquet(DATA / "sensors" / "history.parquet")
    history = history.with_columns(pl.col("timestamp") + pl.duration(days=days_later))
    history = history.filter(pl.col("machine").is_in(["press-01", "press-02"]))
    resent = history.slice(100, 30).with_columns(pl.col("motor_temp") + 0.01)
    messy = (
        pl.concat([history, resent])
        .with_row_index("i")
        .with_columns(pl.when(pl.col("i") % 97 == 5).then(None).otherwise(pl.col("vibration")).alias("vibration"))
        .drop("i")
    )
    folder.mkdir(parents=True, exist_ok=True)
    messy.write_csv(folder / name)
    return folder / name


MESSY_FLAGS = ["--mode", "sensor", "--time-column", "timestamp", "--entity-column", "machine", "--label-column", "label"]
MESSY_FLAGS += ["--ignore-columns", "anomaly_kind", "--duplicates", "last", "--missing", "impute", "--window", "6"]


@contextmanager
def small_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A real filesystem of `size` (tmpfs, e.g. "512k") mounted at `folder`, for tests that
    fill a disk; skips the test where mounting is not allowed (it needs CAP_SYS_ADMIN)."""
    folder.mkdir(parents=True, exist_ok=True)
    done = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True, check=False
        )
        if shutil.which("mount")
        else None
    )
    if done is None or done.returncode:
        pytest.skip("mounting a small tmpfs needs root (CAP_SYS_ADMIN)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)
