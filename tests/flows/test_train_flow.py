"""The training flow on a real Prefect server: a new version is published and its report
(loss curves, validation histogram with the threshold) is an artifact in Prefect's API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prefect_helpers import DATA, ROOT

from pipeline.artifact.manifest import read_manifest

pytestmark = pytest.mark.slow


def test_train_flow_publishes_a_version_and_its_report(prefect_server: dict[str, str], tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.train",
            str(DATA / "sensors" / "history.parquet"),
            "--config",
            str(DATA / "sensors.toml"),
            "--output-root",
            str(tmp_path),
            "--epochs",
            "3",
            "--name",
            "flow-test",
        ],
        env=prefect_server,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(tmp_path / "flow-test" / "1")
    assert (tmp_path / "flow-test" / "latest").read_text().strip() == "1"
    response = httpx.post(
        f"{prefect_server['PREFECT_API_URL']}/artifacts/filter",
        json={"artifacts": {"key": {"any_": ["vad-training-report"]}}},
        timeout=30,
    )
    reports = [a["data"] for a in response.json()]
    report = next(r for r in reports if manifest.key in r)
    assert report.count("data:image/png;base64,") == 2  # loss curves and validation histogram
    assert f"{manifest.threshold.value:.6g}" in report
