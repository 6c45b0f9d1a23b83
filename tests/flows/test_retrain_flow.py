"""The retraining flow on a real Prefect server: after the fleet's pressure gauges were
recalibrated (+1.5 SD), a challenger trained on the recent data is rejected under rules it
cannot meet, with the failing rule in the decision, and promoted under the defaults; `latest`
follows only the promotion, and `vad versions` prints the lineage and both decisions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import polars as pl
import pytest
from common import MESSY_FLAGS, messy_sensor_history
from prefect_helpers import DATA, ROOT

from pipeline.artifact.manifest import read_manifest
from pipeline.core.config import load_config
from pipeline.training.fit import fit_model

pytestmark = pytest.mark.slow


def retrain(env: dict[str, str], recent: Path, model: Path, config: Path | None) -> subprocess.CompletedProcess:
    given = ["--config", str(config)] if config else []
    return subprocess.run(
        [sys.executable, "-m", "flows.retrain", str(recent), "--model", str(model), *given, "--epochs", "3"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_challenger_is_promoted_only_when_it_passes(prefect_server: dict[str, str], tmp_path: Path) -> None:
    config = load_config(DATA / "sensors.toml", train={"epochs": 3, "progress": False})
    fit_model(DATA / "sensors" / "history.parquet", config, tmp_path)
    model = tmp_path / "demo-sensors"
    history = pl.read_parquet(DATA / "sensors" / "history.parquet")
    recent = history.with_columns(
        pl.col("pressure") + 1.5 * history["pressure"].std(), pl.col("timestamp") + pl.duration(days=14)
    )
    recent.write_parquet(tmp_path / "recent.parquet")
    strict = tmp_path / "strict.toml"
    strict.write_text((DATA / "sensors.toml").read_text() + "\n[promotion]\nmin_rank_agreement = 0.99\n")

    rejected = retrain(prefect_server, tmp_path / "recent.parquet", model, strict)
    assert rejected.returncode == 0, rejected.stderr[-3000:]
    assert "challenger v2: rejected" in rejected.stdout and "FAIL: rank agreement" in rejected.stdout
    assert (model / "latest").read_text().strip() == "1"

    promoted = retrain(prefect_server, tmp_path / "recent.parquet", model, DATA / "sensors.toml")
    assert promoted.returncode == 0, promoted.stderr[-3000:]
    assert "challenger v3: promoted" in promoted.stdout
    assert (model / "latest").read_text().strip() == "3"
    lineage = read_manifest(model / "3").lineage
    assert lineage["parent_version"] == "1" and lineage["data"]["source"].endswith("recent.parquet")
    assert (
        0 < lineage["data"]["left_out_flagged"] <= 0.1 * (lineage["data"]["rows"] + lineage["data"]["left_out_flagged"]) + 1
    )

    listed = subprocess.run(
        [str(Path(sys.executable).with_name("vad")), "versions", str(model), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    versions = {v["version"]: v for v in json.loads(listed.stdout)["versions"]}
    assert [versions[v]["parent"] for v in "123"] == [None, "1", "1"]
    assert versions["2"]["decision"]["decision"] == "rejected" and versions["3"]["decision"]["decision"] == "promoted"
    assert versions["3"]["latest"] and not versions["2"]["latest"]
    table = subprocess.run(
        [str(Path(sys.executable).with_name("vad")), "versions", str(model)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "3 *" in table.stdout and "FAIL: rank agreement" in table.stdout
    response = httpx.post(
        f"{prefect_server['PREFECT_API_URL']}/artifacts/filter",
        json={"artifacts": {"key": {"any_": ["vad-retraining"]}}},
        timeout=30,
    )
    reports = [a["data"] for a in response.json()]
    assert any("Challenger v3 against champion v1: promoted" in r for r in reports)
    assert any("Challenger v2 against champion v1: rejected" in r and "| FAIL |" in r for r in reports)


def test_a_champion_trained_with_data_policies_is_retrained_with_them_and_no_toml(
    prefect_server: dict[str, str], tmp_path: Path
) -> None:
    """Newcomer N8: the retrain flow ignored the champion's `duplicates` and `missing` (it
    refused the repeated times, then a missing value in a temporary file) and needed a TOML
    repeating the `vad train` flags. Trained by flags alone, the champion is retrained with
    none: the challenger's manifest carries the same policies, and every other option."""
    history = messy_sensor_history(tmp_path / "data")
    recent = messy_sensor_history(tmp_path / "data", days_later=30, name="recent.csv")
    trained = subprocess.run(
        [str(Path(sys.executable).with_name("vad")), "train", str(history), *MESSY_FLAGS, "--epochs", "3"]
        + ["--out", str(tmp_path / "models"), "--name", "plant", "--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    model = tmp_path / "models" / "plant"

    retrained = retrain(prefect_server, recent, model, None)
    assert retrained.returncode == 0, retrained.stderr[-3000:]
    assert "challenger v2:" in retrained.stdout
    champion, challenger = read_manifest(model / "1"), read_manifest(model / "2")
    assert challenger.training["data"]["duplicates"] == "last" and challenger.training["data"]["missing"] == "impute"
    for section in ("data", "model", "threshold", "promotion"):
        assert challenger.training[section] == champion.training[section], section
    assert challenger.training["train"]["epochs"] == 3 and challenger.lineage["parent_version"] == "1"
