"""Scheduled batch scoring, one batch at a time: find the inbox's files, score each one that
this model version has not scored yet, raise its alert. The ledger (`pipeline.ops.ledger`) makes
every step safe to repeat: outputs are written atomically to a path fixed by the batch's
content and the model version, and an alert is built once and then only re-read."""

from __future__ import annotations

import errno
import itertools
import logging
import math
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from functools import partial
from pathlib import Path

import polars as pl

from pipeline.artifact import contract
from pipeline.core.atomic import atomic_output
from pipeline.core.config import AlertRules, DriftRules
from pipeline.core.digest import sha256_file
from pipeline.core.errors import DataError, PipelineError
from pipeline.core.faults import crash_point, full_disk_point
from pipeline.data import ingest
from pipeline.data.schema import FeatureSchema
from pipeline.ops import alerts
from pipeline.ops.ledger import Ledger
from pipeline.ops.records import Alert, Batch, BatchSummary, DriftAlert, Judged
from pipeline.runtime import Scorer, score_files
from pipeline.runtime.steps import EntityState, StreamStates, time_seconds

LEDGER_FILE = "ledger.sqlite"
log = logging.getLogger(__name__)


def find_batches(inbox: str | Path, ledger: Ledger) -> list[Batch]:
    """Every readable file in the inbox (folder or glob), with its content identity. An
    empty inbox is not an error: a schedule often fires before anything arrived. Symbolic
    links are not followed, and files that are not batches are named in the log."""
    try:
        files = ingest.resolve_sources(inbox)
    except DataError:
        if not (Path(inbox).is_dir() or ingest.is_glob(inbox)):
            raise
        files = []
    batches = []
    for file in files:
        if file.is_symlink():  # it could point anywhere (a credentials file), and errors quote data
            log.warning("inbox: '%s' is a symbolic link and is not followed; copy or move the file itself in.", file.name)
            continue
        stamp = ingest.file_stamp(file)  # before hashing: a write during the hash shows up later
        size, mtime_ns = stamp
        batches.append(Batch(file=str(file), identity=ledger.identity(file), size=size, mtime_ns=mtime_ns))
    if Path(inbox).is_dir():
        taken = {file.name for file in files}
        for other in sorted(Path(inbox).iterdir()):
            # dot files: writers' temporaries; links: named by ingest, which does not follow them
            if other.name not in taken and not other.name.startswith(".") and not other.is_symlink():
                log.warning(
                    "inbox: '%s' is not a batch and is left alone (batches are %s files whose names "
                    "do not start with '_' or '.').",
                    other.name,
                    ", ".join(sorted(ingest.FORMATS)),
                )
    return batches


def data_start(batch: Batch, schema: FeatureSchema) -> float:
    """The earliest data time of a sensor batch, in seconds (its time column alone is read);
    -inf where there is none or it cannot be read (scoring the batch then says why)."""
    if schema.mode != "sensor" or not schema.time_column:
        return -math.inf
    try:
        times = ingest.scan_file(Path(batch.file), schema.csv).select(schema.time_column).collect()[schema.time_column]
        if times.dtype == pl.String:
            times = times.str.to_datetime(schema.csv.time_format, strict=False)
        seconds = time_seconds(times.drop_nulls())
    except (OSError, PipelineError, pl.exceptions.PolarsError):
        return -math.inf
    return float(seconds.min()) if len(seconds) else -math.inf


DIED_BEFORE = 2  # claims after which a batch that never finished gives up its place in the stream


def in_stream_order(batches: list[Batch], schema: FeatureSchema, attempts: dict[str, int]) -> list[Batch]:
    """The order to score waiting batches in. A sensor stream's batches go in data time, so each
    continues the state the batch before it reached, whatever order they arrived or were
    retried in (R28); a batch whose run died `DIED_BEFORE` times or more (a poison batch that
    kills its process) goes last, so it holds up the others at most that many runs, and is
    then scored from the state as of its own data time. Tables: fewest attempts first."""
    if schema.mode != "sensor":
        return sorted(batches, key=lambda b: attempts.get(b.identity, 0))
    return sorted(batches, key=lambda b: (attempts.get(b.identity, 0) >= DIED_BEFORE, data_start(b, schema)))


def open_ledger(outbox: str | Path) -> Ledger:
    return Ledger(Path(outbox) / LEDGER_FILE)


def check_ledger(outbox: str | Path, rebuild: bool = False) -> None:
    """Refuse to start on an outbox that holds scores but lost its ledger, or whose ledger
    records no batch (truncated to 0 bytes, replaced by an empty database): a new, empty ledger
    would score every batch again and send every alert again. `rebuild` accepts that a new
    ledger is made (then `rebuild_ledger` records what the outbox already holds)."""
    scores, path = Path(outbox) / "scores", Path(outbox) / LEDGER_FILE
    if rebuild or not scores.is_dir():
        return
    held = sum(1 for p in scores.rglob("*.parquet") if p.is_file())
    if not held or (path.exists() and _records_batches(path)):
        return
    lost = "an empty ledger" if path.exists() else "no ledger"
    raise DataError(
        f"the outbox '{outbox}' holds {held} scored batch(es) but {lost} ('{LEDGER_FILE}'): "
        "scoring now would score and alert on them again. Restore the ledger, or run with "
        "--rebuild-ledger to record the batches whose scores are there as done."
    )


def _records_batches(path: Path) -> bool:
    """Whether the ledger file records at least one batch. A file SQLite cannot read at all
    counts as recording (`Ledger` then refuses it as damaged, with its own fix)."""
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)) as db:
            return db.execute("SELECT 1 FROM batches LIMIT 1").fetchone() is not None
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):
            return False
        raise
    except sqlite3.DatabaseError:
        return True


def rebuild_ledger(ledger: Ledger, batches: list[Batch], outbox: str | Path, model_key: str) -> int:
    """Record as done each batch whose scores file (fixed by content and model version) is in
    the outbox, without scoring it or alerting on it again; returns how many."""
    rebuilt = 0
    for batch in batches:
        output = output_path(outbox, model_key, batch)
        if output.is_file() and ledger.claim(batch.identity, model_key, batch.file).granted:
            ledger.complete(batch.identity, model_key, str(output), {"rebuilt": True})
            rebuilt += 1
    return rebuilt


def output_path(outbox: str | Path, model_key: str, batch: Batch) -> Path:
    """Fixed by model version and content, so a re-run overwrites the same file with the same bytes."""
    return Path(outbox) / "scores" / model_key / f"{Path(batch.file).stem}-{batch.identity[:12]}.parquet"


def inbox_root(inbox: str | Path) -> Path:
    """The folder an inbox's files sit under: the folder itself, or a glob's literal start."""
    return Path(inbox) if Path(inbox).is_dir() else ingest.glob_base(str(inbox))


def check_archive(inbox: str | Path, archive: str | Path) -> None:
    """Refuse an archive inside the inbox: its files would be found, or named as strangers, again."""
    root, target = inbox_root(inbox).resolve(), Path(archive).resolve()
    if target == root or root in target.parents:
        raise DataError(
            f"the archive '{archive}' is inside the inbox '{inbox}': choose a folder beside it "
            f"(for example '{root.name}-done')."
        )


def archive_batch(batch: Batch, inbox: str | Path, archive: str | Path) -> Path | None:
    """Move a scored batch's file out of the inbox, to its place under `archive`, so later runs
    neither list nor hash it (P12: 2,000 done files cost every run a pass over them). Only the
    bytes that were scored move: a file rewritten since (even to the same size and time, R08)
    is a new batch and stays. A file already at the target counts as the archived copy only if
    it is a regular file with the same bytes; otherwise the batch takes a free name beside it
    (R09: a planted link under the id-named name once cost the batch its only copy). Returns
    where the file went, or None when it stayed."""
    source = Path(batch.file)
    if not os.path.lexists(source):  # R11: it was "changed since it was scored"; it is gone
        log.info("inbox: '%s' is no longer in the inbox (another run archived it).", source.name)
        return None
    if (
        not source.is_file()
        or ingest.file_stamp(source) != (batch.size, batch.mtime_ns)
        or sha256_file(source) != batch.identity
    ):
        log.warning("inbox: '%s' changed since it was scored; it stays, to be scored as a new batch.", source.name)
        return None
    relative = Path(os.path.relpath(source.resolve(), inbox_root(inbox).resolve()))
    target = Path(archive) / relative
    for candidate in _archive_names(target, batch.identity):
        if not os.path.lexists(candidate):
            target = candidate
            break
        if _holds(candidate, batch.identity):  # the very same content was archived before
            source.unlink()
            return candidate
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(source, target)  # one step on the same filesystem: the file is never in both or neither
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        with atomic_output(target) as temporary:  # another filesystem: a whole copy first, then the original goes
            shutil.copy2(source, temporary)
        source.unlink()
    return target


def _archive_names(target: Path, identity: str) -> Iterator[Path]:
    """Where a batch may go in the archive, in turn: its own name, with its content id beside
    it, then numbered."""
    yield target
    named = target.with_name(f"{target.stem}-{identity[:12]}{target.suffix}")
    yield named
    for n in itertools.count(2):
        yield named.with_name(f"{named.stem}-{n}{named.suffix}")


def _holds(path: Path, identity: str) -> bool:
    """Whether `path` is a regular file (not a link) whose bytes have this sha256."""
    return not path.is_symlink() and path.is_file() and sha256_file(path) == identity


def score_batch(  # noqa: PLR0913 - keyword-only settings, each passed through to score_files
    scorer: Scorer,
    batch: Batch,
    outbox: str | Path,
    *,
    threshold: float | None = None,
    drift_rules: DriftRules | None = None,
    stream: StreamStates | None = None,
    on_chunk: Callable[[pl.DataFrame], object] | None = None,
) -> BatchSummary:
    """Score one batch into its output file, measuring its drift by `drift_rules`; each of its
    entities continues the state its stream reached before the batch, in `stream` (the
    ledger's: `stream_of`), which records where each now stands; `on_chunk` hears each
    scored chunk."""
    output = output_path(outbox, scorer.manifest.key, batch)
    if batch.size >= 0:  # the identity (and so the output path) must describe the bytes scored
        ingest.check_unchanged(Path(batch.file), (batch.size, batch.mtime_ns))
    report = score_files(
        scorer,
        batch.file,
        output,
        threshold=threshold,
        top_k=contract.TOP_K,
        drift_rules=drift_rules,
        stream=stream,
        on_chunk=on_chunk,
    )
    return BatchSummary(
        file=batch.file,
        output=str(output),
        rows=report.rows,
        anomalies=report.anomalies,
        threshold=report.threshold,
        inputs=report.inputs.summary(),
        alarms=report.alarms,
        unjudged=report.unjudged,
        failed_entities=report.inputs.failed,
        drift=report.drift,
    )


def stream_of(ledger: Ledger, model_key: str) -> StreamStates:
    """The streams of a model version as the ledger's completed batches left them, by data time."""
    return StreamStates(partial(ledger.states_before, model_key))


def score_and_judge(
    ledger: Ledger,
    scorer: Scorer,
    batch: Batch,
    outbox: str | Path,
    rules: AlertRules,
    *,
    threshold: float | None = None,
) -> Judged:
    """Score one batch and judge it: its summary, its anomaly alert and its drift alert, each
    alert recorded once. The alarm rule starts where the batches before left it (the ledger's
    stream states), and the alert is judged on the scored chunks as they were written: the
    scores file is not read back. The stream states it reaches are staged in the ledger, to
    become those later batches continue when the batch completes."""
    chunks: list[pl.DataFrame] = []
    stream = stream_of(ledger, scorer.manifest.key)
    summary = score_batch(
        scorer, batch, outbox, threshold=threshold, drift_rules=rules.drift, stream=stream, on_chunk=chunks.append
    )
    ledger.stage_states(batch.identity, scorer.manifest.key, stream.latest)
    crash_point("scored")
    scored = pl.concat(chunks, how="vertical_relaxed")
    chunks.clear()
    alert = raise_alert(ledger, scorer, batch, scored, summary, rules, stream.continued)
    return Judged(summary=summary, alert=alert, drift_alert=raise_drift_alert(ledger, scorer, batch, summary))


def raise_alert(  # noqa: PLR0913 - the batch, its scores and summary, the rules and the streams' memory
    ledger: Ledger,
    scorer: Scorer,
    batch: Batch,
    scored: pl.DataFrame,
    summary: BatchSummary,
    rules: AlertRules,
    streams: dict[str, EntityState] | None = None,
) -> Alert | None:
    """The batch's alert from its scored rows, judged by the threshold they were scored with
    (`summary`'s) and from the stream states the batch continued (`streams`): built and
    recorded once, then re-read on every re-run (so the per-entity cooldown never suppresses
    the alert a crashed run already raised)."""
    manifest = scorer.manifest
    existing = ledger.get_alert(alerts.alert_id(manifest.key, batch.identity))
    if existing is not None:
        return Alert.model_validate(existing)
    judged = ledger.judged_by_another_version(batch.identity, manifest.name, manifest.key)
    if judged is not None:  # N10: a promoted version re-scored the inbox's files and paged them again
        log.info("batch %s: judged by %s already; %s scores it without alerting again.", batch.file, judged, manifest.key)
        return None
    alert, times = alerts.evaluate(
        scored,
        manifest,
        rules,
        batch.ref(),
        last_alerts=ledger.last_alert_times(manifest.name),
        threshold=summary.threshold,
        streams=streams,
    )
    if alert is None:
        return None
    alert = alert.model_copy(update={"output": summary.output})
    full_disk_point("alert")  # tests: the ledger's disk fills as the alert is recorded
    ledger.record_alert(alert.alert_id, batch.identity, manifest.key, alert.model_dump(mode="json"), manifest.name, times)
    return alert


def raise_drift_alert(ledger: Ledger, scorer: Scorer, batch: Batch, summary: BatchSummary) -> DriftAlert | None:
    """The batch's drift alert, from its summary's drift report: built and recorded once, then
    re-read on every re-run, as anomaly alerts are (None: no drift, or a model without a reference).
    One alert per drift episode: a batch alerts only when a column or entity starts drifting
    that was not drifting in the batch before (N11: a recalibrated machine raised a drift
    warning at every sink on every batch); a batch without drift ends the episode."""
    if summary.drift is None:
        return None
    manifest = scorer.manifest
    existing = ledger.get_alert(alerts.alert_id(manifest.key, batch.identity, "drift"))
    drift = summary.drift
    items = {f"column {name}" for name in drift.drifting} | {f"entity {name}" for name in drift.entities}
    if existing is not None:  # a re-run: the same alert, and the episode as this batch left it
        ledger.record_drift(manifest.name, items)
        return DriftAlert.model_validate(existing)
    started = items - ledger.drifting(manifest.name)
    alert = alerts.evaluate_drift(drift, manifest, batch.ref()) if started else None
    if alert is not None:
        alert = alert.model_copy(update={"output": summary.output})
    ledger.record_drift(manifest.name, items, alert, batch.identity, manifest.key)
    return alert
