"""The scoring report as one self-contained HTML page, for people who open it in a browser
(`vad score --report` writes it beside the Markdown one): counts per file, the score
histogram, scores over time per entity with the alarm episodes shaded, the episodes, the top
anomalies, the model's and the threshold's facts, and why an alert was or was not raised.
Plots are inline PNGs and the page runs no script, so it opens anywhere, offline."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from jinja2 import Environment

from pipeline.artifact import contract
from pipeline.artifact.manifest import Manifest
from pipeline.core.atomic import atomic_output
from pipeline.core.config import AlertRules
from pipeline.ops.records import Alert
from pipeline.ops.reports import figure_png, score_histogram, sensor_scores, top_anomalies

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
{% if top %}<table><tr>{% for c in top[0] %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in top %}<tr>{% for v in row.values() %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</table>
{% else %}<p>No row above the threshold.</p>{% endif %}</section>
<section id="model"><h2>Model and threshold</h2><table>
{% for k, v in facts.items() %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table></section>
<section id="drift"><h2>Drift</h2><p>{{ drift }}</p></section>
</body></html>
"""
)


def html_report(
    manifest: Manifest, scored: pl.DataFrame, files: list[dict], alert: Alert | None, threshold: float, rules: AlertRules
) -> str:
    """The page for one scores file and the alert the scheduled flow would raise on it."""
    schema = manifest.feature_schema
    episodes = alarm_episodes(scored, schema.entity_column, schema.time_column) if schema.mode == "sensor" else []
    over_time = None
    if schema.mode == "sensor" and schema.time_column and scored.height:
        alerted = {e.entity for e in alert.entities} if alert else set()
        over_time = figure_png(sensor_scores(scored, schema.time_column, schema.entity_column, threshold, alerted, episodes))
    return PAGE.render(
        model=manifest.key,
        tabular=schema.mode == "tabular",
        alert=alert,
        no_alert=no_alert_reason(scored, episodes, manifest, rules),
        files=files,
        histogram=figure_png(score_histogram(scored[contract.SCORE].to_numpy(), threshold, "scores")),
        over_time=over_time,
        episodes=[{k: str(v) for k, v in e.items()} for e in episodes],
        top=_explained(top_anomalies(scored, 20)),
        facts=_facts(manifest, threshold),
        drift="Drift against the training data is measured per batch by the scheduled flow "
        "(its `vad-drift` artifact and `vad score --json`'s `drift`); a scores file does not keep it.",
    )


def alarm_episodes(scored: pl.DataFrame, entity: str | None, time: str | None) -> list[dict]:
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


def no_alert_reason(scored: pl.DataFrame, episodes: list[dict], manifest: Manifest, rules: AlertRules) -> str:
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


def _explained(rows: list[dict]) -> list[dict]:
    """Top rows as a person reads them: keys, score, percentile, and the features behind the
    score with their shares, in one cell."""
    shown = []
    for row in rows:
        columns = list(row)
        keys = {k: v for k, v in row.items() if k not in contract.score_columns(columns) or k == contract.SOURCE_FILE}
        percentile = {contract.PERCENTILE: row[contract.PERCENTILE]} if contract.PERCENTILE in row else {}
        shown.append(
            {**keys, contract.SCORE: row[contract.SCORE], **percentile, "top features (share)": contract.explanation(row)}
        )
    return shown


def write_html(target: Path, page: str) -> Path:
    """Write the page beside its scores file (atomically, as every output)."""
    with atomic_output(target) as temporary:
        temporary.write_text(page)
    return target
