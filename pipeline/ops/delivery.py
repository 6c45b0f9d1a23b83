"""Alert delivery through Prefect: an event (for automations) and notification blocks.

Sinks are named as Prefect block slugs (`custom-webhook/ops`, `slack-webhook/oncall`, …) or
`prefect-event`. Each (alert, sink) pair is sent at most once by this project: the ledger
records a delivery right after it succeeds, and a retried or re-run flow skips it. A sink
that fails raises after the others were tried, so Prefect's retries resend only what is
missing; the scores are written before delivery starts and never depend on it."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from pydantic import ValidationError

from pipeline.core.faults import crash_point
from pipeline.ops.alerts import summary_text
from pipeline.ops.ledger import Ledger
from pipeline.ops.records import Alert, DriftAlert, alert_record

EVENT_SINK = "prefect-event"
ALERT_EVENT = "vad.alert.raised"
DRIFT_EVENT = "vad.drift.detected"
log = logging.getLogger(__name__)


class DeliveryError(RuntimeError):
    """Some sinks failed (`sinks`); those that succeeded are recorded and will not be sent again."""

    def __init__(self, message: str, sinks: list[str] | None = None) -> None:
        super().__init__(message)
        self.sinks = sinks or []


def emit_alert_event(alert: Alert | DriftAlert) -> None:
    """A Prefect event keyed by the alert (its id is derived from the alert id, so the
    server sees the same event if it is ever sent twice)."""
    from prefect.events import emit_event

    emit_event(
        event=DRIFT_EVENT if alert.kind == "drift" else ALERT_EVENT,
        resource={
            "prefect.resource.id": f"vad.model.{alert.model.name}",
            "prefect.resource.name": alert.model.name,
            "vad.model.version": alert.model.version,
            "vad.severity": alert.severity,
        },
        related=[
            {
                "prefect.resource.id": f"vad.batch.{alert.batch.sha256}",
                "prefect.resource.role": "batch",
                "prefect.resource.name": alert.batch.file,
            }
        ],
        payload=alert.model_dump(mode="json"),
        id=uuid.uuid5(uuid.NAMESPACE_URL, f"vad-alert:{alert.alert_id}"),
    )


def notify_block(slug: str, alert: Alert | DriftAlert) -> None:
    """Send through a saved Prefect block: a notification block gets (body, subject); the
    generic `Webhook` block gets the alert itself as JSON."""
    from prefect.blocks.abstract import NotificationBlock
    from prefect.blocks.core import Block
    from prefect.blocks.webhook import Webhook
    from prefect.utilities.asyncutils import run_coro_as_sync

    block = Block.load(slug)
    if isinstance(block, Webhook):
        response = run_coro_as_sync(block.call(payload=alert.model_dump(mode="json")))
        response.raise_for_status()  # type: ignore[attr-defined]  # an httpx.Response; the helper is untyped
    elif isinstance(block, NotificationBlock):  # either kind of alert, in words
        subject, body = summary_text(alert)
        block.notify(body=body, subject=subject)  # type: ignore[unused-coroutine]  # sync_compatible: runs here
    else:
        raise DeliveryError(f"block '{slug}' is neither a notification block nor a webhook block.")


_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?:[^@/\s'\"<>]*@)?(?P<host>[^/\s'\"<>?#]+)[^\s'\"<>]*")


def redact_urls(text: str) -> str:
    """`text` with every URL cut to its scheme and host: webhook URLs hold their secret in the
    path or query (and sometimes user:password@), and error messages quote them whole."""
    return _URL.sub(lambda m: f"{m['scheme']}{m['host']}/<redacted>", text)


class RedactedUrls(logging.Filter):
    """httpx logs each request's URL at INFO (`HTTP Request: POST http://user:pw@host/T0/token`),
    a webhook's secret included (R18): its records go on with their URLs cut, as our errors are."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact_urls(record.getMessage()), ()
        return True


logging.getLogger("httpx").addFilter(RedactedUrls())  # the sinks' requests: a filter on its own logger


def failure_reason(error: BaseException) -> str:
    """What went wrong, in one line with no secret: the message with its URLs cut (a webhook's
    URL carries its token), or the error's kind where the message is empty (an httpx timeout's
    is: the hanging sink's error said nothing, N35)."""
    return redact_urls(str(error)).strip() or type(error).__name__


def read_record(payload: dict[str, Any]) -> Alert | DriftAlert:
    """A recorded alert read back through its record (Alert, DriftAlert); one that does not
    fit is refused as a DeliveryError like any other: a record this release cannot read (N34:
    an older release's) must not stop scoring."""
    try:
        return alert_record(payload)
    except ValidationError as error:
        fields = ", ".join(".".join(map(str, where.get("loc", ()))) for where in error.errors())
        raise DeliveryError(
            f"alert {payload.get('alert_id')}: its record does not fit this release's alert ({fields}); "
            "it is left undelivered"
        ) from None


def refused(error: BaseException) -> bool:
    """Whether a sink answered and refused the request itself (HTTP 4xx, but for timeouts and
    rate limits), so sending it again unchanged fails again; anything else (5xx, a timeout, a
    lost connection) is the sink's, and time may mend it."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    return isinstance(status, int) and 400 <= status < 500 and status not in (408, 425, 429)


def deliver(alert: Alert | DriftAlert, sinks: list[str], ledger: Ledger) -> dict[str, str]:
    """Send the alert to every sink it has not reached yet; {sink: sent | already-sent |
    refused | dead-letter}. A sink that refuses the alert (`refused`) is counted against the
    alert (`Ledger.alert_refused`), not paused: the sink's other alerts go on. Other failures
    raise a DeliveryError naming the sinks, after every sink was tried."""
    outcome: dict[str, str] = {}
    failures: dict[str, str] = {}
    for sink in sinks:
        if ledger.delivered(alert.alert_id, sink):
            outcome[sink] = "already-sent"
            continue
        try:
            emit_alert_event(alert) if sink == EVENT_SINK else notify_block(sink, alert)
        except Exception as error:  # noqa: BLE001 - every sink is tried; failures are re-raised below
            reason = failure_reason(error)
            if refused(error):  # the sink is up and refuses this alert: the alert's failure, not the sink's
                outcome[sink] = "dead-letter" if ledger.alert_refused(alert.alert_id, sink, reason) else "refused"
                log.warning("alert %s: sink %s refused it (%s): %s", alert.alert_id, sink, outcome[sink], reason)
                continue
            failures[sink] = reason
            log.warning("alert %s: sink %s failed: %s", alert.alert_id, sink, failures[sink])
            continue
        crash_point("sent")
        ledger.mark_delivered(alert.alert_id, sink)
        outcome[sink] = "sent"
    if failures:
        raise DeliveryError(
            f"alert {alert.alert_id}: {len(failures)} sink(s) failed: "
            + "; ".join(f"{sink}: {reason}" for sink, reason in failures.items()),
            list(failures),
        )
    return outcome


class SinkBreaker:
    """A run's view of the ledger's circuit breaker (N36): the sinks paused when it started and
    those that failed since are skipped; a failure pauses a sink (1, 2, 4 … × `pause`, at most
    an hour), a delivery that works closes its circuit."""

    def __init__(self, ledger: Ledger, sinks: list[str], pause: float) -> None:
        self.ledger = ledger
        self.paused = ledger.paused_sinks(sinks, pause)  # {sink: (failures in a row, paused until)}
        self.broken = set(self.paused)

    def working(self, sinks: list[str]) -> list[str]:
        return [sink for sink in sinks if sink not in self.broken]

    def failed(self, sinks: list[str]) -> dict[str, int]:
        """Open the circuits of `sinks`; their failures in a row."""
        self.broken.update(sinks)
        return {sink: self.ledger.sink_failed(sink) for sink in sinks}

    def worked(self, outcome: dict[str, str]) -> None:
        """Close the circuits of the sinks that answered (a refusal is an answer too)."""
        for sink, how in outcome.items():
            if how in ("sent", "refused", "dead-letter"):
                self.ledger.sink_worked(sink)
