"""Paths and settings the test modules share (importable as `common`; a `conftest` import
would be ambiguous, since tests/flows has its own conftest)."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

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
