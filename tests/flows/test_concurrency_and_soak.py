"""Many batches, many runs: two scoring flows started at once on the same inbox never score a
batch twice, and 50 batches through the scheduled deployment are each scored exactly once.
(Prefect's start-up staggers the two flows by seconds, so whether their claims overlap here
depends on timing; tests/test_concurrent_claims.py makes four processes race for certain.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import polars as pl
import pytest
from prefect_helpers import DATA, ROOT, drop_into, score_command, served_deployment, wait_until
from test_scheduled_scoring import alert_events

from pipeline.ops.inbox import open_ledger

pytestmark = pytest.mark.slow


def cut_batches(folder: Path, count: int, rows: int = 120) -> list[Path]:
    """`count` distinct batches from the four machines' histories; every 10th with a
    stuck-high pressure sensor, so some of them alert."""
    history = pl.read_parquet(DATA / "sensors" / "history.parquet").drop("label", "anomaly_kind")
    machines = history.partition_by("machine", maintain_order=True)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        batch = machines[i % len(machines)].slice(1000 + (i // len(machines)) * rows, rows)
        assert batch.height == rows
        if i % 10 == 3:
            batch = (
                batch.with_row_index()
                .with_columns(
                    pressure=pl.when(pl.col("index") >= 40)
                    .then(pl.col("pressure").max() * 1.5)
                    .otherwise(pl.col("pressure"))
                )
                .drop("index")
            )
        paths.append(folder / f"batch-{i:03d}.parquet")
        batch.write_parquet(paths[-1])
    return paths


def assert_each_scored_once(outbox: Path, names: list[str]) -> None:
    batches = open_ledger(outbox).batches()
    assert sorted(Path(b["file"]).name for b in batches) == sorted(names)
    assert {b["status"] for b in batches} == {"done"}
    assert {b["claims"] for b in batches} == {1}  # nobody ever took a batch over or re-scored it
    outputs = sorted((outbox / "scores").rglob("*.parquet"))
    assert len(outputs) == len(names)
    assert sum(pl.read_parquet(p).height for p in outputs) == sum(json_rows(b) for b in batches)


def json_rows(batch: dict) -> int:
    return json.loads(batch["summary"])["rows"]


def test_two_runs_started_at_once_never_score_a_batch_twice(
    prefect_server: dict[str, str], sensor_model: Path, tmp_path: Path
) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    names = [p.name for p in cut_batches(inbox, 40)]  # more work than a run's start-up: they overlap
    runs = [
        subprocess.Popen(
            score_command(inbox, outbox, sensor_model, ["prefect-event"]),
            env=prefect_server,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    logs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], "\n".join(log[-2000:] for log in logs)
    assert_each_scored_once(outbox, names)
    assert_one_alert_per_alerting_batch(outbox, must_alert=["batch-003.parquet", "batch-023.parquet"])


def assert_one_alert_per_alerting_batch(outbox: Path, must_alert: list[str]) -> list[str]:
    """At most one alert of each kind per batch (a sensor stuck for most of a batch also moves
    its median: a drift alert beside the anomaly alert); the anomaly alerts' ids."""
    alerts = [a["payload"] for a in open_ledger(outbox).alerts()]
    assert len({(a["batch"]["sha256"], a["kind"]) for a in alerts}) == len(alerts)
    anomalies = [a for a in alerts if a["kind"] == "anomaly"]
    assert set(must_alert) <= {a["batch"]["file"] for a in anomalies}
    return [a["alert_id"] for a in anomalies]


def test_fifty_batches_through_the_scheduled_deployment_none_lost_none_doubled(
    prefect_server: dict[str, str], sensor_model: Path, tmp_path: Path
) -> None:
    batches = cut_batches(tmp_path / "staged", 50)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    with served_deployment(prefect_server, inbox, outbox, sensor_model, ["prefect-event"], 2, "test-soak"):
        ledger = open_ledger(outbox)
        for start in range(0, 50, 10):  # in waves, so batches arrive while runs are under way
            for batch in batches[start : start + 10]:
                drop_into(inbox, batch)
            wait_until(
                lambda n=start + 10: sum(b["status"] == "done" for b in ledger.batches()) >= n // 2,
                240,
                f"{start // 2 + 5} batches scored",
            )
        wait_until(lambda: sum(b["status"] == "done" for b in ledger.batches()) == 50, 300, "all 50 batches scored")
    assert_each_scored_once(outbox, [p.name for p in batches])
    faulty = [f"batch-{i:03d}.parquet" for i in range(50) if i % 10 == 3]
    alert_ids = assert_one_alert_per_alerting_batch(outbox, must_alert=faulty)
    wait_until(lambda: set(alert_ids) <= alert_events(prefect_server), 60, "every alert event in Prefect's API")
