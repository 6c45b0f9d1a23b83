"""The bundled data and the demo path: deterministic generator, and the trained models find
the labelled faults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sklearn.metrics import roc_auc_score

from pipeline.core.config import load_config
from pipeline.runtime import Scorer, score_files
from pipeline.training.fit import fit_model

pytestmark = pytest.mark.slow
DATA = Path(__file__).resolve().parents[2] / "data"


def test_generator_reproduces_the_bundled_files(tmp_path: Path) -> None:
    script = tmp_path / "generate.py"
    script.write_text((DATA / "generate.py").read_text())
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True)
    # Values, not bytes: numpy's sin may differ by an ulp between CPUs (SIMD kernels), which can move
    # a value rounded to 4 places by one step; labels, keys and times must match exactly.
    for relative in ["sensors/history.parquet", "sensors/batch.parquet", "tabular/history.csv", "tabular/batch.csv"]:
        read = pl.read_parquet if relative.endswith(".parquet") else pl.read_csv
        assert_frame_equal(read(tmp_path / relative), read(DATA / relative), check_exact=False, rel_tol=0, abs_tol=2e-4)
    assert sum(p.stat().st_size for p in DATA.glob("*/*.*")) < 5 * 1024 * 1024


@pytest.mark.parametrize(
    ("name", "history", "batch", "keys", "minimum"),
    [
        ("sensors", "sensors/history.parquet", "sensors/batch.parquet", ["machine", "timestamp"], 0.75),
        ("tabular", "tabular/history.csv", "tabular/batch.csv", ["batch_id"], 0.80),
    ],
)
def test_default_demo_models_find_labelled_faults(
    tmp_path: Path, name: str, history: str, batch: str, keys: list[str], minimum: float
) -> None:
    config = load_config(DATA / f"{name}.toml", train={"progress": False})
    outcome = fit_model(DATA / history, config, tmp_path / "exported")
    report = score_files(Scorer.load(outcome.version_dir), DATA / batch, tmp_path / "scores.parquet")
    reader = pl.read_parquet if batch.endswith(".parquet") else pl.read_csv
    joined = pl.read_parquet(report.output).join(reader(DATA / batch).select(*keys, "label"), on=keys)
    assert joined.height == report.rows
    assert roc_auc_score(joined["label"], joined["score"]) >= minimum
