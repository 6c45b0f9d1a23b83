"""A scoring-only machine: `pip install .` into a fresh venv is the scoring runtime and the CLI on
CPU onnxruntime, under 400 MB, with no torch, onnx, scikit-learn, Prefect, Dask, matplotlib,
pyarrow or onnxruntime-gpu (newcomer review, point 6: it was 1.3 GB). There `vad score` and
`Scorer.load(...).score(...)` give this checkout's scores, on CSV and Arrow files; training, the
flows and the report's plots each say which extra they need, and write nothing."""

from __future__ import annotations

import json
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
SIZE_LIMIT = 400 * 2**20  # the bar; polars, onnxruntime and numpy alone are about 300 MB
LEFT_OUT = ("torch", "onnx", "sklearn", "scipy", "prefect", "dask", "matplotlib", "pyarrow")

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


def disk_usage(folder: Path) -> int:
    """Bytes on disk, as `du` counts them."""
    return sum(path.lstat().st_blocks * 512 for path in folder.rglob("*"))


def test_the_scoring_install_is_small_and_has_none_of_the_extras(scoring_venv: Path) -> None:
    size = disk_usage(scoring_venv)
    assert size < SIZE_LIMIT, f"the scoring install takes {size / 2**20:.0f} MB"
    for package in LEFT_OUT:
        result = run(scoring_venv, scoring_venv / "bin" / "python", "-c", f"import {package}")
        assert result.returncode != 0 and f"No module named '{package}'" in result.stderr
    builds = run(scoring_venv, scoring_venv / "bin" / "vad", "runtime", "--json")
    assert builds.returncode == 0, builds.stderr
    facts = json.loads(builds.stdout)
    assert facts["active"] == "onnxruntime" and list(facts["installed"]) == ["onnxruntime"]
    assert facts["usable"] == ["CPUExecutionProvider"]


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
    arrow = scoring_venv.parent / "batch.arrow"  # read without pyarrow: its header by flatbuffers, its rows by polars
    pl.read_csv(BATCH).write_ipc(arrow)
    cli = run(scoring_venv, scoring_venv / "bin" / "vad", "score", tabular_model, arrow, "--output", out)
    assert cli.returncode == 0, cli.stderr
    np.testing.assert_allclose(pl.read_parquet(out)["score"].to_numpy(), expected, rtol=1e-6)


def test_the_flows_and_the_report_name_their_extra_and_write_nothing(scoring_venv: Path, tabular_model: Path) -> None:
    flow = run(scoring_venv, scoring_venv / "bin" / "python", "-m", "flows.score", "--help")
    assert flow.returncode == 1 and "pip install 'vae-pipeline[flows]'" in flow.stderr.splitlines()[-1]
    inbox = scoring_venv.parent / "inbox"
    inbox.mkdir()
    serve = run(scoring_venv, scoring_venv / "bin" / "vad", "serve", tabular_model, inbox)
    assert serve.returncode == 2 and "pip install 'vae-pipeline[flows]'" in serve.stderr
    out = scoring_venv.parent / "reported.parquet"
    report = run(scoring_venv, scoring_venv / "bin" / "vad", "score", tabular_model, BATCH, "--output", out, "--report")
    assert report.returncode == 2 and "pip install 'vae-pipeline[report]'" in report.stderr
    assert "Traceback" not in serve.stderr + report.stderr and not out.exists()


def test_training_names_its_extra(scoring_venv: Path) -> None:
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
