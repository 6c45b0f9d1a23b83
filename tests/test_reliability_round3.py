"""The third reliability round (issue 33, ../shared/reviews/reliability.md): each finding fixed so
far, by its id, with what the product now does."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.artifact.manifest import RETRAIN_PREFIX, new_staging
from pipeline.artifact.versions import DECISIONS, read_decisions, record_decision
from pipeline.cli import app
from pipeline.core.config import AlertRules, load_config
from pipeline.core.errors import PipelineError
from pipeline.runtime import Scorer


@pytest.mark.parametrize(("rules", "fragment"), [({"min_anomalous": 20, "within": 10}, "cannot exceed within"),
                                                 ({"high_at": 5.0, "critical_at": 1.0}, "cannot exceed critical_at"),
                                                 ({"cooldown_minutes": float("inf")}, "finite number")])
def test_n12_alert_rules_that_can_never_fire_are_refused_when_given(rules: dict, fragment: str) -> None:
    """20 of 10 rows was accepted, and a batch of 1,040 anomalous rows raised no alert."""
    with pytest.raises(ValueError, match=fragment):
        AlertRules(**rules)
    assert AlertRules(min_anomalous=10, within=10).min_anomalous == 10  # the edge still fires


@pytest.fixture
def versions(sensor_model: Path, tmp_path: Path) -> Path:
    """A model folder with two versions (copies of one) and `latest` on the second."""
    root = tmp_path / "demo"
    for version in ("1", "2"):
        shutil.copytree(sensor_model, root / version)
        manifest = json.loads((root / version / "manifest.json").read_text())
        (root / version / "manifest.json").write_text(json.dumps({**manifest, "version": version}))
    (root / "latest").write_text("2")
    return root


def test_n18_a_torn_decision_line_is_skipped_and_not_copied_on(versions: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """A torn last line made `vad versions` a JSONDecodeError traceback, and every later
    decision copied it on, so the listing stayed broken."""
    record_decision(versions, "1", True, ["first"], {})
    with (versions / DECISIONS).open("a") as log:
        log.write('{"version": "2", "decis')  # a writer killed mid-line
    with caplog.at_level(logging.WARNING):
        assert list(read_decisions(versions)) == ["1"]
    assert "line 2 is not a decision" in caplog.text
    record_decision(versions, "2", False, ["second"], {})
    assert [json.loads(line)["version"] for line in (versions / DECISIONS).read_text().splitlines()] == ["1", "2"]
    listed = CliRunner().invoke(app, ["versions", str(versions), "--json"])
    assert listed.exit_code == 0, listed.output
    assert [v["version"] for v in json.loads(listed.output)["versions"]] == ["1", "2"]


def test_n19_an_empty_version_folder_does_not_hide_the_others(versions: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A half-deleted folder `9` made `vad versions` an error listing no version at all."""
    (versions / "9").mkdir()
    with caplog.at_level(logging.WARNING):
        listed = CliRunner().invoke(app, ["versions", str(versions), "--json"])
    assert listed.exit_code == 0, listed.output
    assert [v["version"] for v in json.loads(listed.output.splitlines()[-1])["versions"]] == ["1", "2"]
    assert "demo/9' has no manifest.json: not a version" in caplog.text


def test_n07_a_zero_resample_is_refused_in_config_and_manifest_alike(versions: Path) -> None:
    """Edited into a manifest, it loaded and then panicked in polars (a BaseException past every
    handler) when a batch was scored; the config refused it already."""
    with pytest.raises(PipelineError, match="resample must be a positive duration"):
        load_config(None, data={"mode": "sensor", "time_column": "t", "resample": "PT0S"})
    manifest = json.loads((versions / "2" / "manifest.json").read_text())
    manifest["feature_schema"]["resample"] = "PT0S"
    (versions / "2" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PipelineError, match="resample.*must be a positive duration"):
        Scorer.load(versions / "2")


def test_n22_a_killed_retrain_leaves_no_copy_of_the_recent_data(versions: Path) -> None:
    """A retraining killed after splitting the recent data left `.retrain-*/` with copies of it
    in the model folder for ever; its folder now carries the pid, and the next export removes it
    once that process is gone (a live one's is kept)."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = versions / f"{RETRAIN_PREFIX}{int(dead.stdout)}-x1"
    alive = versions / f"{RETRAIN_PREFIX}{os.getpid()}-x2"
    for folder in (killed, alive):
        folder.mkdir()
        (folder / "holdout.parquet").write_bytes(b"recent rows")
    shutil.rmtree(new_staging(versions))  # what the next export of this model does first
    assert not killed.exists() and alive.exists()
