"""A scoring-only machine: `pip install .` into a fresh venv installs neither torch nor onnx
nor scikit-learn, and there `vad score`, `Scorer.load(...).score(...)` and the scoring flow's
module work and give this checkout's scores; training says which extra it needs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from common import ROOT

from pipeline.runtime import Scorer

pytestmark = pytest.mark.slow
BATCH = ROOT / "data" / "tabular" / "batch.csv"

SCORE_IN_PYTHON = """
import sys
import polars as pl
from pipeline.runtime import Scorer
Scorer.load(sys.argv[1]).score(pl.read_csv(sys.argv[2])).write_parquet(sys.argv[3])
"""


@pytest.fixture(scope="module")
def scoring_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip install .` of a copy of the project (a build writes build/ and *.egg-info beside
    the sources: never into the checkout under test)."""
    base = tmp_path_factory.mktemp("scoring")
    source = base / "source"
    for part in ("pipeline", "flows"):
        shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, source / part)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(source)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    return venv


def run(venv: Path, *args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args],
        cwd=venv.parent,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(venv.parent)},
    )


def test_the_scoring_install_has_no_training_packages(scoring_venv: Path) -> None:
    for package in ("torch", "onnx", "sklearn"):
        result = run(scoring_venv, scoring_venv / "bin" / "python", "-c", f"import {package}")
        assert result.returncode != 0 and f"No module named '{package}'" in result.stderr


def test_vad_score_and_the_python_api_score_as_this_checkout_does(scoring_venv: Path, tabular_model: Path) -> None:
    expected = Scorer.load(tabular_model).score(pl.read_csv(BATCH))["score"].to_numpy()
    out = scoring_venv.parent / "cli.parquet"
    cli = run(scoring_venv, scoring_venv / "bin" / "vad", "score", tabular_model, BATCH, "--output", out)
    assert cli.returncode == 0, cli.stderr
    np.testing.assert_allclose(pl.read_parquet(out)["score"].to_numpy(), expected, rtol=1e-6)
    api = scoring_venv.parent / "api.parquet"
    result = run(scoring_venv, scoring_venv / "bin" / "python", "-c", SCORE_IN_PYTHON, tabular_model, BATCH, api)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(pl.read_parquet(api)["score"].to_numpy(), expected, rtol=1e-6)


def test_the_scoring_flow_loads_and_training_names_its_extra(scoring_venv: Path) -> None:
    flow = run(scoring_venv, scoring_venv / "bin" / "python", "-c", "import flows.score, flows.score_partitions")
    assert flow.returncode == 0, flow.stderr
    train = run(
        scoring_venv,
        scoring_venv / "bin" / "vad",
        "train",
        ROOT / "data" / "tabular" / "history.csv",
        "--config",
        ROOT / "data" / "tabular.toml",
        "--out",
        scoring_venv.parent / "models",
    )
    assert train.returncode == 2
    assert "pip install 'vae-pipeline[train]'" in train.stderr and "Traceback" not in train.stderr


def test_N21_the_detector_in_a_scoring_install_names_the_extra_it_needs(scoring_venv: Path) -> None:
    """`from pipeline.training.detector import VAEDetector` in a scoring-only venv said only
    `No module named 'sklearn'`."""
    result = run(scoring_venv, scoring_venv / "bin" / "python", "-c", "from pipeline.training.detector import VAEDetector")
    assert result.returncode == 1 and "pip install 'vae-pipeline[train]'" in result.stderr.splitlines()[-1]
