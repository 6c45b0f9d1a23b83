"""Prefect flow `vad-score`: score every new batch in an inbox with one model version, write
the results, raise and deliver alerts. Each task wraps one library call (`pipeline.ops.inbox`,
`pipeline.ops.delivery`, `pipeline.ops.reports`); exactly-once lives in the ledger, not here.

Run once:        python -m flows.score --inbox data/inbox --model exported/demo-sensors
On a schedule:   python -m flows.serve   (README, "Scheduled scoring")"""

import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import polars as pl
import typer
from prefect import Task, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.schemas.objects import State, TaskRun
from prefect.tasks import exponential_backoff

from pipeline.artifact.manifest import resolve_model_dir
from pipeline.core.config import AlertRules
from pipeline.core.errors import DataError, exit_on_user_error
from pipeline.core.faults import crash_point, is_transient
from pipeline.data.ingest import is_glob
from pipeline.data.schema import FeatureSchema
from pipeline.ops import delivery, inbox, reports
from pipeline.ops.alerts import summary_text
from pipeline.ops.ledger import MAX_ATTEMPTS, SINK_PAUSE_SECONDS, Ledger
from pipeline.ops.records import Alert, Batch, BatchSummary, ClaimOutcome, DriftAlert, Judged
from pipeline.runtime import Missing, Provider, Scorer


def only_transient(task: Task[Any, Any], task_run: TaskRun, state: State) -> bool:
    """Retry what time can mend (a ledger locked by another run, a full disk, a dropped
    connection: `is_transient`), never a batch's own fault, which fails the same way each time
    and would hold the run up for the backoff's 14 s."""
    try:
        state.result()
    except Exception as error:  # noqa: BLE001 - the failed run's own exception, judged here
        return is_transient(error)
    return False


# Retries with backoff only where the outside world can fail (files, network).
IO_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": only_transient,
}
# Results as JSON (never pickle) in Prefect's result storage: a retried flow run reuses them.
PERSIST: dict[str, Any] = {"persist_result": True, "result_serializer": "json"}


def _scorer(model_dir: str, provider: Provider, missing: Optional[Missing] = None) -> Scorer:
    """The model, loaded once per process for each provider and missing-value policy: every
    argument is passed on positionally, so `_scorer(d, p)` and `_scorer(d, p, None)` share
    one cache entry (keyed two ways, the model loaded twice per run)."""
    return _loaded(model_dir, provider, missing)


@lru_cache(maxsize=8)
def _loaded(model_dir: str, provider: Provider, missing: Optional[Missing]) -> Scorer:
    return Scorer.load(model_dir, provider=provider, missing=missing)


@task(**IO_RETRIES, **PERSIST)
def find_batches(inbox_path: str, ledger: Ledger) -> list[Batch]:
    return inbox.find_batches(inbox_path, ledger)


@task(**IO_RETRIES, **PERSIST)  # a ledger locked by another run for longer than SQLite waits
def claim_batch(ledger: Ledger, model_key: str, batch: Batch, force: bool) -> ClaimOutcome:
    """Whether this run scores the batch; a batch set aside now (its process died on every
    attempt) is logged as an error and named in the run's failure."""
    claim = ledger.claim(batch.identity, model_key, batch.file, force=force)
    name = Path(batch.file).name
    get_run_logger().info("batch %s: %s", name, claim.reason)
    if claim.reason == "dead-letter":
        return ClaimOutcome(
            granted=False,
            error=f"set aside: the process scoring it died {MAX_ATTEMPTS} times (out of "
            f"memory? a native crash?); `vad release {name} --outbox {ledger.path.parent}` takes it again",
        )
    return ClaimOutcome(granted=claim.granted)


@task(**IO_RETRIES)
def rebuild_ledger(ledger: Ledger, outbox: str, model_key: str, batches: list[Batch]) -> int:
    return inbox.rebuild_ledger(ledger, batches, outbox, model_key)


@task(**IO_RETRIES, **PERSIST)
def score_and_judge(ledger: Ledger, model_dir: str, batch: Batch, outbox: str, options: "ScoreRunOptions") -> Judged:
    """The batch scored, and its alerts judged by the threshold it was scored with."""
    scorer = _scorer(model_dir, options.provider, options.missing)
    return inbox.score_and_judge(ledger, scorer, batch, outbox, options.rules, threshold=options.threshold)


# One quick retry: a sink still failing is paused by the ledger's circuit breaker and retried
# by a later run, so backing off here would only hold this run up (N36).
@task(retries=1, retry_delay_seconds=2, **PERSIST)
def deliver_alert(alert: Alert | DriftAlert, sinks: list[str], ledger: Ledger) -> dict[str, str]:
    return delivery.deliver(alert, sinks, ledger)


@task(**IO_RETRIES)  # the ledger may be locked by another run for a while
def complete_batch(ledger: Ledger, model_key: str, batch: Batch, summary: BatchSummary) -> None:
    ledger.complete(batch.identity, model_key, summary.output, summary.model_dump(mode="json"))


@task(**IO_RETRIES)
def archive_batches(batches: list[Batch], inbox_path: str, archive: str) -> int:
    """Move scored batches' files out of the inbox; a file that cannot be moved stays and is
    named (its scores stand, and the next run tries again). Returns how many moved."""
    moved = 0
    for batch in batches:
        try:
            moved += inbox.archive_batch(batch, inbox_path, archive) is not None
        except OSError as error:
            get_run_logger().warning("batch %s scored but not archived: %s", Path(batch.file).name, error)
    return moved


@task
def fail_batch(ledger: Ledger, model_key: str, batch: Batch, error: str, transient: bool) -> str:
    """Set the batch aside (its own fault: the same bytes fail the same way), or, for the
    machine's fault (a full disk), leave it to the next run; returns the status recorded."""
    if transient:
        return ledger.release(batch.identity, model_key, error)
    ledger.fail(batch.identity, model_key, error)
    return "failed"


@task
def publish_reports(model_dir: str, provider: Provider, summaries: list[BatchSummary], alerts: list[Alert]) -> None:
    """Flow artifacts: the run's report (histogram, scores over time), top anomalies, each alert.
    The threshold shown is the one the batches were scored with (every summary carries it)."""
    manifest = _scorer(model_dir, provider).manifest
    scored = pl.concat([pl.read_parquet(s.output) for s in summaries], how="diagonal_relaxed")
    create_markdown_artifact(
        key="vad-scoring-report",
        markdown=reports.scoring_report(manifest, scored, summaries, alerts, summaries[0].threshold),
        description=f"Batches scored by {manifest.key}",
    )
    create_table_artifact(
        key="vad-top-anomalies",
        table=reports.top_anomalies(scored),
        description="Highest-scoring anomalous rows, with their top contributing features",
    )
    drifts = [s for s in summaries if s.drift is not None]
    if drifts:
        create_markdown_artifact(
            key="vad-drift",
            markdown=reports.drift_report(manifest, drifts),
            description=f"Drift of the batches from {manifest.key}'s training data",
        )
    for alert in alerts:
        subject, body = summary_text(alert)
        create_markdown_artifact(
            key="vad-alert", markdown=f"# {subject}\n\n```\n{body}\n```", description=f"alert {alert.alert_id}"
        )


def check_inbox(inbox_path: str) -> None:
    """A missing inbox folder is the user's to create: refused at once (no retries: it will not appear)."""
    if not Path(inbox_path).exists() and not is_glob(inbox_path):
        raise DataError(
            f"the inbox '{inbox_path}' does not exist: create the folder and drop batches into it "
            "(python -m flows.score and flows.serve create it)."
        )


@dataclass(frozen=True)
class ScoreRunOptions:
    """How each batch of a run is scored and judged (the flow's parameters)."""

    rules: AlertRules
    threshold: Optional[float]
    force: bool
    provider: Provider
    missing: Optional[Missing]


@dataclass
class ScoringRun:
    """One run of the scoring flow: the ledger it opened, its sinks' breaker, and what it scored,
    raised and could not score. Its steps call the flow's tasks; what a batch's outcome means
    (claimed, done, set aside, owed to a sink) stays in the library and the ledger."""

    ledger: Ledger
    model_dir: str
    model_key: str
    outbox: str
    sinks: list[str]
    breaker: delivery.SinkBreaker
    schema: FeatureSchema  # the model's: how its batches are ordered into a stream
    summaries: list[BatchSummary] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    drift_alerts: list[DriftAlert] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @classmethod
    def start(
        cls, model_dir: str, provider: Provider, outbox: str, sinks: list[str], backfill: bool, sink_pause: float
    ) -> "ScoringRun":
        """Open the ledger (once per run: each change is its own transaction, so tasks on other
        threads or processes share it), register the sinks and say which are new or paused."""
        logger, ledger = get_run_logger(), inbox.open_ledger(outbox)
        for sink in ledger.register_sinks(sinks, backfill=backfill):
            since = (
                "every recorded alert (backfill)"
                if backfill
                else "the alerts raised from now on (--backfill sends the earlier ones too)"
            )
            logger.info("sink %s is new: it receives %s", sink, since)
        breaker = delivery.SinkBreaker(ledger, sinks, sink_pause)  # a failing sink is paused, its alerts wait
        for sink, (failures, until) in breaker.paused.items():
            until_text = datetime.fromtimestamp(until, UTC).isoformat(timespec="seconds")
            logger.warning(
                "sink %s is paused after %d failure(s) in a row, until %s; its alerts wait for it",
                *(sink, failures, until_text),
            )
        scorer = _scorer(model_dir, provider)
        return cls(ledger, model_dir, scorer.manifest.key, outbox, sinks, breaker, scorer.schema)

    def waiting(self, inbox_path: str, force: bool, archive: Optional[str]) -> list[Batch]:
        """The inbox's batches this model version has not settled, in stream order (a sensor
        stream's in data time, a poison batch last: `inbox.in_stream_order`). With `archive`,
        settled batches still in the inbox move there."""
        attempts = self.ledger.pending_attempts(self.model_key)
        settled = {} if force else self.ledger.settled(self.model_key)
        found = find_batches(inbox_path, self.ledger)
        if archive:  # scored before archiving was asked for, or by a run that died before it archived
            archive_batches([b for b in found if settled.get(b.identity) == "done"], inbox_path, archive)
        return inbox.in_stream_order([b for b in found if b.identity not in settled], self.schema, attempts)

    def score(self, batch: Batch, options: ScoreRunOptions) -> bool:
        """Claim, score and judge one batch, deliver its alerts, record it done; False when it
        was not scored (claimed elsewhere, set aside, or failed: a bad batch holds up no other)."""
        logger, name = get_run_logger(), Path(batch.file).name
        claim = claim_batch(self.ledger, self.model_key, batch, options.force)
        if claim.error:  # set aside now: this run shows it once, later runs skip it as `failed`
            logger.error("batch %s: %s", batch.file, claim.error)
            self.failed.append(f"{name}: {claim.error}")
        if not claim.granted:
            return False
        try:
            judged = score_and_judge(self.ledger, self.model_dir, batch, self.outbox, options)
        except Exception as error:  # noqa: BLE001 - one bad batch (a poison batch) must not hold up the others
            status = fail_batch(self.ledger, self.model_key, batch, str(error), is_transient(error))
            then = "the next run retries it" if status == "retry" else "set aside until forced"
            logger.error("batch %s failed (%s): %s", batch.file, then, error)
            self.failed.append(f"{name}: {error}")
            return False
        for entity, why in judged.summary.failed_entities.items():  # the batch stands: the others were scored
            logger.warning("batch %s: entity %s not scored: %s", name, entity, why)
        if judged.alert is not None:
            self.alerts.append(judged.alert)
            crash_point("alerted")
            self.deliver(judged.alert)
            crash_point("delivered")
        if judged.drift_alert is not None:  # its own kind and event; no effect on the anomaly alert
            logger.warning("batch %s drifted: %s", name, summary_text(judged.drift_alert)[0])
            self.drift_alerts.append(judged.drift_alert)
            self.deliver(judged.drift_alert)
        complete_batch(self.ledger, self.model_key, batch, judged.summary)
        self.summaries.append(judged.summary)
        return True

    def deliver(self, alert: Alert | DriftAlert, to: Optional[list[str]] = None) -> None:
        """Send to the working sinks among `to` (default: the run's); a failing sink is paused."""
        working = self.breaker.working(self.sinks if to is None else to)
        if not working:
            return
        try:
            outcome = deliver_alert(alert, working, self.ledger)
        except delivery.DeliveryError as error:  # the scores stand; a later run retries delivery
            get_run_logger().error("%s", error)
            for sink, failures in self.breaker.failed(error.sinks).items():
                get_run_logger().warning("sink %s paused (failure %d in a row); a later run retries it", sink, failures)
            outcome = {sink: "sent" for sink in working if sink not in error.sinks} if error.sinks else {}
        self.breaker.worked(outcome)

    def deliver_owed(self) -> None:
        """Deliveries that failed in earlier runs, after this run's batches: a sink that is down
        never delays scoring (N36: 22 pending alerts to a dead sink took 362 s before any batch)."""
        raised = {a.alert_id for a in self.alerts} | {a.alert_id for a in self.drift_alerts}
        for payload, owing in self.ledger.owed(self.sinks):
            try:  # here, not in the task: a record this release cannot read is not retried
                earlier = delivery.read_record(payload)
            except delivery.DeliveryError as error:
                get_run_logger().error("%s", error)
                continue
            if earlier.alert_id not in raised:
                self.deliver(earlier, owing)

    def result(self) -> dict[str, Any]:
        """JSON: the run's result in Prefect and what `python -m flows.score` prints."""
        return {
            "model": self.model_key,
            "scored": [s.model_dump(mode="json") for s in self.summaries],
            "alerts": [a.alert_id for a in self.alerts],
            "drift_alerts": [a.alert_id for a in self.drift_alerts],
        }


@flow(name="vad-score")
def score_flow(  # noqa: PLR0913 - a flow's parameters are its form in the Prefect UI and its deployment's parameters
    inbox_path: str = "data/inbox",
    outbox: str = "runs/scoring",
    model: str = "exported/demo-sensors",
    sinks: list[str] = [delivery.EVENT_SINK],  # noqa: B006 - a Prefect parameter, never mutated
    rules: AlertRules = AlertRules(),
    threshold: Optional[float] = None,
    force: bool = False,
    provider: Provider = "auto",
    missing: Optional[Missing] = None,
    rebuild: bool = False,
    backfill: bool = False,
    sink_pause: float = SINK_PAUSE_SECONDS,
    archive: Optional[str] = None,
) -> dict[str, Any]:
    """Score each batch of `inbox_path` not yet scored by this model version; alert on it.
    `missing="impute"` fills a batch's gaps with the training medians instead of failing it.
    An outbox that holds scores but lost its ledger is refused unless `rebuild`: then the
    batches whose scores are there are recorded as done, neither scored nor alerted again.
    A sink new to this outbox receives the alerts raised from now on, or with `backfill` every
    recorded alert it has not received. A sink that fails is paused for `sink_pause` seconds,
    doubled with each failure in a row (at most an hour). With `archive`, each scored batch's
    file moves there (at its path under the inbox), so the inbox holds only what waits."""
    check_inbox(inbox_path)
    model_dir = str(resolve_model_dir(model))
    inbox.check_ledger(outbox, rebuild)
    if archive:
        inbox.check_archive(inbox_path, archive)
    run = ScoringRun.start(model_dir, provider, outbox, sinks, backfill, sink_pause)
    if rebuild:
        rebuilt = rebuild_ledger(run.ledger, outbox, run.model_key, find_batches(inbox_path, run.ledger))
        get_run_logger().info("ledger rebuilt: %d batch(es) already scored", rebuilt)
    options = ScoreRunOptions(rules, threshold, force, provider, missing)
    for batch in run.waiting(inbox_path, force, archive):
        if run.score(batch, options) and archive:
            archive_batches([batch], inbox_path, archive)
    run.deliver_owed()
    if run.summaries:
        publish_reports(model_dir, provider, run.summaries, run.alerts)
    get_run_logger().info("%s: %d batch(es) scored, %d alert(s)", run.model_key, len(run.summaries), len(run.alerts))
    if run.failed:  # the run shows as failed; the other batches' results stand
        raise RuntimeError(f"{len(run.failed)} batch(es) could not be scored: " + "; ".join(run.failed))
    return run.result()


def main(  # noqa: PLR0913 - a command's options are its signature
    inbox_path: str = typer.Option("data/inbox", "--inbox", help="Folder or glob of batch files."),
    outbox: str = typer.Option("runs/scoring", help="Scores, ledger and alerts go here."),
    model: str = typer.Option("exported/demo-sensors", help="Model folder (its latest version) or a version folder."),
    sink: list[str] = typer.Option([delivery.EVENT_SINK], help="Alert sink: prefect-event or a block slug."),
    force: bool = typer.Option(False, help="Re-score batches this model version already scored."),
    rebuild_ledger: bool = typer.Option(
        False, "--rebuild-ledger", help=("The ledger was lost: record the batches whose scores are in the outbox as done.")
    ),
    backfill: bool = typer.Option(
        False, help=("Send a new sink every recorded alert it has not received (default: from now on).")
    ),
    sink_pause: float = typer.Option(
        SINK_PAUSE_SECONDS, min=0, help=("Seconds a failing sink is paused (doubled per failure in a row, at most an hour).")
    ),
    archive: Optional[str] = typer.Option(None, help=("Move each scored batch's file here (beside the inbox, not in it).")),
) -> None:
    """Run the scoring flow once (creating the inbox folder if it does not exist yet)."""
    if not is_glob(inbox_path) and not Path(inbox_path).exists():  # N6: said, not silent
        Path(inbox_path).mkdir(parents=True)
        print(f"inbox '{inbox_path}' did not exist: created it, empty; drop batches into it.", file=sys.stderr)
    result = score_flow(
        inbox_path=inbox_path,
        outbox=outbox,
        model=model,
        sinks=sink,
        force=force,
        rebuild=rebuild_ledger,
        backfill=backfill,
        sink_pause=sink_pause,
        archive=archive,
    )
    print(json.dumps(result, default=str))  # JSON, for scripts


if __name__ == "__main__":
    exit_on_user_error(lambda: typer.run(main))
