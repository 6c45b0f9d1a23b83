"""The records that travel between the inbox, the ledger, the sinks and the flows, typed: a
batch found in the inbox, the summary of its scoring, and the alert it raised. Frozen pydantic models, so a flow task hands
Prefect plain JSON (`model_dump()`) and gets the same record back (`model_validate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from pipeline.artifact.drift import DriftReport
from pipeline.core.config import AlertRules, DriftRules


class Batch(BaseModel):
    """A file in the inbox, named by the sha256 of its bytes. `size` and `mtime_ns` describe
    the file as it was hashed; scoring refuses a file changed since (-1: not recorded)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    identity: str
    size: int = -1
    mtime_ns: int = -1

    def ref(self) -> BatchRef:
        """The batch as alerts name it: its file's name and content hash."""
        return BatchRef(file=Path(self.file).name, sha256=self.identity)


class BatchSummary(BaseModel):
    """What scoring one batch produced: its scores file and the counts an operator reads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    output: str
    rows: int
    anomalies: int
    threshold: float
    alarms: int = 0  # onsets of anomalous episodes (the scores' `alarm` column); absent in older records
    unjudged: int = 0  # sensor steps on padded windows, not past their wide margin (the scores' `judged`)
    inputs: str  # the input repairs, in words (InputReport.summary)
    failed_entities: dict[str, str] = {}  # entities left out of the batch (their rows could not be scored): why
    drift: DriftReport | None = None  # None: the model has no drift reference


class ClaimOutcome(BaseModel):
    """Whether this run scores a batch, and why not when the batch was set aside just now."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    granted: bool
    error: str | None = None  # set aside: the process scoring it died on every attempt


Severity = Literal["warning", "high", "critical"]


class ModelRef(BaseModel):
    name: str
    version: str


class BatchRef(BaseModel):
    file: str  # the batch's file name
    sha256: str


class ThresholdUsed(BaseModel):
    value: float
    method: str
    overridden: bool  # the batch was judged by another threshold than the model's


class AlertCounts(BaseModel):
    rows: int
    anomalous_rows: int
    alerting_entities: int
    suppressed_entities: int


class AlertingEntity(BaseModel):
    entity: str
    first_alarm: str | None  # ISO time of the first alarming row (sensor models)
    anomalous_rows: int


class FeatureShare(BaseModel):
    feature: str
    share: float


class AlertRow(BaseModel):
    """One of the alert's top rows: its key columns (named as in the data), score, features."""

    model_config = ConfigDict(extra="allow")

    score: float
    features: list[FeatureShare]


class Alert(BaseModel):
    """The alert a batch raises: what an on-call engineer needs, as one JSON document. Built
    through this model (`pipeline.ops.alerts.evaluate`) and read back through it (delivery,
    notification text), so every sink and the ledger see the same schema."""

    kind: Literal["anomaly"] = "anomaly"
    alert_id: str
    model: ModelRef
    batch: BatchRef
    severity: Severity
    exceedance: float
    peak_score: float
    peak_percentile: float | None = None  # absent from alerts recorded by releases before it (N34)
    threshold: ThresholdUsed
    counts: AlertCounts
    entities: list[AlertingEntity]
    suppressed: list[str]  # entities still cooling down from an earlier alert
    top_rows: list[AlertRow]
    top_features: list[FeatureShare]
    rules: AlertRules
    output: str | None = None  # the scores file, once the inbox has recorded the alert


class ColumnDrift(BaseModel):
    feature: str
    psi: float


class DriftAlert(BaseModel):
    """The alert a batch raises when its data moved away from the model's training data:
    the columns past the rules (a table's PSI; per entity of a fleet, how far the median
    moved, in spreads of training medians over as many readings), with the latent and score
    PSI for context. Its own kind, event and id, so an anomaly alert and a drift alert on one
    batch never replace each other."""

    kind: Literal["drift"] = "drift"
    alert_id: str
    model: ModelRef
    batch: BatchRef
    severity: Literal["warning"] = "warning"  # drift asks for a look (retraining), not a page
    rows: int
    features: list[ColumnDrift]  # batch-wide, the largest first
    entities: dict[str, dict[str, float]]  # entity → its shifted columns (in spreads of training medians)
    latent_psi: float
    score_psi: float
    rules: DriftRules
    output: str | None = None


class Judged(BaseModel):
    """One batch scored and judged: its summary and the alerts it raised (None: none)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    summary: BatchSummary
    alert: Alert | None = None
    drift_alert: DriftAlert | None = None


def alert_record(payload: dict[str, Any]) -> Alert | DriftAlert:
    """Read an alert of either kind back through its model (alerts recorded before drift
    alerts existed carry no `kind`: they are anomaly alerts)."""
    return DriftAlert.model_validate(payload) if payload.get("kind") == "drift" else Alert.model_validate(payload)
