"""Alarms of a stream delivered as batches to the scheduled flow (issue 32): the hold-off after an
alarm carries from batch to batch through the ledger, so an episode that runs on into the next
batch alarms and pages once; a run killed mid-batch and run again gives byte-identical scores."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from prefect_helpers import DATA, drop_into
from test_crash_recovery import output_bytes, run_scoring

from pipeline.ops.inbox import open_ledger

pytestmark = pytest.mark.slow
BATCH_ROWS, FAULT = 300, (560, 640)  # the fault runs from the second batch into the third


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """1,200 five-minute steps of one press in four batches, a stuck-high pressure sensor across
    the second batch's end."""
    folder = tmp_path_factory.mktemp("stream")
    history = pl.read_parquet(DATA / "sensors" / "history.parquet").drop("label", "anomaly_kind")
    press = history.filter(pl.col("machine") == history["machine"][0]).slice(1600, 4 * BATCH_ROWS).with_row_index()
    faulty = press.with_columns(
        pressure=pl.when(pl.col("index").is_between(*FAULT))
        .then(pl.col("pressure").max() * 1.5)
        .otherwise(pl.col("pressure"))
    ).drop("index")
    paths = []
    for i in range(4):
        paths.append(folder / f"stream-{i}.parquet")
        faulty.slice(i * BATCH_ROWS, BATCH_ROWS).write_parquet(paths[-1])
    return paths


def deliver_and_score(
    env: dict[str, str], stream: list[Path], folder: Path, model: Path, crash_at: str | None = None
) -> Path:
    """The first two batches arrive and are scored; then the other two, in a run killed at
    `crash_at` (on the third batch) and run again."""
    inbox, outbox = folder / "inbox", folder / "outbox"
    for path in stream[:2]:
        drop_into(inbox, path)
    first = run_scoring(env, inbox, outbox, model, "prefect-event")
    assert first.returncode == 0, first.stderr[-3000:]
    for path in stream[2:]:
        drop_into(inbox, path)
    if crash_at:
        crashed = run_scoring(env, inbox, outbox, model, "prefect-event", crash_at=crash_at)
        assert crashed.returncode == -9, crashed.stderr[-3000:]
    second = run_scoring(env, inbox, outbox, model, "prefect-event")
    assert second.returncode == 0, second.stderr[-3000:]
    return outbox


def stream_scores(outbox: Path) -> pl.DataFrame:
    files = sorted((outbox / "scores").rglob("*.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files]).sort("timestamp")


def test_an_episode_across_batches_alarms_once_and_a_killed_run_alarms_the_same(
    prefect_server: dict[str, str], stream: list[Path], sensor_model: Path, tmp_path: Path
) -> None:
    clean = deliver_and_score(prefect_server, stream, tmp_path / "clean", sensor_model)
    scores = stream_scores(clean).with_row_index("step")
    episode = scores.filter(pl.col("step").is_between(*FAULT))
    third = episode.filter(pl.col("step") >= 2 * BATCH_ROWS)
    assert third["is_anomaly"].sum() > 10  # the fault is still flagged in the third batch ...
    assert episode["alarm"].sum() == 1 and not third["alarm"].any()  # ... but it alarmed once, in the second

    ledger = open_ledger(clean)
    paged = {Path(a["payload"]["batch"]["file"]).name for a in ledger.alerts()}
    assert "stream-1.parquet" in paged and "stream-2.parquet" not in paged  # one page for the episode

    resumed = deliver_and_score(prefect_server, stream, tmp_path / "killed", sensor_model, crash_at="write")
    assert output_bytes(resumed) == output_bytes(clean)  # byte-identical scores, alarms included
    assert [a["alert_id"] for a in open_ledger(resumed).alerts()] == [a["alert_id"] for a in ledger.alerts()]
