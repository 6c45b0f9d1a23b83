"""The third reliability round (issue 33, ../shared/reviews/reliability.md): each finding fixed so
far, by its id, with what the product now does."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from common import small_tmpfs
from typer.testing import CliRunner

from pipeline.artifact.manifest import RETRAIN_PREFIX, LatestMoved, new_staging, set_latest
from pipeline.artifact.versions import DECISIONS, read_decisions, record_decision
from pipeline.cli import app
from pipeline.core.config import AlertRules, load_config
from pipeline.core.errors import PipelineError
from pipeline.core.faults import is_transient
from pipeline.ops.ledger import Ledger
from pipeline.runtime import Scorer


@pytest.mark.parametrize(
    ("rules", "fragment"),
    [
        ({"min_anomalous": 20, "within": 10}, "cannot exceed within"),
        ({"high_at": 5.0, "critical_at": 1.0}, "cannot exceed critical_at"),
        ({"cooldown_minutes": float("inf")}, "finite number"),
    ],
)
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


def test_n18_a_torn_decision_line_is_skipped_and_not_copied_on(versions: Path, caplog: pytest.LogCaptureFixture) -> None:
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


def test_n19_an_empty_version_folder_does_not_hide_the_others(versions: Path, caplog: pytest.LogCaptureFixture) -> None:
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


def _claimed(ledger_dir: Path, **options: float) -> Ledger:
    ledger = Ledger(ledger_dir / "ledger.sqlite", **options)
    assert ledger.claim("b1", "m/1", "b1.parquet").granted
    return ledger


def _record_big_alert(ledger: Ledger) -> None:
    ledger.record_alert("a1", "b1", "m/1", {"rows": ["x" * 1000] * 200}, "m", {"machine-1": "2026-12-02T00:00:00"})


def _retried_after(ledger: Ledger, error: BaseException) -> None:
    """The flow's own decision on a batch that failed with `error`: the machine's fault, so the
    batch is left for the next run, which takes it again without --force."""
    assert is_transient(error), f"{type(error).__name__}: {error}"
    assert ledger.release("b1", "m/1", str(error)) == "retry"
    assert ledger.claim("b1", "m/1", "b1.parquet").reason == "retry"


def test_n37_a_ledger_lock_held_at_the_alert_step_is_retried_not_set_aside(tmp_path: Path) -> None:
    """N37: SQLite raises OperationalError ("database is locked"), never OSError; it was judged
    the batch's own fault, so the batch was set aside until --force and its alert never raised."""
    ledger = _claimed(tmp_path, busy_seconds=0.2)
    holder = sqlite3.connect(ledger.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another run (or a backup) holds the ledger past the busy timeout
    with pytest.raises(sqlite3.OperationalError, match="locked") as raised:
        _record_big_alert(ledger)
    holder.execute("ROLLBACK")
    holder.close()
    _retried_after(ledger, raised.value)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 512 KiB filesystem (tmpfs), which the test fills; the lock half of N37 runs everywhere."""
    with small_tmpfs(tmp_path / "tiny", "512k") as mount:
        yield mount


def test_n37_a_ledger_disk_that_fills_at_the_alert_step_is_retried_not_set_aside(tiny_disk: Path) -> None:
    """N37 with a real full filesystem: "database or disk is full" from SQLite itself, where the
    older test injected an OSError(ENOSPC) that SQLite never raises."""
    ledger = _claimed(tiny_disk)
    filler = tiny_disk / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(tiny_disk).free - 4096))  # a neighbour fills the disk
    with pytest.raises(sqlite3.OperationalError, match="full|disk I/O") as raised:
        _record_big_alert(ledger)
    filler.unlink()
    _retried_after(ledger, raised.value)
    _record_big_alert(ledger)  # room again: the alert is recorded
    assert [alert["alert_id"] for alert in ledger.alerts()] == ["a1"]


def test_n15_n21_a_refitted_threshold_goes_live_only_when_asked_and_only_over_what_it_started_from(versions: Path) -> None:
    """N15: `vad threshold` made its version `latest` at once (fitted on a batch with faults, it
    hid 1,040 anomalies). N21: a change decided against one version overwrote the `latest` an
    operator set meanwhile. Now the refit is published but not live until --activate or
    `vad promote`, and every move of `latest` is a compare-and-swap."""
    history = str(Path(__file__).parent.parent / "data" / "sensors" / "history.parquet")
    runner = CliRunner()
    refit = runner.invoke(app, ["threshold", str(versions), history, "--target", "0.999", "--json"])
    assert refit.exit_code == 0, refit.output
    assert json.loads(refit.output)["latest"] is False and (versions / "latest").read_text().strip() == "2"
    assert (versions / "3" / "manifest.json").is_file()

    with pytest.raises(LatestMoved, match="moved from version 1 to 2"):
        set_latest(versions, "3", expected="1")  # decided against v1; the operator moved to v2 meanwhile
    assert (versions / "latest").read_text().strip() == "2"
    stale = runner.invoke(app, ["promote", str(versions), "3", "--expected", "1"])
    assert isinstance(stale.exception, LatestMoved) and "moved from version 1 to 2" in str(stale.exception)
    promoted = runner.invoke(app, ["promote", str(versions), "3", "--expected", "2"])
    assert promoted.exit_code == 0, promoted.output
    assert (versions / "latest").read_text().strip() == "3" and read_decisions(versions)["3"].promoted

    live = runner.invoke(app, ["threshold", str(versions), history, "--target", "0.999", "--activate", "--json"])
    assert live.exit_code == 0, live.output
    assert json.loads(live.output)["latest"] is True and (versions / "latest").read_text().strip() == "4"


def test_n13_a_persistence_longer_than_the_data_is_refused(versions: Path) -> None:
    """N13: `--persistence 1000000/1000000` wrote a version that could never flag anything."""
    history = str(Path(__file__).parent.parent / "data" / "sensors" / "history.parquet")
    refused = CliRunner().invoke(app, ["threshold", str(versions), history, "--persistence", "1000000/1000000"])
    assert isinstance(refused.exception, PipelineError) and "could never flag" in str(refused.exception)
    assert sorted(p.name for p in versions.iterdir() if p.name.isdigit()) == ["1", "2"]


def test_n20_n21_a_challenger_lands_beside_its_champion_and_never_overwrites_a_newer_latest(
    sensor_model: Path, tmp_path: Path
) -> None:
    """N20: a model folder renamed from its model's name (`prod-sensors/` holding `demo-sensors`)
    got its challenger exported into another folder, and `latest` pointed at the champion's own
    number, logged as promoted. N21: a `latest` moved by an operator during training was
    overwritten. Now the challenger is the champion folder's next version, and it is promoted
    only over the champion it was compared with."""
    from pipeline.training import promotion

    root = tmp_path / "prod-sensors"
    shutil.copytree(sensor_model, root / "1")
    (root / "latest").write_text("1\n")
    champion = Scorer.load(root)
    data = Path(__file__).parent.parent / "data"
    config = load_config(data / "sensors.toml", train={"epochs": 2, "progress": False})
    split = promotion.split_recent(data / "sensors" / "history.parquet", champion, config.promotion, tmp_path / "split")
    challenger = promotion.train_challenger(split, config, champion, data / "sensors" / "history.parquet")
    assert challenger == root / "2" and not (tmp_path / champion.manifest.name).exists()

    shutil.copytree(root / "1", root / "3")  # meanwhile an operator publishes v3 and makes it latest
    (root / "latest").write_text("3\n")
    passing = promotion.Comparison(
        rows=100, champion_false_alarms=0.01, challenger_false_alarms=0.01, challenger_score_psi=0.0, rank_agreement=1.0
    )
    decision = promotion.settle(champion, challenger, passing, config.promotion)
    assert not decision.promoted and "moved from version 1 to 3" in decision.reasons[-1]
    assert (root / "latest").read_text().strip() == "3"
