"""The scheduled deployment end to end, on a real Prefect server on loopback: two batches
dropped into the inbox are each scored exactly once, the faulty one pages a webhook once,
and the reports are artifacts in Prefect's API."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prefect_helpers import drop_into, save_webhook_block, served_deployment, wait_until

from pipeline.ops.inbox import open_ledger

pytestmark = pytest.mark.slow


def completed_runs(env: dict[str, str]) -> int:
    """Completed flow runs, read through Prefect's REST API."""
    response = httpx.post(
        f"{env['PREFECT_API_URL']}/flow_runs/filter",
        json={"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}},
        timeout=30,
    )
    response.raise_for_status()
    return len(response.json())


def artifact_keys(env: dict[str, str]) -> set[str]:
    response = httpx.post(f"{env['PREFECT_API_URL']}/artifacts/filter", json={}, timeout=30)
    response.raise_for_status()
    return {a["key"] for a in response.json() if a["key"]}


def alert_events(env: dict[str, str]) -> set[str]:
    """Alert ids of the `vad.alert.raised` events the server has stored."""
    response = httpx.post(
        f"{env['PREFECT_API_URL']}/events/filter", json={"filter": {"event": {"name": ["vad.alert.raised"]}}}, timeout=30
    )
    response.raise_for_status()
    return {e["payload"]["alert_id"] for e in response.json()["events"]}


def test_scheduled_deployment_scores_each_batch_once_and_alerts_once(
    prefect_server: dict[str, str], webhook, inbox_batches: dict[str, Path], sensor_model: Path, tmp_path: Path
) -> None:
    env = prefect_server
    sink = save_webhook_block(env, webhook.url, "vad-scheduled-test")
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    with served_deployment(env, inbox, outbox, sensor_model, ["prefect-event", sink], 3, "test-scheduled"):
        drop_into(inbox, inbox_batches["normal"])
        drop_into(inbox, inbox_batches["faulty"])
        ledger = open_ledger(outbox)
        wait_until(
            lambda: sum(b["status"] == "done" for b in ledger.batches()) == 2 and webhook.received,
            240,
            "both batches scored and one alert delivered",
        )
        runs_then = completed_runs(env)
        wait_until(lambda: completed_runs(env) >= runs_then + 2, 120, "two more scheduled runs")

        batches = ledger.batches()
        assert sorted(Path(b["file"]).name for b in batches) == ["faulty.parquet", "normal.parquet"]
        assert all(b["status"] == "done" for b in batches)
        alerts = ledger.alerts()
        assert len(alerts) == 1 and alerts[0]["payload"]["batch"]["file"] == "faulty.parquet"
        assert len(webhook.received) == 1
        assert alerts[0]["alert_id"] in webhook.received[0]["body"]
        assert "pressure" in {f["feature"] for f in alerts[0]["payload"]["top_features"][:2]}
        assert {"vad-scoring-report", "vad-top-anomalies", "vad-alert"} <= artifact_keys(env)
        assert not ledger.undelivered(["prefect-event", sink])
        wait_until(lambda: alerts[0]["alert_id"] in alert_events(env), 60, "the alert event in Prefect's API")
