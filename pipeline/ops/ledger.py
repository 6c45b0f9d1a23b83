"""The inbox ledger: which batch was scored by which model version, and which alert went to
which sink. SQLite (one file beside the outputs), so overlapping runs, crashed runs and
re-dropped files all agree on what is done.

A batch is keyed by (content sha256, model version): the same bytes dropped again under
another name are the same batch. A run *claims* a batch before scoring it; a claim held by a
live process is respected, a claim whose owner died (same host, pid gone) or whose lease ran
out is taken over, so a run killed half-way is finished by the next one."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.core.digest import sha256_file
from pipeline.core.errors import PipelineError
from pipeline.core.faults import is_transient, pid_alive, process_start
from pipeline.ops.alerts import FUTURE_SLACK
from pipeline.ops.records import DriftAlert
from pipeline.runtime.steps import EntityState

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    identity TEXT NOT NULL, model TEXT NOT NULL, file TEXT NOT NULL, status TEXT NOT NULL,
    owner TEXT NOT NULL, claimed_at REAL NOT NULL, finished_at REAL, output TEXT, summary TEXT,
    claims INTEGER NOT NULL DEFAULT 1, PRIMARY KEY (identity, model));
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY, identity TEXT NOT NULL, model TEXT NOT NULL, created_at REAL NOT NULL,
    payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    alert_id TEXT NOT NULL, sink TEXT NOT NULL, delivered_at REAL NOT NULL, PRIMARY KEY (alert_id, sink));
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL, identity TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entity_alerts (
    model_name TEXT NOT NULL, entity TEXT NOT NULL, last_time TEXT NOT NULL, PRIMARY KEY (model_name, entity));
CREATE TABLE IF NOT EXISTS sinks (sink TEXT PRIMARY KEY, since REAL NOT NULL, failures INTEGER NOT NULL DEFAULT 0,
    failed_at REAL);
CREATE TABLE IF NOT EXISTS refusals (
    alert_id TEXT NOT NULL, sink TEXT NOT NULL, attempts INTEGER NOT NULL, reason TEXT NOT NULL, refused_at REAL NOT NULL,
    dead INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (alert_id, sink));
CREATE TABLE IF NOT EXISTS drifting (model_name TEXT NOT NULL, item TEXT NOT NULL, PRIMARY KEY (model_name, item));
CREATE TABLE IF NOT EXISTS stream_states (
    model TEXT NOT NULL, entity TEXT NOT NULL, identity TEXT NOT NULL, end_time REAL NOT NULL, state TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (model, entity, identity));
CREATE INDEX IF NOT EXISTS stream_states_by_time ON stream_states (model, entity, done, end_time);
"""


def owner_token() -> str:
    """host:pid:start:nonce of this process. The start time tells another process whether the
    pid now names the same process (pids are reused); the nonce tells this one."""
    return f"{socket.gethostname()}:{os.getpid()}:{process_start(os.getpid()) or 0}:{_NONCE}"


_NONCE = uuid.uuid4().hex[:8]
SINK_PAUSE_SECONDS, SINK_PAUSE_MAX = 60.0, 3600.0  # a failing sink's first pause, and the longest
MAX_ATTEMPTS = 5  # claims of a batch whose failures were transient, before it is set aside as failed
# Stream states kept per model version and entity, newest by data time: a batch that arrives this
# many batches late still continues the state as of its own time; an older one starts afresh.
STATES_KEPT = 32
MAX_REFUSALS = 3  # times a sink refuses one alert (HTTP 4xx) before the alert is set aside for it as a dead letter


def _poison(claims: int, where: str = "") -> str:
    """The summary of a batch set aside because the process scoring it died each time."""
    why = (
        f"gave up after {claims} attempts{where}: the process scoring it died each time (killed by the "
        "out-of-memory killer, or a native crash?); `vad release` takes it again"
    )
    return json.dumps({"error": why, "killed": True})


def _owner_alive(owner: str) -> bool | None:
    """True/False when the owner ran on this host (pid and start time), None when it cannot
    tell. A live pid that started at another time is another process: the owner is dead,
    and its claim is taken over rather than `busy` for ever (tokens from before the start time
    was recorded, host:pid:nonce, cannot tell a reused pid: a live one is left to the lease)."""
    parts = owner.split(":")  # host names hold no colon
    host, pid, nonce = parts[0], int(parts[1]), parts[-1]
    started = int(parts[2]) if len(parts) == 4 else 0
    if host != socket.gethostname():
        return None
    if pid == os.getpid():
        return nonce == _NONCE
    if not pid_alive(pid):
        return False
    if not started:  # a token from before the start time was kept: a live pid may be a reused one,
        return None  # so the lease decides (N46: such a claim was `busy` for ever)
    now = process_start(pid)
    return not (now is not None and now != started)


@dataclass(frozen=True)
class Claim:
    """The outcome of asking to score a batch."""

    granted: bool
    reason: str  # new | taken-over | forced | retry | done | failed | dead-letter (set aside now) | busy
    owner: str


class Ledger:
    """One SQLite file; every change is a short IMMEDIATE transaction (safe across processes)."""

    def __init__(
        self, path: str | Path, lease_seconds: float = 3600.0, max_attempts: int = MAX_ATTEMPTS, busy_seconds: float = 30.0
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.busy_seconds = busy_seconds  # how long a change waits for another run's lock
        db = sqlite3.connect(self.path, timeout=busy_seconds)
        try:
            db.executescript(SCHEMA)  # idempotent; executescript manages its own transaction
            _add_column(db, "sinks", "since_alert INTEGER")  # ledgers from before the alert sequence
        except sqlite3.DatabaseError as exc:
            if is_transient(exc):
                raise  # a lock another process holds, a full disk: the caller's retries wait it out
            raise PipelineError(
                f"the ledger '{self.path}' cannot be read ({exc}): it is damaged. Move it aside, "
                "then run again with --rebuild-ledger, which records the batches whose scores are "
                "in the outbox as done instead of scoring and alerting on them again."
            ) from None
        finally:
            db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=self.busy_seconds, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    # -- batches --------------------------------------------------------------------------
    def identity(self, path: str | Path) -> str:
        """A file's content sha256, hashed once per (path, size, mtime, ctime, inode): a schedule
        that fires every minute over a large inbox does not re-read every file each time. The
        change time is in the key because tools set mtime back (`cp -p`, `rsync -t`) but no
        tool can set ctime: a rewrite with the same size and mtime was taken for the old data.
        (Ledgers from before keep an unused `file_identities` table; the cache refills once.)"""
        path = Path(path).resolve()
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
        with self._transaction() as db:
            row = db.execute(
                "SELECT identity FROM file_hashes WHERE path=? AND size=? AND mtime_ns=? AND ctime_ns=? AND inode=?", key
            ).fetchone()
        if row:
            return str(row[0])
        identity = sha256_file(path)
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO file_hashes (path, size, mtime_ns, ctime_ns, inode, identity) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (*key, identity),
            )
        return identity

    def claim(self, identity: str, model: str, file: str, *, force: bool = False) -> Claim:
        """Take the batch for this process unless it is done (and not forced) or a live run holds it."""
        me, now = owner_token(), time.time()
        with self._transaction() as db:
            row = db.execute(
                "SELECT status, owner, claimed_at, claims FROM batches WHERE identity=? AND model=?", (identity, model)
            ).fetchone()
            inherited = 0
            if row is None:
                reason = "new"
                # A poison batch stays one after a promotion: it killed the previous version's processes.
                inherited = self._deaths_under_other_versions(db, identity, model, now)
                if inherited >= self.max_attempts and not force:
                    db.execute(
                        "INSERT INTO batches (identity, model, file, status, owner, claimed_at, finished_at, summary, "
                        "claims) VALUES (?, ?, ?, 'failed', ?, ?, ?, ?, ?)",
                        (identity, model, file, me, now, now, _poison(inherited, " under another version"), inherited),
                    )
                    return Claim(False, "dead-letter", me)
            else:
                status, owner, claimed_at, claims = row
                if status in ("done", "failed") and not force:
                    return Claim(False, status, owner)  # a "retry" batch is taken again, no --force needed
                if status == "running" and owner != me:
                    alive = _owner_alive(owner)
                    expired = now - claimed_at > self.lease_seconds
                    if alive or (alive is None and not expired):
                        return Claim(False, "busy", owner)
                    if claims >= self.max_attempts and not force:  # its process died each time: a poison batch
                        db.execute(
                            "UPDATE batches SET status='failed', finished_at=?, summary=? WHERE identity=? AND model=?",
                            (now, _poison(claims), identity, model),
                        )
                        return Claim(False, "dead-letter", owner)
                reason = {"done": "forced", "failed": "forced", "retry": "retry"}.get(status, "taken-over")
            db.execute(
                "INSERT INTO batches (identity, model, file, status, owner, claimed_at, claims) "
                "VALUES (?, ?, ?, 'running', ?, ?, ?) "
                "ON CONFLICT (identity, model) DO UPDATE SET file=excluded.file, status='running', "
                "owner=excluded.owner, claimed_at=excluded.claimed_at, finished_at=NULL, claims=claims + 1",
                (identity, model, file, me, now, inherited + 1),
            )
            return Claim(True, reason, me)

    def _deaths_under_other_versions(self, db: sqlite3.Connection, identity: str, model: str, now: float) -> int:
        """How many claims of this batch another version of the model (name/version) lost to a
        dying process: a claim still `running` whose owner is dead (or its lease ran out), or a
        batch it set aside as poison. The most of any one version, so a promotion does not give a
        poison batch a fresh budget (the soak: it killed five more scoring runs)."""
        name = model.rsplit("/", 1)[0]
        rows = db.execute(
            "SELECT status, owner, claimed_at, claims, summary FROM batches WHERE identity=? AND model != ? "
            "AND substr(model, 1, ?) = ? AND status IN ('running', 'failed')",
            (identity, model, len(name) + 1, f"{name}/"),
        ).fetchall()
        deaths = [0]
        for status, owner, claimed_at, claims, summary in rows:
            if status == "failed":
                deaths.append(claims if json.loads(summary or "{}").get("killed") else 0)
            else:
                alive = _owner_alive(owner)
                deaths.append(claims if alive is False or (alive is None and now - claimed_at > self.lease_seconds) else 0)
        return max(deaths)

    def complete(self, identity: str, model: str, output: str, summary: dict[str, Any]) -> None:
        """The batch is done, and the stream states it reached (`stage_states`) become the ones
        later batches of its entities continue, in one transaction: a run killed before it
        re-scores the batch from the same states."""
        with self._transaction() as db:
            db.execute(
                "UPDATE batches SET status='done', finished_at=?, output=?, summary=? WHERE identity=? AND model=?",
                (time.time(), output, json.dumps(summary, default=str), identity, model),
            )
            entities = [
                entity
                for (entity,) in db.execute(
                    "UPDATE stream_states SET done=1 WHERE model=? AND identity=? RETURNING entity", (model, identity)
                ).fetchall()
            ]
            # The newest STATES_KEPT per entity stay, counted apart for states dated past this host's
            # clock: a burst of batches from a clock that ran ahead must not evict the real ones.
            horizon = (datetime.now(UTC) + FUTURE_SLACK).timestamp()
            db.executemany(
                "DELETE FROM stream_states WHERE model=?1 AND entity=?2 AND done=1 AND (end_time > ?4) = ?5 "
                "AND end_time < (SELECT end_time FROM stream_states WHERE model=?1 AND entity=?2 AND done=1 "
                "AND (end_time > ?4) = ?5 ORDER BY end_time DESC LIMIT 1 OFFSET ?3)",
                [(model, entity, STATES_KEPT - 1, horizon, future) for entity in entities for future in (0, 1)],
            )

    def stage_states(self, identity: str, model: str, states: dict[str, EntityState]) -> None:
        """The stream states a batch reached, each entity's where its stream stood at the batch's
        last row: kept aside until the batch completes (a re-run replaces them)."""
        with self._transaction() as db:
            db.execute("DELETE FROM stream_states WHERE model=? AND identity=? AND done=0", (model, identity))
            db.executemany(
                "INSERT OR REPLACE INTO stream_states (model, entity, identity, end_time, state, done) "
                "VALUES (?, ?, ?, ?, ?, 0)",
                [(model, entity, identity, state.end, state.to_json()) for entity, state in states.items()],
            )

    def states_before(self, model: str, firsts: dict[str, float]) -> dict[str, EntityState]:
        """For each entity, the state of the batch done last in its data time before `firsts`
        (its first row's time, seconds): the state a batch of that entity continues."""
        found = {}
        with self._transaction() as db:
            for entity, first in firsts.items():
                row = db.execute(
                    "SELECT state FROM stream_states WHERE model=? AND entity=? AND done=1 AND end_time < ? "
                    "ORDER BY end_time DESC LIMIT 1",
                    (model, entity, first),
                ).fetchone()
                if row is not None:
                    found[entity] = EntityState.from_json(row[0])
        return found

    def fail(self, identity: str, model: str, error: str) -> None:
        """A batch that cannot be scored (bad data): not retried until forced, since the
        same bytes fail the same way; a corrected file is a new batch."""
        with self._transaction() as db:
            db.execute(
                "UPDATE batches SET status='failed', finished_at=?, summary=? WHERE identity=? AND model=?",
                (time.time(), json.dumps({"error": error}), identity, model),
            )

    def release(self, identity: str, model: str, error: str) -> str:
        """A batch that failed for a reason outside it (a full disk, a lost connection): left
        for the next run to retry, until `max_attempts` claims have failed; then it is set
        aside as failed (the dead letter), like bad data. Returns the status it now has."""
        with self._transaction() as db:
            row = db.execute("SELECT claims FROM batches WHERE identity=? AND model=?", (identity, model)).fetchone()
            exhausted = row is not None and row[0] >= self.max_attempts
            status = "failed" if exhausted else "retry"
            why = f"gave up after {row[0]} attempts: {error}" if exhausted else error
            db.execute(
                "UPDATE batches SET status=?, finished_at=?, summary=? WHERE identity=? AND model=?",
                (status, time.time(), json.dumps({"error": why, "transient": True}), identity, model),
            )
            return status

    def retry_dead_letters(self, name: str, model: str | None = None) -> int:
        """Give the failed batches of the file `name` (its path, or its name when that names one
        file) a fresh attempt budget: the next run takes them again, without --force re-scoring
        everything. With `model` (a name, or name/version), only that model's. A bare name that
        several files or models share is refused with their list (R05: `b.csv` released another
        folder's and another model's batches). Returns how many."""
        with self._transaction() as db:
            failed = [
                (identity, key, file)
                for identity, key, file in db.execute("SELECT identity, model, file FROM batches WHERE status='failed'")
                if model is None or model in (key, key.split("/")[0])
            ]
            chosen = [f for f in failed if name == f[2] or Path(name).resolve() == Path(f[2]).resolve()]
            chosen = chosen or [f for f in failed if Path(f[2]).name == name]
            if len({(file, key.rsplit("/", 1)[0]) for _, key, file in chosen}) > 1:  # one model's versions: one batch
                listed = ", ".join(f"{file} ({key})" for file, key in sorted({(file, key) for _, key, file in chosen}))
                raise PipelineError(
                    f"'{name}' names {len(chosen)} set-aside batches: {listed}. Give the file's path (and --model)."
                )
            db.executemany(
                "UPDATE batches SET status='retry', claims=0 WHERE identity=? AND model=?", [c[:2] for c in chosen]
            )
            return len(chosen)

    def judged_by_another_version(self, identity: str, model_name: str, model: str) -> str | None:
        """Another version of this model (name/version) that already scored and judged this
        batch, if any: a version promoted while files were still in the inbox scores them again,
        but their alerts were raised, or not, under the version that judged them first (N10)."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT model FROM batches WHERE identity=? AND status='done' AND model != ? AND substr(model, 1, ?) = ? "
                "ORDER BY finished_at LIMIT 1",
                (identity, model, len(model_name) + 1, f"{model_name}/"),
            ).fetchone()
        return row[0] if row else None

    def settled(self, model: str) -> dict[str, str]:
        """The status ('done', or 'failed': set aside) of each batch this model version has
        finished, by identity, in one query: a run skips them without a claim each (P12: 2,000
        done files cost 22 s of claims on every run)."""
        with self._transaction() as db:
            return dict(
                db.execute("SELECT identity, status FROM batches WHERE model=? AND status IN ('done', 'failed')", (model,))
            )

    def pending_attempts(self, model: str) -> dict[str, int]:
        """Claims so far of each batch this model version started but did not finish (a crashed
        or retried one), by identity: a run takes those last, so one that kills its process
        does not hold up the batches after it."""
        with self._transaction() as db:
            return dict(
                db.execute("SELECT identity, claims FROM batches WHERE model=? AND status IN ('running', 'retry')", (model,))
            )

    def batches(self) -> list[dict[str, Any]]:
        with self._transaction() as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM batches ORDER BY claimed_at")]

    # -- alerts ---------------------------------------------------------------------------
    def record_alert(
        self,
        alert_id: str,
        identity: str,
        model: str,
        payload: dict[str, Any],
        model_name: str,
        entity_times: dict[str, str],
    ) -> bool:
        """Store an alert once, with the alarm times of its entities (for the cooldown), in one
        transaction; False when this alert id was already recorded. A later time replaces an
        entity's kept one, and so does any time when the kept one lies past this host's clock by
        more than FUTURE_SLACK (R47: one batch from a device clock 73 years ahead kept 2099 for
        good, and every later real alarm paged again, never cooling down)."""
        horizon = (datetime.now(UTC) + FUTURE_SLACK).isoformat()
        with self._transaction() as db:
            if not _insert_alert(db, alert_id, identity, model, payload):
                return False
            db.executemany(
                "INSERT INTO entity_alerts (model_name, entity, last_time) VALUES (?, ?, ?) "
                "ON CONFLICT (model_name, entity) DO UPDATE SET last_time=CASE WHEN excluded.last_time > last_time "
                "OR last_time > ? THEN excluded.last_time ELSE last_time END",
                [(model_name, entity, t, horizon) for entity, t in entity_times.items()],
            )
            return True

    def drifting(self, model_name: str) -> set[str]:
        """What drifted in the model's latest batch (columns, entities): the drift episode under way."""
        with self._transaction() as db:
            return {item for (item,) in db.execute("SELECT item FROM drifting WHERE model_name=?", (model_name,))}

    def record_drift(
        self, model_name: str, items: set[str], alert: DriftAlert | None = None, identity: str = "", model: str = ""
    ) -> None:
        """The drift episode now (`items`, empty when the batch did not drift) and, when
        something started drifting, its alert, in one transaction."""
        with self._transaction() as db:
            db.execute("DELETE FROM drifting WHERE model_name=?", (model_name,))
            db.executemany(
                "INSERT INTO drifting (model_name, item) VALUES (?, ?)", [(model_name, item) for item in sorted(items)]
            )
            if alert is not None:
                _insert_alert(db, alert.alert_id, identity, model, alert.model_dump(mode="json"))

    def get_alert(self, alert_id: str) -> dict[str, Any] | None:
        with self._transaction() as db:
            row = db.execute("SELECT payload FROM alerts WHERE alert_id=?", (alert_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def delivered(self, alert_id: str, sink: str) -> bool:
        with self._transaction() as db:
            found = db.execute("SELECT 1 FROM deliveries WHERE alert_id=? AND sink=?", (alert_id, sink)).fetchone()
            return found is not None

    def mark_delivered(self, alert_id: str, sink: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO deliveries (alert_id, sink, delivered_at) VALUES (?, ?, ?)",
                (alert_id, sink, time.time()),
            )

    def register_sinks(self, sinks: list[str], backfill: bool = False) -> list[str]:
        """Note where in the ledger's alert sequence each sink was first used: a new sink receives
        the alerts recorded after that, not every alert ever recorded (N33: 60 stale alerts paged
        a new on-call sink), unless `backfill`. The sequence, not the host's clock, marks it (R13:
        a sink registered while the clock ran 2 h ahead was owed none of the next alerts). A
        sink that already has deliveries (from before this table) keeps its past. Returns the
        sinks new to this ledger."""
        new = []
        with self._transaction() as db:
            last = db.execute("SELECT coalesce(max(rowid), 0) FROM alerts").fetchone()[0]
            for sink in sinks:
                known = db.execute("SELECT 1 FROM sinks WHERE sink=?", (sink,)).fetchone()
                if known and not backfill:
                    continue
                used = db.execute("SELECT 1 FROM deliveries WHERE sink=? LIMIT 1", (sink,)).fetchone()
                since = 0 if backfill or used else last
                db.execute(
                    "INSERT INTO sinks (sink, since, since_alert) VALUES (?, 0, ?) "
                    "ON CONFLICT (sink) DO UPDATE SET since=0, since_alert=excluded.since_alert",
                    (sink, since),
                )
                if not known:
                    new.append(sink)
        return new

    def paused_sinks(self, sinks: list[str], pause: float = SINK_PAUSE_SECONDS) -> dict[str, tuple[int, float]]:
        """Sinks of `sinks` whose circuit is open: {sink: (failures in a row, paused until)}. A
        sink that failed is paused `pause` seconds, then 2×, 4× … as its failures in a row grow
        (at most an hour), so a dead or hanging sink costs a run its timeouts only once per
        pause (N36). The host's clock times it: a breaker, not data time; a failure recorded
        while the clock ran ahead counts as now, so no pause outlasts now + its length (R15)."""
        if not sinks:
            return {}
        now = time.time()
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT sink, failures, failed_at FROM sinks WHERE failures > 0 AND sink IN "
                f"({', '.join('?' for _ in sinks)})",
                sinks,
            ).fetchall()
        paused = {
            sink: (failures, min(failed_at, now) + min(pause * 2 ** (failures - 1), SINK_PAUSE_MAX))
            for sink, failures, failed_at in rows
        }
        return {sink: (failures, until) for sink, (failures, until) in paused.items() if until > now}

    def sink_failed(self, sink: str) -> int:
        """A delivery to `sink` failed; returns its failures in a row."""
        with self._transaction() as db:
            db.execute("INSERT INTO sinks (sink, since) VALUES (?, 0) ON CONFLICT (sink) DO NOTHING", (sink,))
            failures = db.execute(
                "UPDATE sinks SET failures = failures + 1, failed_at = ? WHERE sink=? RETURNING failures",
                (time.time(), sink),
            ).fetchone()[0]
            return int(failures)

    def sink_worked(self, sink: str) -> None:
        """A delivery to `sink` succeeded: its circuit closes."""
        with self._transaction() as db:
            db.execute("UPDATE sinks SET failures=0, failed_at=NULL WHERE sink=?", (sink,))

    def owed(self, sinks: list[str]) -> list[tuple[dict[str, Any], list[str]]]:
        """Recorded alerts that some of `sinks` has not received (a delivery that failed in an
        earlier run), oldest first, each with the sinks that owe it; a sink owes only the alerts
        recorded after it was registered (`register_sinks`, by the alert sequence; a sink
        registered by an older release, by its time; an unregistered sink: all)."""
        if not sinks:
            return []
        marks = ", ".join("(?)" for _ in sinks)
        with self._transaction() as db:
            rows = db.execute(
                f"WITH wanted(sink) AS (VALUES {marks}) SELECT a.alert_id, a.payload, w.sink FROM alerts a, wanted w "
                "LEFT JOIN sinks s ON s.sink = w.sink WHERE (CASE WHEN s.since_alert IS NULL THEN "
                "a.created_at >= coalesce(s.since, 0) ELSE a.rowid > s.since_alert END) AND NOT EXISTS "
                "(SELECT 1 FROM deliveries d WHERE d.alert_id = a.alert_id AND d.sink = w.sink) AND NOT EXISTS "
                "(SELECT 1 FROM refusals r WHERE r.alert_id = a.alert_id AND r.sink = w.sink AND r.dead = 1) "
                "ORDER BY a.created_at, a.alert_id",
                sinks,
            ).fetchall()
        owed: dict[str, tuple[dict[str, Any], list[str]]] = {}
        for alert_id, payload, sink in rows:
            owed.setdefault(alert_id, (json.loads(payload), []))[1].append(sink)
        return list(owed.values())

    def alert_refused(self, alert_id: str, sink: str, reason: str) -> bool:
        """`sink` refused this alert (it answered, with a 4xx): that alert's failure, not the
        sink's. After MAX_REFUSALS it is set aside for that sink as a dead letter, with the
        reason, and no longer owed (R12: one refused alert held every later one back). Returns
        whether it is dead now."""
        with self._transaction() as db:
            attempts = db.execute(
                "INSERT INTO refusals (alert_id, sink, attempts, reason, refused_at) VALUES (?, ?, 1, ?, ?) "
                "ON CONFLICT (alert_id, sink) DO UPDATE SET attempts = attempts + 1, reason = excluded.reason, "
                "refused_at = excluded.refused_at RETURNING attempts",
                (alert_id, sink, reason, time.time()),
            ).fetchone()[0]
            dead = bool(attempts >= MAX_REFUSALS)
            db.execute("UPDATE refusals SET dead=? WHERE alert_id=? AND sink=?", (int(dead), alert_id, sink))
            return dead

    def dead_letters(self) -> list[dict[str, Any]]:
        """The alerts set aside for a sink that refused them, with the sink's last reason."""
        with self._transaction() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT alert_id, sink, attempts, reason, refused_at FROM refusals WHERE dead=1 ORDER BY refused_at"
            )
            return [dict(row) for row in rows]

    def resend(self, alert_id: str) -> int:
        """Owe a dead-lettered alert again to the sinks that refused it (after the sink or the
        alert's payload was fixed): the next run sends it. Returns the sinks it is owed to again."""
        with self._transaction() as db:
            return db.execute("DELETE FROM refusals WHERE alert_id=? AND dead=1", (alert_id,)).rowcount

    def undelivered(self, sinks: list[str]) -> list[dict[str, Any]]:
        """The alerts of `owed`, without their sinks."""
        return [alert for alert, _ in self.owed(sinks)]

    def alerts(self) -> list[dict[str, Any]]:
        with self._transaction() as db:
            return [
                {"alert_id": a, "payload": json.loads(p)}
                for a, p in db.execute("SELECT alert_id, payload FROM alerts ORDER BY created_at")
            ]

    # -- per-entity cooldown ---------------------------------------------------------------
    def last_alert_times(self, model_name: str) -> dict[str, str]:
        with self._transaction() as db:
            return dict(db.execute("SELECT entity, last_time FROM entity_alerts WHERE model_name=?", (model_name,)))


def _add_column(db: sqlite3.Connection, table: str, column: str) -> None:
    """Add a column a ledger written by an earlier release lacks (SQLite has no IF NOT EXISTS here)."""
    if column.split()[0] not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
        try:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
        except sqlite3.OperationalError as error:  # another run opening the same ledger added it first
            if "duplicate column" not in str(error):
                raise


def _insert_alert(db: sqlite3.Connection, alert_id: str, identity: str, model: str, payload: dict[str, Any]) -> bool:
    """Record an alert once, inside the caller's transaction; False when its id was already there."""
    cursor = db.execute(
        "INSERT OR IGNORE INTO alerts (alert_id, identity, model, created_at, payload) VALUES (?, ?, ?, ?, ?)",
        (alert_id, identity, model, time.time(), json.dumps(payload, default=str)),
    )
    return cursor.rowcount == 1
