"""The inbox ledger's claims and the alarm rules, without Prefect."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.artifact.manifest import read_manifest
from pipeline.core.config import AlertRules
from pipeline.core.digest import sha256_file
from pipeline.ops import alerts, delivery
from pipeline.ops.ledger import Ledger, owner_token
from pipeline.ops.records import BatchRef
from pipeline.runtime.steps import EntityState


def test_claims_are_exclusive_until_done_and_forced_rescoring_is_explicit(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    assert ledger.claim("abc", "m/1", "a.csv").reason == "new"
    ledger.complete("abc", "m/1", "out.parquet", {"rows": 3})
    assert not ledger.claim("abc", "m/1", "renamed.csv").granted  # same bytes, another name
    assert ledger.claim("abc", "m/2", "a.csv").granted  # a new model version scores it again
    assert ledger.claim("abc", "m/1", "a.csv", force=True).reason == "forced"
    ledger.fail("abc", "m/1", "bad value")
    assert ledger.claim("abc", "m/1", "a.csv").reason == "failed"


def _hold_claim(ledger: Ledger, identity: str, owner: str) -> None:
    with ledger._transaction() as db:
        db.execute(
            "INSERT INTO batches (identity, model, file, status, owner, claimed_at) "
            "VALUES (?, 'm/1', 'a.csv', 'running', ?, strftime('%s','now'))",
            (identity, owner),
        )


def test_a_live_owner_keeps_its_claim_and_a_dead_one_loses_it(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    host = owner_token().split(":")[0]
    _hold_claim(ledger, "live", f"{host}:{os.getppid()}:other")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _hold_claim(ledger, "dead", f"{host}:{dead.stdout.strip()}:other")
    assert ledger.claim("live", "m/1", "a.csv").reason == "busy"
    assert ledger.claim("dead", "m/1", "a.csv").reason == "taken-over"


def test_alerts_are_recorded_once_with_their_entity_times(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    assert ledger.record_alert("id1", "abc", "m/1", {"alert_id": "id1"}, "m", {"press-01": "2026-01-01T00:00:00"})
    assert not ledger.record_alert("id1", "abc", "m/1", {"alert_id": "id1"}, "m", {"press-01": "2026-02-01T00:00:00"})
    assert ledger.last_alert_times("m") == {"press-01": "2026-01-01T00:00:00"}
    ledger.mark_delivered("id1", "hook")
    assert ledger.undelivered(["hook"]) == [] and ledger.undelivered(["hook", "mail"]) == [{"alert_id": "id1"}]


def test_file_identity_is_the_content_and_is_hashed_again_only_when_the_file_changes(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x\n1\n")
    (tmp_path / "b.csv").write_text("x\n1\n")
    (tmp_path / "c.csv").write_text("x\n2\n")
    assert sha256_file(tmp_path / "a.csv") == sha256_file(tmp_path / "b.csv") != sha256_file(tmp_path / "c.csv")
    ledger = Ledger(tmp_path / "ledger.sqlite")
    first = ledger.identity(tmp_path / "a.csv")
    assert first == sha256_file(tmp_path / "a.csv")
    (tmp_path / "a.csv").write_text("x\n33\n")  # new size: hashed again
    assert ledger.identity(tmp_path / "a.csv") == sha256_file(tmp_path / "a.csv") != first


def scored_frame(threshold: float, flagged: dict[str, list[int]], start: datetime) -> pl.DataFrame:
    """Two machines × 30 five-minute steps; `flagged` steps score 2 × threshold."""
    rows = []
    for machine in ("press-01", "press-02"):
        for step in range(30):
            hot = step in flagged.get(machine, [])
            rows.append(
                {
                    "machine": machine,
                    "timestamp": start + timedelta(minutes=5 * step),
                    "score": threshold * (2.0 if hot else 0.5),
                    "is_anomaly": hot,
                    "top1_feature": "pressure" if hot else "load",
                    "top1_share": 0.9,
                }
            )
    return pl.DataFrame(rows)


@pytest.fixture(scope="module")
def manifest(sensor_model: Path):
    return read_manifest(sensor_model)


def test_alarm_needs_enough_anomalous_steps_close_together(manifest) -> None:
    limit, start = manifest.threshold.value, datetime(2026, 11, 1)
    rules = AlertRules(min_anomalous=3, within=5)
    scattered = scored_frame(limit, {"press-01": [0, 10, 20]}, start)
    assert alerts.evaluate(scattered, manifest, rules, BatchRef(file="b", sha256="x"), last_alerts={})[0] is None
    burst = scored_frame(limit, {"press-02": [11, 12, 14]}, start)
    alert, times = alerts.evaluate(burst, manifest, rules, BatchRef(file="b", sha256="x"), last_alerts={})
    assert [e.entity for e in alert.entities] == ["press-02"]
    assert times == {"press-02": (start + timedelta(minutes=70)).isoformat()}  # the third step of the burst
    assert alert.counts.anomalous_rows == 3 and alert.top_features[0].feature == "pressure"
    assert alert.top_rows[0].model_dump()["machine"] == "press-02" and alert.threshold.value == limit
    assert alert.alert_id == alerts.alert_id(manifest.key, "x")


def test_an_alert_is_built_and_read_through_its_record(manifest, tmp_path: Path) -> None:
    """The threshold counts as overridden only when it differs from the model's (the flow
    passes every batch's own), and a payload that does not fit the record reaches no sink."""
    limit, start = manifest.threshold.value, datetime(2026, 11, 1)
    burst = scored_frame(limit, {"press-02": [11, 12, 14]}, start)
    for given, overridden in [(None, False), (limit, False), (limit * 0.9, True)]:
        alert, _ = alerts.evaluate(
            burst, manifest, AlertRules(), BatchRef(file="b", sha256="x"), last_alerts={}, threshold=given
        )
        assert alert.threshold.overridden is overridden
    subject, body = alerts.summary_text(alert)
    assert subject.startswith(f"[{alert.severity.upper()}] ") and "press-02 (3 rows" in body
    ledger = Ledger(tmp_path / "ledger.sqlite")
    broken = {**alert.model_dump(mode="json"), "severity": "apocalyptic"}
    with pytest.raises(delivery.DeliveryError, match="does not fit .*severity"):
        delivery.deliver(delivery.read_record(broken), [delivery.EVENT_SINK], ledger)
    assert not ledger.delivered(alert.alert_id, delivery.EVENT_SINK)


def test_cooldown_suppresses_an_entity_that_alerted_recently(manifest) -> None:
    limit, start = manifest.threshold.value, datetime(2026, 11, 1)
    burst = scored_frame(limit, {"press-01": [1, 2, 3], "press-02": [1, 2, 3]}, start)
    recent = {"press-01": (start - timedelta(minutes=30)).isoformat()}
    alert, _ = alerts.evaluate(
        burst, manifest, AlertRules(cooldown_minutes=60), BatchRef(file="b", sha256="x"), last_alerts=recent
    )
    assert [e.entity for e in alert.entities] == ["press-02"] and alert.suppressed == ["press-01"]
    all_cooling = {"press-01": recent["press-01"], "press-02": recent["press-01"]}
    assert alerts.evaluate(burst, manifest, AlertRules(), BatchRef(file="b", sha256="x"), last_alerts=all_cooling)[0] is None


def test_severity_grows_with_distance_past_the_threshold() -> None:
    rules = AlertRules(high_at=1.0, critical_at=3.0)
    assert alerts.severity(10.5, 10.0, 9.0, rules)[0] == "warning"
    assert alerts.severity(11.5, 10.0, 9.0, rules) == ("high", 1.5)
    assert alerts.severity(14.0, 10.0, 9.0, rules)[0] == "critical"


def test_webhook_urls_are_cut_to_their_host_in_delivery_errors() -> None:
    """httpx quotes the whole URL in its errors; a webhook's URL is its secret."""
    from pipeline.ops.delivery import redact_urls

    error = (
        "Client error '404 Not Found' for url 'https://hooks.example.com/services/T0/B1/s3cr3t?token=abc123'; "
        "also http://user:pa55@127.0.0.1:9/hook"
    )
    redacted = redact_urls(error)
    for secret in ("s3cr3t", "abc123", "pa55", "user", "services"):
        assert secret not in redacted
    assert "https://hooks.example.com/<redacted>" in redacted and "http://127.0.0.1:9/<redacted>" in redacted


def test_a_clock_that_ran_ahead_does_not_silence_an_entity(manifest) -> None:
    """One batch stamped 2099 once suppressed that machine's alerts until 2099."""
    limit, start = manifest.threshold.value, datetime(2026, 11, 1)
    burst = scored_frame(limit, {"press-01": [1, 2, 3]}, start)
    from_the_future = {"press-01": datetime(2099, 1, 1).isoformat()}
    alert, _ = alerts.evaluate(
        burst, manifest, AlertRules(cooldown_minutes=60), BatchRef(file="b", sha256="x"), last_alerts=from_the_future
    )
    assert alert is not None and [e.entity for e in alert.entities] == ["press-01"]


def test_zoned_and_naive_times_compare_without_a_type_error(manifest) -> None:
    """A batch with zoned timestamps after one without raised TypeError and poisoned every later run."""

    limit = manifest.threshold.value
    zoned = scored_frame(limit, {"press-01": [1, 2, 3]}, datetime(2026, 11, 1, tzinfo=UTC))
    naive_recent = {"press-01": datetime(2026, 10, 31, 23, 50).isoformat()}  # 15 min before the burst
    alert, _ = alerts.evaluate(
        zoned, manifest, AlertRules(cooldown_minutes=60), BatchRef(file="b", sha256="x"), last_alerts=naive_recent
    )
    assert alert is None  # cooling down, compared as UTC


def test_a_rewrite_that_keeps_size_and_mtime_gets_a_new_identity(tmp_path: Path) -> None:
    """`cp -p` and `rsync -t` set the old mtime back; the new data were never scored."""
    import time

    ledger = Ledger(tmp_path / "ledger.sqlite")
    batch = tmp_path / "batch.csv"
    batch.write_text("a,b\n1,2\n")
    first, stat = ledger.identity(batch), batch.stat()
    time.sleep(0.05)  # past the file system's coarse clock, so the change time moves
    batch.write_text("a,b\n3,4\n")  # same size
    os.utime(batch, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # what cp -p does
    assert batch.stat().st_size == stat.st_size and batch.stat().st_mtime_ns == stat.st_mtime_ns
    assert ledger.identity(batch) == sha256_file(batch) != first


def test_inbox_reports_symlinks_and_foreign_files_and_follows_neither(tmp_path: Path, caplog) -> None:
    import logging

    from pipeline.ops.inbox import find_batches

    secret = tmp_path / "credentials.csv"
    secret.write_text("user,password\nadmin,hunter2\n")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "good.csv").write_text("a,b\n1,2\n")
    (inbox / "linked.csv").symlink_to(secret)
    for foreign in ("_draft.csv", "batch.csv.gz", "notes.json", "book.xlsx"):
        (inbox / foreign).write_bytes(b"x")
    (inbox / ".writing.csv.tmp").write_bytes(b"x")  # a writer's temporary: quiet
    with caplog.at_level(logging.WARNING):
        batches = find_batches(inbox, Ledger(tmp_path / "ledger.sqlite"))
    assert [Path(b.file).name for b in batches] == ["good.csv"]
    logged = caplog.text
    assert "linked.csv' is reached through a symbolic link" in logged and "hunter2" not in logged
    for foreign in ("_draft.csv", "batch.csv.gz", "notes.json", "book.xlsx"):
        assert f"'{foreign}' is not a batch" in logged
    assert ".writing.csv.tmp" not in logged and "'linked.csv' is not a batch" not in logged


def test_n42_a_glob_inbox_does_not_follow_a_linked_folder(tmp_path: Path, caplog) -> None:
    """N42: with `--inbox 'inbox/**/*.csv'`, a sub-folder linked to a folder of secrets was
    followed (only files were checked for links), and the ledger kept the secret's header."""
    import logging

    from pipeline.ops.inbox import find_batches

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "creds.csv").write_text("db_user=svc,db_password=hunter2\n1,2\n")
    (tmp_path / "inbox" / "site-a").mkdir(parents=True)
    (tmp_path / "inbox" / "site-a" / "good.csv").write_text("a,b\n1,2\n")
    (tmp_path / "inbox" / "site-b").symlink_to(secrets, target_is_directory=True)
    with caplog.at_level(logging.WARNING):
        batches = find_batches(f"{tmp_path}/inbox/**/*.csv", Ledger(tmp_path / "ledger.sqlite"))
    assert [Path(b.file).parent.name for b in batches] == ["site-a"]
    assert "site-b/creds.csv' is reached through a symbolic link" in caplog.text and "hunter2" not in caplog.text


def test_p05_a_file_that_shares_no_column_with_the_model_is_not_quoted(tabular_model: Path, tmp_path: Path) -> None:
    """P05: scoring a credentials file (a link planted in a folder, or named by mistake) quoted
    its first line in the error: `Columns found: ['db_user=svc', 'db_password=hunter2']`."""
    from pipeline.core.errors import PipelineError
    from pipeline.runtime import Scorer, score_files

    (tmp_path / "creds.csv").write_text("db_user=svc,db_password=hunter2\n1,2\n")
    with pytest.raises(PipelineError) as refused:
        score_files(Scorer.load(tabular_model), tmp_path / "creds.csv", tmp_path / "out.parquet")
    assert "hunter2" not in str(refused.value) and "is one the model knows" in str(refused.value)
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "creds.csv").symlink_to(tmp_path / "creds.csv")
    with pytest.raises(PipelineError, match="holds no file"):  # the link is not followed at all
        score_files(Scorer.load(tabular_model), tmp_path / "folder", tmp_path / "out.parquet")


def test_a_transient_failure_is_retried_until_the_dead_letter(tmp_path: Path) -> None:
    """A full disk is the machine's fault: the batch is taken again by the next run with no
    --force, and set aside as failed only after MAX_ATTEMPTS claims; bad data is set aside at once."""
    import errno

    from pipeline.core.faults import is_transient
    from pipeline.ops.ledger import MAX_ATTEMPTS

    assert is_transient(OSError(errno.ENOSPC, "No space left on device")) and is_transient(TimeoutError())
    assert not is_transient(OSError(errno.ENOENT, "gone")) and not is_transient(ValueError("bad value"))
    ledger = Ledger(tmp_path / "ledger.sqlite")
    for attempt in range(1, MAX_ATTEMPTS + 1):
        claim = ledger.claim("b1", "m/1", "b1.parquet")
        assert claim.granted and claim.reason == ("new" if attempt == 1 else "retry")
        status = ledger.release("b1", "m/1", "No space left on device")
        assert status == ("retry" if attempt < MAX_ATTEMPTS else "failed")
    assert not ledger.claim("b1", "m/1", "b1.parquet").granted  # the dead letter waits for --force
    assert f"gave up after {MAX_ATTEMPTS} attempts" in ledger.batches()[0]["summary"]
    ledger.claim("b2", "m/1", "b2.parquet")
    ledger.fail("b2", "m/1", "column 'x' must be numeric")
    assert not ledger.claim("b2", "m/1", "b2.parquet").granted


def test_a_claim_whose_pid_was_reused_is_taken_over(tmp_path: Path) -> None:
    """The claiming process died and its pid now names another live process: the claim was
    `busy` for ever; the recorded start time tells the two apart. The same live process
    (same pid, same start) still holds its claim."""
    import socket
    import sqlite3

    from pipeline.core.faults import process_start

    ledger = Ledger(tmp_path / "ledger.sqlite")
    live = os.getppid()  # a process that is alive, and is not this one
    for started, expected in [(process_start(live), "busy"), (process_start(live) + 1, "taken-over")]:
        identity = f"b{started}"
        ledger.claim(identity, "m/1", "b.parquet")
        with sqlite3.connect(tmp_path / "ledger.sqlite") as db:  # as if that process had claimed it
            db.execute(
                "UPDATE batches SET owner=? WHERE identity=?", (f"{socket.gethostname()}:{live}:{started}:0000", identity)
            )
        claim = ledger.claim(identity, "m/1", "b.parquet")
        assert claim.reason == expected and claim.granted == (expected == "taken-over")


def test_an_alarm_from_a_clock_running_ahead_is_raised_but_not_kept_for_cooldown(manifest) -> None:
    """A device whose clock says 2099: its alert goes out, but 2099 is not stored as its last
    alarm, where every later alarm (in 2026) would compare against it."""
    limit = manifest.threshold.value
    recent = datetime.now() - timedelta(hours=2)
    future = pl.concat(
        [
            scored_frame(limit, {"press-01": [1, 2, 3]}, datetime(2099, 1, 1)).filter(pl.col("machine") == "press-01"),
            scored_frame(limit, {}, recent).filter(pl.col("machine") == "press-02"),
        ]
    )
    alert, times = alerts.evaluate(future, manifest, AlertRules(), BatchRef(file="b", sha256="x"), last_alerts={})
    assert alert is not None and [e.entity for e in alert.entities] == ["press-01"] and times == {}
    now = scored_frame(limit, {"press-01": [1, 2, 3]}, datetime.now() - timedelta(hours=2))
    assert set(alerts.evaluate(now, manifest, AlertRules(), BatchRef(file="b", sha256="y"), last_alerts={})[1]) == {
        "press-01"
    }


def test_n34_an_alert_recorded_by_an_older_release_is_still_delivered(manifest, tmp_path: Path) -> None:
    """N34: an alert recorded before `peak_percentile` existed raised a pydantic ValidationError
    in delivery, which the flow did not catch, so every run failed before it scored anything."""
    burst = scored_frame(manifest.threshold.value, {"press-02": [11, 12, 14]}, datetime(2026, 11, 1))
    alert, _ = alerts.evaluate(burst, manifest, AlertRules(), BatchRef(file="b", sha256="x"), last_alerts={})
    older = {key: value for key, value in alert.model_dump(mode="json").items() if key != "peak_percentile"}
    ledger = Ledger(tmp_path / "ledger.sqlite")
    assert delivery.deliver(delivery.read_record(older), [delivery.EVENT_SINK], ledger) == {delivery.EVENT_SINK: "sent"}


def test_n33_a_new_sink_receives_alerts_from_now_on_unless_backfilled(tmp_path: Path) -> None:
    """N33: an operator added an on-call sink beside one that had received 60 alerts, and the
    next run paged on-call with all 60 stale alerts."""
    ledger = Ledger(tmp_path / "ledger.sqlite")
    assert ledger.register_sinks(["ops"]) == ["ops"]
    for n in range(3):
        ledger.record_alert(f"old{n}", f"b{n}", "m/1", {"alert_id": f"old{n}"}, "m", {})
        ledger.mark_delivered(f"old{n}", "ops")
    assert ledger.register_sinks(["ops", "oncall"]) == ["oncall"]
    assert ledger.undelivered(["ops", "oncall"]) == []  # nothing stale for the new sink
    ledger.record_alert("new", "b9", "m/1", {"alert_id": "new"}, "m", {})
    assert ledger.undelivered(["ops", "oncall"]) == [{"alert_id": "new"}]
    ledger.register_sinks(["archive"], backfill=True)  # asked for: every recorded alert
    assert [a["alert_id"] for a in ledger.undelivered(["archive"])] == ["old0", "old1", "old2", "new"]


def test_n35_a_sink_that_times_out_says_so() -> None:
    """N35: a hanging sink's error read `webhook/hang: ` (an httpx timeout's message is empty)."""
    import httpx

    assert delivery.failure_reason(httpx.ReadTimeout("")) == "ReadTimeout"
    assert (
        delivery.failure_reason(ValueError("https://hooks.example.com/T0/secret")) == "https://hooks.example.com/<redacted>"
    )


def test_n40_a_host_clock_behind_the_data_keeps_the_cooldown_and_says_so(manifest, caplog) -> None:
    """N40: with the host's clock reset to 2020 and the data in 2026, every alarm looked "in the
    future", no cooldown time was kept, and the same fault paged again on every batch. A whole
    batch ahead of the host's clock now keeps its times (it is the host that is wrong) and warns."""
    limit, rules = manifest.threshold.value, AlertRules(cooldown_minutes=7 * 24 * 60)
    ahead = datetime.now() + timedelta(days=2000)  # the data, as seen by a host clock years behind
    first, times = alerts.evaluate(
        scored_frame(limit, {"press-01": [1, 2, 3]}, ahead), manifest, rules, BatchRef(file="b1", sha256="x"), last_alerts={}
    )
    assert first is not None and set(times) == {"press-01"}
    assert "ahead of this host's clock" in caplog.text
    later = scored_frame(limit, {"press-01": [1, 2, 3]}, ahead + timedelta(hours=3))
    second, _ = alerts.evaluate(later, manifest, rules, BatchRef(file="b2", sha256="y"), last_alerts=times)
    assert second is None  # the same fault, three hours on: cooling down


def test_p12_finished_batches_are_known_in_one_query(tmp_path: Path) -> None:
    """P12: a run claimed each of 2,000 done files again (22 s) only to hear "done". The flow
    now leaves out what `settled` names (done or set aside) before it claims anything."""
    ledger = Ledger(tmp_path / "ledger.sqlite")
    for identity in ("done", "failed", "retry", "running"):
        ledger.claim(identity, "m/1", f"{identity}.csv")
    ledger.complete("done", "m/1", "out.parquet", {})
    ledger.fail("failed", "m/1", "bad data")
    ledger.release("retry", "m/1", "disk full")
    assert ledger.settled("m/1") == {"done": "done", "failed": "failed"} and ledger.settled("m/2") == {}


def test_p12_a_scored_file_moves_to_the_archive_at_its_place_under_the_inbox(tmp_path: Path) -> None:
    """P12: nothing archived done files, so every run listed and hashed all of them again. A
    file re-delivered under an archived name goes beside it; one written since it was scored
    stays in the inbox (it is a new batch); an archive inside the inbox is refused."""
    from pipeline.core.errors import DataError
    from pipeline.ops import inbox

    ledger, root, archive = Ledger(tmp_path / "ledger.sqlite"), tmp_path / "in", tmp_path / "done"
    (root / "site-a").mkdir(parents=True)
    (root / "site-a" / "b.csv").write_text("x\n1\n")
    (root / "c.csv").write_text("x\n2\n")
    pattern = f"{root}/**/*.csv"
    first = {Path(b.file).name: b for b in inbox.find_batches(pattern, ledger)}
    assert inbox.archive_batch(first["b.csv"], pattern, archive) == archive / "site-a" / "b.csv"
    assert not (root / "site-a" / "b.csv").exists() and (archive / "site-a" / "b.csv").read_text() == "x\n1\n"

    (root / "site-a" / "b.csv").write_text("x\n3\n")  # the same name, new content
    again = {Path(b.file).name: b for b in inbox.find_batches(pattern, ledger)}
    moved = inbox.archive_batch(again["b.csv"], pattern, archive)
    assert moved == archive / "site-a" / f"b-{again['b.csv'].identity[:12]}.csv" and moved.read_text() == "x\n3\n"

    (root / "c.csv").write_text("x\n2\n4\n")  # written after it was found (and scored)
    assert inbox.archive_batch(again["c.csv"], pattern, archive) is None and (root / "c.csv").exists()
    with pytest.raises(DataError, match="inside the inbox"):
        inbox.check_archive(pattern, root / "done")
    inbox.check_archive(pattern, archive)


def test_p12_an_archive_on_another_filesystem_gets_a_whole_copy(tmp_path: Path) -> None:
    """Across filesystems a rename fails (EXDEV): the file is copied whole, then removed."""
    from pipeline.ops import inbox

    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem (/dev/shm) here")
    root = tmp_path / "in"
    root.mkdir()
    (root / "b.csv").write_text("x\n1\n")
    (batch,) = inbox.find_batches(root, Ledger(tmp_path / "ledger.sqlite"))
    with __import__("tempfile").TemporaryDirectory(dir=shm) as other:
        moved = inbox.archive_batch(batch, root, other)
        assert moved == Path(other) / "b.csv" and moved.read_text() == "x\n1\n"
        assert not (root / "b.csv").exists() and [p.name for p in Path(other).iterdir()] == ["b.csv"]


def test_n46_an_old_format_claim_on_a_live_pid_is_left_to_the_lease(tmp_path: Path) -> None:
    """N46: a claim from the release before start times were kept (host:pid:nonce), whose pid
    now names another live process, was `busy` for ever. Its pid cannot tell: the lease does."""
    import socket
    import sqlite3

    ledger = Ledger(tmp_path / "ledger.sqlite", lease_seconds=60)
    old_token = f"{socket.gethostname()}:{os.getppid()}:0000"  # a live pid, no start time
    for identity, age, expected in [("fresh", 10, "busy"), ("stale", 3600, "taken-over")]:
        ledger.claim(identity, "m/1", "b.parquet")
        with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
            db.execute(
                "UPDATE batches SET owner=?, claimed_at=strftime('%s','now') - ? WHERE identity=?",
                (old_token, age, identity),
            )
        assert ledger.claim(identity, "m/1", "b.parquet").reason == expected


def test_n36_a_failing_sink_is_paused_longer_with_each_failure_and_closes_on_success(tmp_path: Path) -> None:
    """The circuit breaker behind N36: a dead sink costs its timeouts once per pause, the pause
    doubles with each failure in a row, and one delivery that works closes it."""
    ledger = Ledger(tmp_path / "ledger.sqlite")
    assert ledger.paused_sinks(["hook"]) == {}
    assert [ledger.sink_failed("hook") for _ in range(3)] == [1, 2, 3]
    failures, until = ledger.paused_sinks(["hook", "other"])["hook"]
    assert failures == 3 and 230 < until - time.time() <= 240  # 60 s × 2²
    assert ledger.paused_sinks(["hook"], pause=0.0) == {}  # an operator's shorter pause applies at once
    ledger.sink_worked("hook")
    assert ledger.paused_sinks(["hook"]) == {}


def test_an_episode_confirmed_in_the_next_batch_pages_there_and_once() -> None:
    """An onset at a batch's last row with the episode's flags in the next batch: the whole
    stream confirms it at its third flag, and so do the batches, through the carried state."""
    rules = AlertRules(min_anomalous=3, within=10)
    flags = np.zeros(40, bool)
    flags[[19, 21, 22, 23]] = True
    onsets = np.zeros(40, bool)
    onsets[19] = True
    assert alerts.confirmations(flags, onsets, rules) == [22]
    first = alerts.confirmations(flags[:20], onsets[:20], rules)
    carried = counts_only(since_alarm=0, recent_flags="".join("1" if f else "0" for f in flags[:20]))
    assert (first, alerts.confirmations(flags[20:], onsets[20:], rules, carried)) == ([], [2])  # row 22 = row 2 of batch 2
    paged = counts_only(since_alarm=3, recent_flags="0" * 20 + "1111")
    assert alerts.confirmations(np.ones(5, bool), np.zeros(5, bool), rules, paged) == []  # confirmed before: no page
    assert alerts.confirmations(flags, None, rules) == [22]  # no alarm column: the first row the count is reached


def counts_only(since_alarm: int, recent_flags: str) -> EntityState:
    """An entity's stream state with only what the alert rule reads."""
    empty = np.zeros(0, np.float32)
    return EntityState(0.0, 0, np.zeros((0, 1), np.float32), empty, empty.astype(float), since_alarm, 0, recent_flags)
