"""Alarm rules: from a scored batch to at most one alert, with what an on-call engineer needs
(model version, batch, counts, top rows with keys and time, contributing features, the
threshold used, severity). Pure functions of the scored frame and the ledger's memory of
earlier alerts, so a re-run builds the same alert."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from pipeline.artifact import contract
from pipeline.artifact.drift import DriftReport
from pipeline.artifact.manifest import Manifest
from pipeline.core.config import AlertRules
from pipeline.ops.records import (
    Alert,
    AlertCounts,
    AlertingEntity,
    AlertRow,
    BatchRef,
    ColumnDrift,
    DriftAlert,
    FeatureShare,
    ModelRef,
    Severity,
    ThresholdUsed,
)
from pipeline.runtime.steps import EntityState

BATCH_ENTITY = "*"  # tabular mode: the whole batch is one entity
# An alarm time this far past both the wall clock and the batch's median time comes from a
# device clock that ran ahead (2099): the alert is raised, but the time is not kept for the
# cooldown, where it would stand for ever. A whole batch ahead of the wall clock is taken as
# the host's clock being behind (N40: an RTC reset to 2020 turned every cooldown off), and said.
FUTURE_SLACK = timedelta(days=1)
log = logging.getLogger(__name__)


def alert_id(model_version: str, identity: str, kind: str = "anomaly") -> str:
    """One alert of each kind per batch and model version: re-runs and retries reuse the id
    (an anomaly alert's id is what it was before drift alerts existed)."""
    key = f"{model_version}\x1f{identity}" + ("" if kind == "anomaly" else f"\x1f{kind}")
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def evaluate_drift(drift: DriftReport, manifest: Manifest, batch: BatchRef) -> DriftAlert | None:
    """The batch's drift alert from its DriftReport, or None when nothing passed the rules it
    was measured with."""
    if not drift.drifted:
        return None
    return DriftAlert(
        alert_id=alert_id(manifest.key, batch.sha256, "drift"),
        model=ModelRef(name=manifest.name, version=manifest.version),
        batch=batch,
        rows=drift.rows,
        features=[ColumnDrift(feature=name, psi=drift.features[name]) for name in drift.drifting],
        entities=drift.entities,
        latent_psi=drift.latent,
        score_psi=drift.score,
        rules=drift.rules,
    )


def severity(peak: float, threshold: float, normal: float, rules: AlertRules) -> tuple[Severity, float]:
    """(level, exceedance): distance past the threshold in units of (threshold − normal)."""
    spread = max(threshold - normal, 1e-9)
    exceedance = (peak - threshold) / spread
    level: Severity = "critical" if exceedance >= rules.critical_at else "high" if exceedance >= rules.high_at else "warning"
    return level, float(exceedance)


def _utc(moment: datetime) -> datetime:
    """Aware in UTC, so times with and without a zone compare (naive ones are taken as UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _trusted_horizon(times: pl.Series, batch_file: str) -> datetime | None:
    """The latest alarm time kept for the cooldown: a day past the later of the host's clock
    and the batch's median time (None: the times are not datetimes). A batch whose median is
    past the host's clock says so: the host's clock is likely wrong."""
    if not times.dtype.is_temporal() or times.drop_nulls().is_empty():
        return None
    middle, now = times.drop_nulls().median(), datetime.now(UTC)
    if not isinstance(middle, datetime):  # a Date column: no clock to compare
        return None
    middle = _utc(middle)
    if middle > now + FUTURE_SLACK:
        log.warning(
            "batch %s: its times run %s ahead of this host's clock (%s): is the host's clock right? "
            "The cooldown follows the data's times.",
            batch_file,
            middle - now,
            now.isoformat(timespec="seconds"),
        )
    return max(now, middle) + FUTURE_SLACK


def _iso(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def evaluate(  # noqa: PLR0913 - keyword-only: the memory of earlier batches and the threshold used
    scored: pl.DataFrame,
    manifest: Manifest,
    rules: AlertRules,
    batch: BatchRef,
    *,
    last_alerts: dict[str, str],
    threshold: float | None = None,
    streams: dict[str, EntityState] | None = None,
) -> tuple[Alert | None, dict[str, str]]:
    """The batch's alert (None when no entity alarms, or every alarming one is cooling down)
    and the alarm time of each alerting entity (for the next cooldown). An entity alarms when
    one of its anomalous episodes is confirmed in this batch (`confirmations`), counting rows
    before the batch through the stream states it continued (`streams`): once per episode."""
    schema = manifest.feature_schema
    limit = manifest.threshold.value if threshold is None else threshold
    entity_col = schema.entity_column if schema.mode == "sensor" else None
    time_col = schema.time_column if schema.mode == "sensor" else None
    frame = scored.with_columns(_entity=pl.col(entity_col).cast(pl.String) if entity_col else pl.lit(BATCH_ENTITY))
    judged = _judge_entities(frame, rules, time_col, batch.file, last_alerts, streams or {})
    if not judged.alerting:
        return None, {}
    in_alert = frame.filter(pl.col("_entity").is_in([a.entity for a in judged.alerting]))
    peak = _peak(in_alert, contract.SCORE)
    level, exceedance = severity(peak, limit, manifest.validation.normal_score, rules)
    feature_columns = contract.feature_columns(scored.columns)
    anomalous = in_alert.filter(pl.col(contract.IS_ANOMALY))
    alert = Alert(
        alert_id=alert_id(manifest.key, batch.sha256),
        model=ModelRef(name=manifest.name, version=manifest.version),
        batch=batch,
        severity=level,
        exceedance=round(exceedance, 4),
        peak_score=peak,
        peak_percentile=_peak(in_alert, contract.PERCENTILE) if contract.PERCENTILE in in_alert.columns else None,
        threshold=ThresholdUsed(value=limit, method=manifest.threshold.method, overridden=limit != manifest.threshold.value),
        counts=AlertCounts(
            rows=scored.height,
            anomalous_rows=int(scored.get_column(contract.IS_ANOMALY).sum()),
            alerting_entities=len(judged.alerting),
            suppressed_entities=len(judged.suppressed),
        ),
        entities=judged.alerting,
        suppressed=judged.suppressed,
        top_rows=_top_rows(anomalous, [*schema.key_columns, contract.ROW], feature_columns, rules.top_rows),
        top_features=top_features(anomalous, feature_columns),
        rules=rules,
    )
    return alert, judged.times


def _peak(frame: pl.DataFrame, column: str) -> float:
    return float(frame.select(pl.col(column).max()).item())


@dataclass
class _Judged:
    """The entities that alarm (and alert), those cooling down, and the alarm times kept."""

    alerting: list[AlertingEntity] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)
    times: dict[str, str] = field(default_factory=dict)


def _judge_entities(
    frame: pl.DataFrame,
    rules: AlertRules,
    time_col: str | None,
    batch_file: str,
    last_alerts: dict[str, str],
    streams: dict[str, EntityState],
) -> _Judged:
    """Which entities of `frame` (its `_entity` column) alarm by `rules` (`confirmations`), and
    which of those are still cooling down from an alert in `last_alerts`."""
    judged = _Judged()
    horizon = _trusted_horizon(frame.get_column(time_col), batch_file) if time_col else None
    has_alarms = contract.ALARM in frame.columns
    for (entity,), rows in frame.partition_by("_entity", maintain_order=True, as_dict=True).items():
        flags = rows.get_column(contract.IS_ANOMALY).to_numpy()
        onsets = rows.get_column(contract.ALARM).to_numpy() if has_alarms else None
        confirmed = confirmations(flags, onsets, rules, streams.get(entity))
        if not confirmed:
            continue
        first_time = rows.get_column(time_col)[confirmed[0]] if time_col else None
        if time_col and _cooling_down(first_time, last_alerts.get(entity), rules):
            judged.suppressed.append(entity)
            continue
        judged.alerting.append(
            AlertingEntity(
                entity=entity, first_alarm=_iso(first_time) if time_col else None, anomalous_rows=int(flags.sum())
            )
        )
        if not (isinstance(first_time, datetime) and horizon is not None and _utc(first_time) > horizon):
            judged.times[entity] = _iso(first_time) if time_col else ""
    return judged


def confirmations(
    flags: np.ndarray, onsets: np.ndarray | None, rules: AlertRules, carried: EntityState | None = None
) -> list[int]:
    """The rows of one entity's batch (in time order) where an anomalous episode is confirmed:
    the first row from the episode's onset (an `alarm` row) where `min_anomalous` flagged rows
    fall within the last `within` rows, before the next onset. Rows are counted across batches
    through the entity's stream state (`carried`: its recent flags, rows since its last onset),
    so an episode that starts at a batch's last row pages in the next, and once, as it does in
    the whole stream. An onset older than the flags kept (RECENT_FLAGS, less `within`) counts as
    settled. Without onsets (tables, scores of older releases): the first row where the count
    is reached."""
    tail = np.frombuffer(carried.recent_flags.encode(), np.uint8) == ord("1") if carried is not None else np.zeros(0, bool)
    combined = np.concatenate([tail, np.asarray(flags, bool)])
    counts = np.concatenate([[0], np.cumsum(combined)])
    ends = np.arange(1, len(combined) + 1)
    reached = counts[ends] - counts[np.maximum(ends - rules.within, 0)] >= rules.min_anomalous
    offset = len(tail)
    if onsets is None:
        return [int(i) for i in np.flatnonzero(reached[offset:])[:1]]
    starts = (offset + np.flatnonzero(onsets)).tolist()
    if carried is not None and carried.since_alarm is not None:
        onset = offset - carried.since_alarm - 1  # where the last onset before the batch is in `combined`
        if onset >= rules.within - 1 and not reached[onset:offset].any():
            starts.insert(0, onset)  # an episode not confirmed yet
    confirmed: list[int] = []
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else len(combined)
        hit = np.flatnonzero(reached[max(start, offset) : stop])
        if len(hit):
            confirmed.append(max(start, offset) + int(hit[0]) - offset)
    return confirmed


def _cooling_down(first_time: object, previous: str | None, rules: AlertRules) -> bool:
    """Whether an alarm at `first_time` falls within the cooldown of the entity's alert at
    `previous`. Only an earlier alarm cools an entity down: a later one (a clock that ran ahead,
    or batches out of order) would otherwise silence it until its own clock came round."""
    if previous is None or not isinstance(first_time, datetime):
        return False
    since = _utc(first_time) - _utc(datetime.fromisoformat(previous))
    return timedelta(0) <= since < timedelta(minutes=rules.cooldown_minutes)


def _top_rows(anomalous: pl.DataFrame, keys: list[str], feature_columns: list[str], limit: int) -> list[AlertRow]:
    """The highest-scoring anomalous rows with their keys (those present) and top features."""
    key_columns = [c for c in keys if c in anomalous.columns]
    return [
        AlertRow.model_validate(  # the key columns are named as in the data: extra fields
            {
                **{k: _iso(r[k]) for k in key_columns},
                "score": r[contract.SCORE],
                "features": [FeatureShare(feature=r[f], share=r[contract.share_of(f)]) for f in feature_columns],
            }
        )
        for r in anomalous.sort(contract.SCORE, descending=True).head(limit).iter_rows(named=True)
    ]


def top_features(anomalous: pl.DataFrame, feature_columns: list[str], limit: int = 5) -> list[FeatureShare]:
    """Source columns ranked by their summed share of the anomalous rows' scores."""
    if anomalous.is_empty() or not feature_columns:
        return []
    long = pl.concat([anomalous.select(feature=pl.col(f), share=pl.col(contract.share_of(f))) for f in feature_columns])
    ranked = (
        long.group_by("feature")
        .agg(pl.col("share").sum() / anomalous.height)
        .sort("share", "feature", descending=[True, False])
        .head(limit)
    )
    return [FeatureShare(feature=feature, share=round(share, 4)) for feature, share in ranked.iter_rows()]


def summary_text(alert: Alert | DriftAlert) -> tuple[str, str]:
    """(subject, body) for notification blocks: short, readable in Slack or an e-mail."""
    if isinstance(alert, DriftAlert):
        return drift_text(alert)
    subject = (
        f"[{alert.severity.upper()}] {alert.model.name} v{alert.model.version}: "
        f"{alert.counts.anomalous_rows} anomalous rows in {alert.batch.file}"
    )
    lines = [
        subject,
        f"alert id: {alert.alert_id}",
        f"threshold {alert.threshold.value:.4g} ({alert.threshold.method}), "
        f"peak score {alert.peak_score:.4g}, exceedance {alert.exceedance:.2f}",
        "entities: "
        + ", ".join(
            f"{e.entity} ({e.anomalous_rows} rows" + (f", from {e.first_alarm})" if e.first_alarm else ")")
            for e in alert.entities
        ),
        "top features: " + ", ".join(f"{f.feature} {f.share:.0%}" for f in alert.top_features),
    ]
    return subject, "\n".join(lines)


def drift_text(alert: DriftAlert) -> tuple[str, str]:
    named = [f.feature for f in alert.features] or sorted({c for shifted in alert.entities.values() for c in shifted})
    subject = (
        f"[DRIFT] {alert.model.name} v{alert.model.version}: {', '.join(named)} moved away from the "
        f"training data in {alert.batch.file}"
    )
    lines = [
        subject,
        f"alert id: {alert.alert_id}",
        "columns (PSI, limit "
        + f"{alert.rules.psi:g}): "
        + (", ".join(f"{f.feature} {f.psi:.2f}" for f in alert.features) or "none batch-wide"),
        *(
            f"entity {entity}: " + ", ".join(f"{c} {v:+.1f}" for c, v in shifted.items())
            for entity, shifted in alert.entities.items()
        ),
        f"latent PSI {alert.latent_psi:.2f}, score PSI {alert.score_psi:.2f}; "
        'consider retraining on recent data (README, "Drift").',
    ]
    return subject, "\n".join(lines)
