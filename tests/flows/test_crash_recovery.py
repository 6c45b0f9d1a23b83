"""A scoring run killed at each fail point (SIGKILL, no clean-up), then run again, leaves the
same output files as a run that never crashed, scores every batch once and raises one alert.
Also: with no PREFECT_API_URL the flow starts Prefect's embedded server itself; a bad batch
fails alone; a sink that is down keeps the scores and is retried."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from prefect_helpers import ROOT, WebhookReceiver, drop_into, free_port, save_webhook_block, score_command

from pipeline.core.faults import CRASH_ENV, FAIL_POINTS, FULL_ENV
from pipeline.ops.inbox import DIED_BEFORE, open_ledger
from pipeline.ops.ledger import MAX_ATTEMPTS

pytestmark = pytest.mark.slow
SCORING_POINTS = [p for p in FAIL_POINTS if p != "export"]


def run_scoring(
    env: dict[str, str],
    inbox: Path,
    outbox: Path,
    model: Path,
    sink: str | list[str],
    crash_at: str | None = None,
    *options: str,
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in env.items() if k != CRASH_ENV} | ({CRASH_ENV: crash_at} if crash_at else {})
    sinks = [sink] if isinstance(sink, str) else sink
    return subprocess.run(
        score_command(inbox, outbox, model, sinks, *options),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def output_bytes(outbox: Path) -> dict[str, bytes]:
    """Every file under scores/, hidden temporaries included: a leftover would show here."""
    return {str(p.relative_to(outbox)): p.read_bytes() for p in sorted((outbox / "scores").rglob("*")) if p.is_file()}


def alert_ids(webhook) -> list[str]:
    return [
        line.removeprefix("alert id: ")
        for post in webhook.received
        for line in post["body"].splitlines()
        if line.startswith("alert id: ")
    ]


@pytest.fixture(scope="module")
def two_batches(inbox_batches: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    inbox = tmp_path_factory.mktemp("crash-inbox")
    drop_into(inbox, inbox_batches["faulty"])  # first in data time: every fail point is reached on it
    drop_into(inbox, inbox_batches["normal"])
    return inbox


@pytest.fixture(scope="module")
def clean_outputs(
    prefect_server: dict[str, str], two_batches: Path, sensor_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, bytes]:
    outbox = tmp_path_factory.mktemp("clean")
    result = run_scoring(prefect_server, two_batches, outbox, sensor_model, "prefect-event")
    assert result.returncode == 0, result.stderr[-3000:]
    return output_bytes(outbox)


@pytest.mark.parametrize("point", SCORING_POINTS)
def test_killed_run_resumes_with_same_outputs_and_one_alert(
    prefect_server: dict[str, str],
    webhook,
    two_batches: Path,
    clean_outputs: dict[str, bytes],
    sensor_model: Path,
    tmp_path: Path,
    point: str,
) -> None:
    sink = save_webhook_block(prefect_server, webhook.url, f"vad-crash-{point}")
    outbox = tmp_path / "resumed"
    crashed = run_scoring(prefect_server, two_batches, outbox, sensor_model, sink, crash_at=point)
    assert crashed.returncode == -9, crashed.stderr[-3000:]  # killed at the point, on the first batch
    ledger = open_ledger(outbox)
    assert [b["status"] for b in ledger.batches()] == ["running"]
    reached_sink = SCORING_POINTS.index(point) >= SCORING_POINTS.index("sent")
    assert len(webhook.received) == (1 if reached_sink else 0)

    resumed = run_scoring(prefect_server, two_batches, outbox, sensor_model, sink)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert output_bytes(outbox) == clean_outputs  # byte-identical, and no temporary left behind
    batches = ledger.batches()
    # The killed batch was taken again first (it comes first in data time and died once), on its second claim.
    assert {Path(b["file"]).name: (b["status"], b["claims"]) for b in batches} == {
        "faulty.parquet": ("done", 2),
        "normal.parquet": ("done", 1),
    }
    assert len(ledger.alerts()) == 1
    # One alert. Killed between a sink's acceptance and the ledger's record ("sent"), the
    # re-run sends it again with the same alert id (at-least-once; the id lets a receiver
    # drop it); at every other point the sink hears of it exactly once.
    assert len(set(alert_ids(webhook))) == 1
    assert len(webhook.received) == (2 if point == "sent" else 1)


def test_embedded_server_starts_without_an_api_url(
    inbox_batches: dict[str, Path], sensor_model: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    # A new home migrates its database first: on a busy 2-core CI machine that once outran
    # Prefect's 20 s wait for the temporary server.
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
    )
    drop_into(tmp_path / "inbox", inbox_batches["normal"])
    result = run_scoring(env, tmp_path / "inbox", tmp_path / "out", sensor_model, "prefect-event")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting temporary server" in result.stdout + result.stderr
    assert [b["status"] for b in open_ledger(tmp_path / "out").batches()] == ["done"]


def test_a_bad_batch_fails_alone_and_is_not_retried(
    prefect_server: dict[str, str], inbox_batches: dict[str, Path], sensor_model: Path, tmp_path: Path
) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "out"
    drop_into(inbox, inbox_batches["normal"])
    (inbox / "broken.parquet").write_bytes(b"PAR1 not really parquet")
    first = run_scoring(prefect_server, inbox, outbox, sensor_model, "prefect-event")
    assert first.returncode != 0  # the run shows as failed ...
    status = {Path(b["file"]).name: (b["status"], b["summary"]) for b in open_ledger(outbox).batches()}
    assert status["normal.parquet"][0] == "done"  # ... but the good batch was scored
    assert status["broken.parquet"][0] == "failed" and "broken.parquet" in status["broken.parquet"][1]
    again = run_scoring(prefect_server, inbox, outbox, sensor_model, "prefect-event")
    assert again.returncode == 0  # same bytes fail the same way: not retried without --force


def test_n38_a_batch_that_kills_every_run_is_set_aside_and_the_others_are_scored(
    prefect_server: dict[str, str], two_batches: Path, sensor_model: Path, tmp_path: Path
) -> None:
    """N38: a batch whose process is killed each time it is scored (the out-of-memory killer)
    was taken over by every run with no limit, and, first in order, the batches after it were
    never scored. Now, once it has died DIED_BEFORE times, runs take it last (it gives up its
    place in the stream), and after MAX_ATTEMPTS deaths it is set aside with the reason until
    `vad release`."""
    outbox, poison = tmp_path / "outbox", "read@faulty.parquet"
    ledger = open_ledger(outbox)
    status = lambda: {Path(b["file"]).name: (b["status"], b["claims"]) for b in ledger.batches()}  # noqa: E731
    for run in range(1, MAX_ATTEMPTS + 1):
        killed = run_scoring(prefect_server, two_batches, outbox, sensor_model, "prefect-event", crash_at=poison)
        assert killed.returncode == -9, killed.stderr[-3000:]
        assert status()["faulty.parquet"] == ("running", run)
        if run > DIED_BEFORE:  # then the good batch is scored before the one that killed the runs
            assert status()["normal.parquet"] == ("done", 1)
    set_aside = run_scoring(prefect_server, two_batches, outbox, sensor_model, "prefect-event", crash_at=poison)
    assert set_aside.returncode != 0  # shown once, as this run's failure ...
    said = set_aside.stdout + set_aside.stderr
    assert f"died {MAX_ATTEMPTS} times" in said and "vad release faulty.parquet" in said
    assert status() == {"faulty.parquet": ("failed", MAX_ATTEMPTS), "normal.parquet": ("done", 1)}
    quiet = run_scoring(prefect_server, two_batches, outbox, sensor_model, "prefect-event", crash_at=poison)
    assert quiet.returncode == 0, quiet.stderr[-3000:]  # ... then skipped: it no longer fails every run

    released = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "release", "faulty.parquet", "--outbox", str(outbox)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert released.returncode == 0, released.stderr
    healed = run_scoring(prefect_server, two_batches, outbox, sensor_model, "prefect-event")  # more memory now
    assert healed.returncode == 0, healed.stderr[-3000:]
    assert status() == {"faulty.parquet": ("done", 1), "normal.parquet": ("done", 1)}


def test_a_failing_sink_keeps_the_scores_and_the_next_run_delivers(
    prefect_server: dict[str, str], webhook, inbox_batches: dict[str, Path], sensor_model: Path, tmp_path: Path
) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "out"
    drop_into(inbox, inbox_batches["faulty"])
    dead_url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    sink = save_webhook_block(prefect_server, dead_url, "vad-flaky")
    down = run_scoring(prefect_server, inbox, outbox, sensor_model, sink)
    assert down.returncode == 0, down.stderr[-3000:]  # delivery failure is logged, not fatal
    assert "sink(s) failed" in down.stdout + down.stderr
    ledger = open_ledger(outbox)
    assert [b["status"] for b in ledger.batches()] == ["done"] and len(ledger.alerts()) == 1
    assert ledger.undelivered([sink]) and not webhook.received
    paused = run_scoring(prefect_server, inbox, outbox, sensor_model, sink)  # within its pause: not tried
    assert paused.returncode == 0 and "is paused after 1 failure(s)" in paused.stdout + paused.stderr
    assert "sink(s) failed" not in paused.stdout + paused.stderr
    still_down = run_scoring(prefect_server, inbox, outbox, sensor_model, sink, None, "--sink-pause", "0")
    assert still_down.returncode == 0 and "sink(s) failed" in still_down.stdout + still_down.stderr

    save_webhook_block(prefect_server, webhook.url, "vad-flaky")  # the receiver is back
    up = run_scoring(prefect_server, inbox, outbox, sensor_model, sink, None, "--sink-pause", "0")
    assert up.returncode == 0, up.stderr[-3000:]
    assert len(webhook.received) == 1 and not ledger.undelivered([sink])


def test_n33_n36_a_failing_sink_is_tried_once_per_run_and_a_new_sink_starts_from_now(
    prefect_server: dict[str, str], webhook, inbox_batches: dict[str, Path], sensor_model: Path, tmp_path: Path
) -> None:
    """N36: a sink that failed every call was retried with backoff for each pending alert, all
    before any batch was scored (22 alerts: 362 s instead of 41 s). N33: a sink added later was
    sent every alert ever recorded. Now a failing sink is paused after its first delivery (and
    one retry), for this run and the next minute's runs; old deliveries come after the
    batches, and a new sink starts from now (`--backfill` for the past)."""
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    # A fault, then normal running: 600 rows, so each month's fault starts past the last one's
    # hold-off (rows of the machine's stream, as the stream counts them, not days).
    faulty = pl.concat([pl.read_parquet(inbox_batches["faulty"]), pl.read_parquet(inbox_batches["normal"])])
    for month in range(3):  # three faults, a month apart: three alerts, no cooldown between them
        moved = faulty.with_columns(pl.col("timestamp") + pl.duration(days=30 * month))
        drop_into(inbox, write(moved, tmp_path / f"fault-{month}.parquet"))
    failing = WebhookReceiver(status=500)
    try:
        down = save_webhook_block(prefect_server, failing.url, "vad-down")
        first = run_scoring(prefect_server, inbox, outbox, sensor_model, down)
        assert first.returncode == 0, first.stderr[-3000:]
        ledger = open_ledger(outbox)
        assert len(ledger.alerts()) == 3 and [b["status"] for b in ledger.batches()] == ["done"] * 3
        tries = len(failing.received)
        assert 1 <= tries <= 2, tries  # one delivery and its one retry, not one per alert
        assert "paused (failure 1 in a row)" in first.stdout + first.stderr

        live = save_webhook_block(prefect_server, webhook.url, "vad-oncall")  # an operator adds on-call
        drop_into(
            inbox,
            write(faulty.with_columns(pl.col("timestamp") + pl.duration(days=120)), tmp_path / "fault-3.parquet"),
        )
        second = run_scoring(prefect_server, inbox, outbox, sensor_model, [down, live])
        assert second.returncode == 0, second.stderr[-3000:]
        assert len(webhook.received) == 1  # the new batch's alert only, not the three before it
        assert len(failing.received) == tries  # still paused (a minute): not tried at all
        assert len(ledger.undelivered([down])) == 4 and ledger.undelivered([live]) == []
    finally:
        failing.close()
    archive = WebhookReceiver()
    try:
        backfilled = save_webhook_block(prefect_server, archive.url, "vad-archive")
        third = run_scoring(prefect_server, inbox, outbox, sensor_model, backfilled, None, "--backfill")
        assert third.returncode == 0, third.stderr[-3000:]
        assert len(archive.received) == 4  # asked for the past: every recorded alert
    finally:
        archive.close()


def write(frame: pl.DataFrame, path: Path) -> Path:
    frame.write_parquet(path)
    return path


def test_a_full_outbox_fails_the_run_and_the_next_run_scores_the_batch_once(
    prefect_server: dict[str, str], inbox_batches: dict[str, Path], sensor_model: Path, tmp_path: Path
) -> None:
    """The disk fills while the scores are written (ENOSPC, injected): nothing half-written is
    left, the batch is not set aside as bad data, and the next run, with room again and no
    --force, scores it once."""
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    drop_into(inbox, inbox_batches["normal"])
    full = run_scoring(prefect_server | {FULL_ENV: "write"}, inbox, outbox, sensor_model, "prefect-event")
    assert full.returncode != 0 and "No space left on device" in full.stderr + full.stdout
    ledger = open_ledger(outbox)
    assert [(b["status"], b["claims"]) for b in ledger.batches()] == [("retry", 1)]
    assert [p for p in outbox.rglob("*") if p.is_file() and not p.name.startswith("ledger.sqlite")] == []

    room = run_scoring(prefect_server, inbox, outbox, sensor_model, "prefect-event")
    assert room.returncode == 0, room.stderr[-3000:]
    assert [(b["status"], b["claims"]) for b in ledger.batches()] == [("done", 2)]
    assert [p.suffix for p in (outbox / "scores").rglob("*") if p.is_file()] == [".parquet"]


def test_the_readme_command_runs_on_a_fresh_clone_without_an_inbox(
    prefect_server: dict[str, str], sensor_model: Path, tmp_path: Path
) -> None:
    """`python -m flows.score --inbox data/inbox` once failed as written (no such folder), after
    three retries with tracebacks: the command creates the folder and scores nothing; the flow
    called with a folder that is not there refuses it in one line, without retries."""
    result = run_scoring(prefect_server, tmp_path / "data" / "inbox", tmp_path / "out", sensor_model, "prefect-event")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "data" / "inbox").is_dir() and json.loads(result.stdout.splitlines()[-1])["scored"] == []
    assert "did not exist: created it" in result.stderr  # N6: said, not silent
    missing = subprocess.run(
        [
            sys.executable,
            "-c",
            "from flows.score import score_flow; from pipeline.core.errors import exit_on_user_error; "
            f"exit_on_user_error(lambda: score_flow(inbox_path='{tmp_path / 'nowhere'}', outbox='{tmp_path / 'o2'}', "
            f"model='{sensor_model}'))",
        ],
        env=prefect_server,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 2 and "\nerror: the inbox" in missing.stderr and "create the folder" in missing.stderr
    assert "find_batches" not in missing.stderr + missing.stdout  # refused before the (retried) task ran
