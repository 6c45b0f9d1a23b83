"""The scoring report as one self-contained HTML page, for people who open it in a browser
(`vad score --report` writes it beside the Markdown one): counts per file, the score
histogram, scores over time per entity with the alarm episodes shaded, the episodes, the top
anomalies with their readings beside the training range, the model's and the threshold's
facts, the batch's drift, and why an alert was or was not raised.
Plots are inline PNGs and the page runs no script, so it opens anywhere, offline."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
from jinja2 import Environment

from pipeline.artifact import contract
from pipeline.artifact.drift import PERCENTILES, DriftReference, DriftReport
from pipeline.artifact.manifest import Manifest
from pipeline.core.atomic import atomic_output
from pipeline.core.config import AlertRules
from pipeline.core.errors import PipelineError
from pipeline.data import ingest
from pipeline.data.schema import FeatureSchema, coerce
from pipeline.ops.records import Alert
from pipeline.ops.reports import BatchContext, figure_png, score_histogram, sensor_scores, top_anomalies

POSITION = "__position"  # a row's place among its file's rows in the scores (a table's rows keep their order)

PAGE = Environment(autoescape=True).from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Scoring report: {{ model }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; } td, th { border: 1px solid #ccc; padding: 0.25rem 0.6rem; }
th { background: #f3f3f3; text-align: left; } td.n { text-align: right; } img { max-width: 100%; }
.alert { padding: 0.6rem 1rem; border-left: 4px solid #c33; background: #fdf0f0; }
.quiet { padding: 0.6rem 1rem; border-left: 4px solid #393; background: #f0f8f0; }
</style></head><body>
<h1>Scoring report: {{ model }}</h1>
<section id="alert"><h2>Alert</h2>
{% if alert %}<p class="alert"><b>{{ alert.severity }}</b> alert <code>{{ alert.alert_id }}</code>:
{{ alert.counts.anomalous_rows }} anomalous rows{% if alert.entities %}, entities
{{ alert.entities | map(attribute="entity") | join(", ") }}{% endif %}.</p>
{% else %}<p class="quiet">No alert: {{ no_alert }}</p>{% endif %}</section>
<section id="files"><h2>Files</h2><table><tr><th>file</th><th>rows</th><th>above threshold</th></tr>
{% for f in files %}<tr><td>{{ f.file }}</td><td class="n">{{ "{:,}".format(f.rows) }}</td>
<td class="n">{{ "{:,}".format(f.anomalies) }}</td></tr>{% endfor %}
</table></section>
<section id="scores"><h2>Scores</h2><img alt="score histogram" src="data:image/png;base64,{{ histogram }}">
{% if over_time %}<img alt="scores over time" src="data:image/png;base64,{{ over_time }}">{% endif %}</section>
<section id="episodes"><h2>Alarm episodes</h2>
{% if episodes %}<table><tr>{% for c in episodes[0] %}<th>{{ c }}</th>{% endfor %}</tr>
{% for e in episodes %}<tr>{% for v in e.values() %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</table>
{% elif tabular %}<p>A table's rows are judged one by one: each flagged row is its own alarm (Top anomalies).</p>
{% else %}<p>None: no flagged row opened an episode.</p>{% endif %}</section>
<section id="top"><h2>Top anomalies</h2>
{% if top and not tabular %}<p>A series' score judges the window that ends at its row: a reading inside its usual
range can still belong to a pattern training never showed.</p>{% endif %}
{% if top %}<table><tr>{% for c in top[0] %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in top %}<tr>{% for v in row.values() %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</table>
{% else %}<p>No row above the threshold.</p>{% endif %}</section>
<section id="model"><h2>Model and threshold</h2><table>
{% for k, v in facts.items() %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table></section>
<section id="drift"><h2>Drift</h2>
{% if drift %}<p>{{ drift.verdict }}</p>
<table><tr><th>column</th><th>PSI against training</th><th>entities whose median moved (× spread of medians)</th></tr>
{% for c in drift.columns %}<tr><td>{{ c.column }}</td><td class="n">{{ c.psi }}</td><td>{{ c.entities }}</td></tr>
{% endfor %}
</table><p>Latent code PSI {{ drift.latent }}, score PSI {{ drift.score }}.{% if drift.not_judged %} Not judged on
their own: {{ drift.not_judged }}.{% endif %}</p>
{% else %}<p>Not measured: {{ no_drift }}</p>{% endif %}</section>
</body></html>
"""
)


def html_report(
    manifest: Manifest, scored: pl.DataFrame, files: list[dict[str, Any]], alert: Alert | None, context: BatchContext
) -> str:
    """The page for one scores file and the alert the scheduled flow would raise on it."""
    schema, threshold = manifest.feature_schema, context.threshold
    episodes = alarm_episodes(scored, schema.entity_column, schema.time_column) if schema.mode == "sensor" else []
    over_time = None
    if schema.mode == "sensor" and schema.time_column and scored.height:
        alerted = {e.entity for e in alert.entities} if alert else set()
        over_time = figure_png(sensor_scores(scored, schema.time_column, schema.entity_column, threshold, alerted, episodes))
    return PAGE.render(
        model=manifest.key,
        tabular=schema.mode == "tabular",
        alert=alert,
        no_alert=no_alert_reason(scored, episodes, manifest, context.rules),
        files=files,
        histogram=figure_png(score_histogram(scored[contract.SCORE].to_numpy(), threshold, "scores")),
        over_time=over_time,
        episodes=[{k: str(v) for k, v in e.items()} for e in episodes],
        top=top_rows(manifest, scored, context),
        facts=_facts(manifest, threshold),
        drift=_drift(context.drift),
        no_drift="the model carries no drift reference (exported before drift was measured)."
        if manifest.drift is None
        else "this page was written from a scores file alone; `vad score --report` measures it.",
    )


def alarm_episodes(scored: pl.DataFrame, entity: str | None, time: str | None) -> list[dict[str, Any]]:
    """Each alarm episode: its entity, first and last flagged time, flagged rows and peak score
    (an episode runs from an `alarm` row to the last flagged row before the entity's next one)."""
    if contract.ALARM not in scored.columns or not time:
        return []
    by = [entity] if entity else []
    count = pl.col(contract.ALARM).cast(pl.Int32).cum_sum()
    numbered = scored.with_columns((count.over(by) if by else count).alias("__episode"))
    flagged = numbered.filter(pl.col("__episode") > 0, pl.col(contract.IS_ANOMALY))
    table = (
        flagged.group_by([*by, "__episode"], maintain_order=True)
        .agg(
            start=pl.col(time).min(),
            end=pl.col(time).max(),
            flagged_rows=pl.len(),
            peak_score=pl.col(contract.SCORE).max().round(2),
        )
        .drop("__episode")
    )
    return table.rename({entity: "entity"} if entity else {}).to_dicts()


def no_alert_reason(scored: pl.DataFrame, episodes: list[dict[str, Any]], manifest: Manifest, rules: AlertRules) -> str:
    """Why no alert was raised, in the alert rules' words (newcomer review N16: "Alerts: 0"
    stood beside 43 flagged rows with no reason)."""
    flagged = int(scored[contract.IS_ANOMALY].sum())
    if flagged == 0:
        return "no row scored above the threshold."
    if manifest.feature_schema.mode == "sensor" and not episodes:
        return f"{flagged} row(s) above the threshold, but none opened an episode (hold-off after an earlier alarm)."
    return (
        f"{flagged} row(s) above the threshold, but never {rules.min_anomalous} within {rules.within} consecutive "
        "rows of an entity (from an episode's onset), the alert rule; or the entity was cooling down."
    )


def _facts(manifest: Manifest, threshold: float) -> dict[str, str]:
    t, schema = manifest.threshold, manifest.feature_schema
    return {
        "model": manifest.key,
        "created": manifest.created_at,
        "mode": schema.mode,
        "features": ", ".join(c.name for c in schema.columns),
        "threshold": f"{threshold:.6g} ({t.method}{'' if threshold == t.value else f'; the model keeps {t.value:.6g}'})",
        "alarm rule": f"hold-off {t.alarm.hold_off} rows, quiet {t.alarm.quiet}; {t.persistence.k} of {t.persistence.n}",
        "training rows": f"{manifest.training_data.get('rows'):,}",
        "validation median score": f"{manifest.validation.score_quantiles['0.5']:.4g}",
    }


def top_rows(manifest: Manifest, scored: pl.DataFrame, context: BatchContext, n: int = 20) -> list[dict[str, Any]]:
    """The n highest-scoring flagged rows as a person reads them: keys, score, percentile, and
    each feature behind the score with its share, its reading in the source file and the
    range the middle 80% of training readings spanned (newcomer review, point 5)."""
    position = pl.int_range(pl.len())
    by_file = position.over(contract.SOURCE_FILE) if contract.SOURCE_FILE in scored.columns else position
    rows = top_anomalies(scored.with_columns(by_file.alias(POSITION)), n)
    readings = _readings(rows, context.schema or manifest.feature_schema, context.sources)
    entity = manifest.feature_schema.entity_column
    shown = []
    for i, row in enumerate(rows):
        added = contract.score_columns(list(row)) - {contract.SOURCE_FILE} | {POSITION}
        keys = {k: v for k, v in row.items() if k not in added}
        percentile = {contract.PERCENTILE: row[contract.PERCENTILE]} if contract.PERCENTILE in row else {}
        behind = [
            f"{name} {row[contract.share_of(k)]:.0%}: {_reading(readings[i].get(name) if readings else None)}"
            f" ({_usual(manifest.drift, name, row.get(entity) if entity else None)})"
            for k in contract.feature_columns(list(row))
            if (name := row[k]) is not None and row[contract.share_of(k)] >= 0.005
        ]
        shown.append(
            {
                **keys,
                contract.SCORE: row[contract.SCORE],
                **percentile,
                "features behind it: reading (usual)": "; ".join(behind),
            }
        )
    return shown


def _readings(rows: list[dict[str, Any]], schema: FeatureSchema, sources: tuple[Path, ...]) -> list[dict[str, Any]] | None:
    """Each top row's readings, looked up in the file it came from: a table's by its position in
    the file, a series' by its entity and time (as scoring read it: coerced, times in UTC).
    None where the files are not at hand (a page written from a scores file alone)."""
    by_name = {path.name: path for path in sources}
    if not rows or not by_name:
        return None
    keys = [k for k in (schema.entity_column, schema.time_column) if k] if schema.mode == "sensor" else [POSITION]
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    for name in {row.get(contract.SOURCE_FILE) for row in rows}:
        path = by_name.get(str(name))
        if path is None:
            continue
        try:
            frame = coerce(ingest.read_file(path, schema.source_columns, schema.csv), schema, str(path))
        except PipelineError:  # changed since it was scored: the page shows no readings for it
            continue
        frame = frame.with_row_index(POSITION).with_columns(pl.col(POSITION).cast(pl.Int64))
        for record in (
            frame.select(*keys, *(c.name for c in schema.columns)).unique(keys, keep="first").iter_rows(named=True)
        ):
            found[(name, *(_comparable(record[k]) for k in keys))] = record
    return [found.get((row.get(contract.SOURCE_FILE), *(_comparable(row[k]) for k in keys)), {}) for row in rows]


def _comparable(value: object) -> object:
    """A key as top_anomalies writes it (times in ISO form, floats rounded) and as a file holds it."""
    if isinstance(value, datetime):
        return value.isoformat()
    return round(value, 4) if isinstance(value, float) else value


def _reading(value: object) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _usual(drift: DriftReference | None, name: str, entity: object) -> str:
    """Where training readings lay: a numeric column's 10th to 90th percentile, the entity's own
    (its 9th to 91st) where the model keeps one, since a machine's normal is not the fleet's;
    a category's share of training rows."""
    reference = drift.features.get(name) if drift is not None else None
    if drift is None or reference is None:
        return "no training reference"
    own = drift.entities.get(str(entity)) if entity is not None else None
    if own is not None and name in own.percentiles:
        percentiles = own.percentiles[name]
        low, high = percentiles[PERCENTILES.searchsorted(0.09)], percentiles[PERCENTILES.searchsorted(0.91)]
        return f"{entity}'s training p9–p91: {low:.4g} to {high:.4g}"
    if reference.categories is not None:
        shares = ", ".join(f"{c} {f:.0%}" for c, f in zip(reference.categories, reference.fractions, strict=False))
        return f"training: {shares}"
    if not reference.edges:
        return "no training readings"
    return f"training p10–p90: {reference.edges[0]:.4g} to {reference.edges[-1]:.4g}"


def _drift(report: DriftReport | None) -> dict[str, Any] | None:
    """The batch's drift as the page shows it: the verdict under the rules, each column's PSI
    and the entities whose median moved, the latent and score PSI."""
    if report is None:
        return None
    moved: dict[str, list[str]] = {}
    for entity, shifted in report.entities.items():
        for column, by in shifted.items():
            moved.setdefault(column, []).append(f"{entity} {by:+.1f}")
    verdict = (
        f"Drifted from the training data: {', '.join(report.drifting) or ', '.join(sorted(moved))} "
        f"(PSI past {report.rules.psi}, or a median moved past {report.rules.shift} × its spread)."
        if report.drifted
        else f"No column drifted past the rules (PSI {report.rules.psi}; a median moved {report.rules.shift} × its spread)."
    )
    columns = [
        {"column": c, "psi": f"{psi:.3f}", "entities": ", ".join(moved.get(c, [])) or "–"}
        for c, psi in sorted(report.features.items(), key=lambda item: -item[1])
    ]
    return {
        "verdict": verdict,
        "columns": columns,
        "latent": f"{report.latent:.3f}",
        "score": f"{report.score:.3f}",
        "not_judged": "; ".join(f"{e} ({why})" for e, why in report.not_judged.items()),
    }


def write_html(target: Path, page: str) -> Path:
    """Write the page beside its scores file (atomically, as every output)."""
    with atomic_output(target) as temporary:
        temporary.write_text(page)
    return target
