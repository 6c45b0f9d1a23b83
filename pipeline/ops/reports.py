"""Markdown reports with matplotlib plots, for Prefect artifacts (or any markdown viewer).
Plots are embedded as base64 PNG, so a report is one self-contained document."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no screen on servers and CI
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.figure import Figure

from pipeline.artifact import contract
from pipeline.artifact.drift import DriftReport
from pipeline.artifact.manifest import Manifest
from pipeline.core.atomic import atomic_output
from pipeline.core.config import AlertRules
from pipeline.core.digest import sha256_file
from pipeline.data import ingest
from pipeline.data.schema import FeatureSchema
from pipeline.ops import alerts
from pipeline.ops.records import Alert, BatchRef, BatchSummary

MAX_ENTITY_PANELS = 8


def figure_png(fig: Figure) -> str:
    """The figure as a base64 PNG, to inline in a Markdown or HTML report; the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def figure_markdown(fig: Figure, title: str) -> str:
    return f"![{title}](data:image/png;base64,{figure_png(fig)})"


def loss_curves(history: list[dict[str, Any]]) -> Figure:
    """Training NLL and KL per epoch, and the validation objective that early stopping watched."""
    curves = pl.DataFrame(history)
    epochs = curves.get_column("epoch")
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3))
    left.plot(epochs, curves.get_column("nll"), label="train NLL")
    left.plot(epochs, curves.get_column("kl"), label="train KL")
    left.set_xlabel("epoch")
    left.legend()
    right.plot(epochs, curves.get_column("validation_objective"), label="validation β-objective")
    right.plot(epochs, curves.get_column("validation_neg_elbo"), label="validation −ELBO")
    right.set_xlabel("epoch")
    right.legend()
    fig.suptitle("Training")
    return fig


def score_histogram(scores: np.ndarray, threshold: float, title: str) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 3))
    finite = scores[np.isfinite(scores)]
    ax.hist(finite, bins=60, color="tab:blue", alpha=0.8)
    ax.axvline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold:.4g}")
    ax.set_yscale("log")
    ax.set_xlabel("score (negative ELBO, higher = more anomalous)")
    ax.set_ylabel("rows")
    ax.set_title(title)
    ax.legend()
    return fig


def sensor_scores(
    scored: pl.DataFrame,
    time_col: str,
    entity_col: str | None,
    threshold: float,
    alerted: set[str],
    episodes: list[dict[str, Any]] | None = None,
) -> Figure:
    """Score over time per entity, the threshold, anomalous steps, which entities alerted and,
    when given, their alarm episodes (`start`, `end`, `entity`) shaded."""
    entities = (
        scored[entity_col].cast(pl.String).unique(maintain_order=True).to_list()[:MAX_ENTITY_PANELS]
        if entity_col
        else [None]
    )
    fig, axes = plt.subplots(len(entities), 1, figsize=(9, 1.8 * len(entities)), sharex=True, squeeze=False)
    for ax, entity in zip(axes[:, 0], entities, strict=True):
        part = scored.filter(pl.col(entity_col).cast(pl.String) == entity) if entity_col else scored
        ax.plot(part[time_col].to_numpy(), part[contract.SCORE].to_numpy(), linewidth=0.8)
        flagged = part.filter(pl.col(contract.IS_ANOMALY))
        ax.scatter(flagged[time_col].to_numpy(), flagged[contract.SCORE].to_numpy(), color="tab:red", s=6, zorder=3)
        ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=0.8)
        for episode in (e for e in episodes or [] if entity is None or str(e["entity"]) == entity):
            ax.axvspan(episode["start"], episode["end"], color="tab:orange", alpha=0.25)
        label = f"{entity}  ⚠ alert" if entity in alerted else str(entity or "")
        ax.set_ylabel(label, rotation=0, ha="right", fontsize=8)
    axes[0, 0].set_title("Scores per entity (red: above threshold)")
    return fig


def _facts(manifest: Manifest) -> list[str]:
    t = manifest.threshold
    return [
        f"| model | `{manifest.key}` |",
        f"| created | {manifest.created_at} |",
        f"| inputs | {len(manifest.input_names)} ({manifest.feature_schema.mode} mode) |",
        f"| members × latent | {manifest.model.get('members', 1)} × {manifest.model['latent']} |",
        f"| threshold | {t.value:.6g} ({t.method}) |",
        f"| training rows | {manifest.training_data.get('rows')} |",
        f"| validation −ELBO | {manifest.validation.neg_elbo:.4f} |",
    ]


def training_report(manifest: Manifest, history: list[dict[str, Any]], validation_scores: np.ndarray, folder: Path) -> str:
    """Data summary, loss curves, validation histogram with the threshold, key manifest facts."""
    imputed = manifest.training_data.get("imputed") or {}
    lines = [
        f"# Training report: {manifest.key}",
        "",
        f"Model folder: [{folder}]({folder.resolve().as_uri()})",
        "",
        "| fact | value |",
        "|---|---|",
        *_facts(manifest),
        "",
        "## Data",
        "",
        f"{manifest.training_data.get('rows')} rows × {manifest.training_data.get('inputs')} inputs from "
        f"{len(manifest.training_data.get('files', []))} file(s); imputed values: "
        + (", ".join(f"{k}: {v}" for k, v in imputed.items()) if imputed else "none")
        + ".",
        "",
        "## Loss curves",
        "",
        figure_markdown(loss_curves(history), "loss curves"),
        "",
        "## Validation scores",
        "",
        figure_markdown(
            score_histogram(validation_scores, manifest.threshold.value, "validation scores"), "validation score histogram"
        ),
    ]
    return "\n".join(lines)


def top_anomalies(scored: pl.DataFrame, n: int = 20) -> list[dict[str, Any]]:
    """The n highest-scoring anomalous rows, JSON-friendly (for a table artifact)."""
    top = scored.filter(pl.col(contract.IS_ANOMALY)).sort(contract.SCORE, descending=True).head(n)
    return [
        {
            k: (v.isoformat() if isinstance(v, datetime) else round(v, 4) if isinstance(v, float) else v)
            for k, v in row.items()
        }
        for row in top.iter_rows(named=True)
    ]


def scoring_report(
    manifest: Manifest, scored: pl.DataFrame, batches: list[BatchSummary], alerts: list[Alert], threshold: float
) -> str:
    """Batches scored in one run, their score histogram and, in sensor mode, scores over time."""
    schema = manifest.feature_schema
    lines = [
        f"# Scoring report: {manifest.key}",
        "",
        "| batch | rows | anomalous | not judged | output |",
        "|---|---:|---:|---:|---|",
        *[f"| {Path(b.file).name} | {b.rows} | {b.anomalies} | {b.unjudged} | `{b.output}` |" for b in batches],
        "",
        *(
            ["Not judged: an entity's first rows, scored on padded windows and not past their wide margin.", ""]
            if any(b.unjudged for b in batches)
            else []
        ),
        f"Alerts: {len(alerts)}"
        + "".join(
            f"\n- **{a.severity}** `{a.alert_id}` {a.batch.file}: {a.counts.anomalous_rows} anomalous rows" for a in alerts
        ),
        "",
    ]
    failed = [(Path(b.file).name, entity, why) for b in batches for entity, why in b.failed_entities.items()]
    if failed:
        lines += [
            f"Entities not scored: {len(failed)} (the rest of each batch was scored)",
            "",
            "| batch | entity | why |",
            "|---|---|---|",
            *[f"| {name} | {entity} | {why.replace('|', '/')} |" for name, entity, why in failed],
            "",
        ]
    if scored.height:
        lines += [
            figure_markdown(
                score_histogram(scored[contract.SCORE].to_numpy(), threshold, "scores in this run"), "score histogram"
            ),
            "",
        ]
        if schema.mode == "sensor" and schema.time_column:
            alerted = {e.entity for a in alerts for e in a.entities}
            fig = sensor_scores(scored, schema.time_column, schema.entity_column, threshold, alerted)
            lines += [figure_markdown(fig, "scores over time"), ""]
    return "\n".join(lines)


def drift_figure(summaries: list[BatchSummary]) -> Figure:
    """Each batch's PSI per column (and for the latent code and the score), the limit drawn."""
    batches = [Path(s.file).name for s in summaries]
    drifts = [s.drift for s in summaries if s.drift is not None]
    columns = list(drifts[0].features)
    labels = [*columns, "latent (KL)", "score"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(labels) * max(1, len(batches)) ** 0.5), 3.2))
    width = 0.8 / len(batches)
    for i, (name, drift) in enumerate(zip(batches, drifts, strict=True)):
        values = [drift.features[c] for c in columns] + [drift.latent, drift.score]
        ax.bar(np.arange(len(labels)) + i * width, values, width, label=name)
    ax.axhline(drifts[0].rules.psi, color="tab:red", linestyle="--", label="limit (columns)")
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, rotation=30, ha="right")
    ax.set_ylabel("PSI against training")
    ax.set_title("Drift per batch")
    ax.legend(fontsize="small")
    return fig


def drift_report(manifest: Manifest, summaries: list[BatchSummary]) -> str:
    """The drift of each batch from the model's training data (`summaries` that measured it):
    the figure and a table of the columns and entities past the rules."""
    lines = [
        f"# Drift: {manifest.key}",
        "",
        figure_markdown(drift_figure(summaries), "drift per batch"),
        "",
        "| batch | rows | drifting columns (PSI) | entities shifted (× spread of medians) | latent PSI | score PSI |",
        "|---|---:|---|---|---:|---:|",
    ]
    for s in summaries:
        d = s.drift
        if d is None:
            continue
        columns = ", ".join(f"{c} {d.features[c]:.2f}" for c in d.drifting) or "none"
        entities = (
            "; ".join(f"{e}: " + ", ".join(f"{c} {v:+.1f}" for c, v in shifted.items()) for e, shifted in d.entities.items())
            or "none"
        )
        lines.append(f"| {Path(s.file).name} | {d.rows} | {columns} | {entities} | {d.latent:.2f} | {d.score:.2f} |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class BatchContext:
    """What the run that wrote a scores file knew beyond it: the threshold it judged by, the
    alert rules (no cooldown from earlier batches), the files it read and how it read them
    (the page shows the top rows' readings from them), and the batch's drift."""

    threshold: float
    rules: AlertRules = field(default_factory=AlertRules)
    sources: tuple[Path, ...] = ()
    schema: FeatureSchema | None = None  # as the run read its files (a run's CSV flags); default: the model's
    drift: DriftReport | None = None


def write_scores_report(manifest: Manifest, scores: Path, context: BatchContext) -> Path:
    """The scoring report of one scores file (`vad score --report`), written beside it as
    `<name>.report.md`, and as a page for a browser, `<name>.report.html`: counts per input
    file, the alert the scheduled flow would raise on this batch, the score histogram and, for
    sensors, the scores over time, the plots inline, so one file travels whole; the page adds
    the top rows' readings and the drift. Returns the Markdown one's path."""
    threshold, rules = context.threshold, context.rules
    scored = ingest.read_file(scores)
    by_file = (
        scored.group_by(contract.SOURCE_FILE, maintain_order=True).agg(
            rows=pl.len(), anomalies=pl.col(contract.IS_ANOMALY).sum()
        )
        if contract.SOURCE_FILE in scored.columns
        else pl.DataFrame()
    )
    batches = [  # a scores file keeps no record of its input repairs
        BatchSummary(file=file, output=str(scores), rows=rows, anomalies=anomalies, threshold=threshold, inputs="")
        for file, rows, anomalies in by_file.iter_rows()
    ]
    alert, _ = alerts.evaluate(
        scored,
        manifest,
        rules,
        BatchRef(file=scores.name, sha256=sha256_file(scores)),
        last_alerts={},
        threshold=threshold,
    )
    target = scores.with_name(f"{scores.stem}.report.md")
    with atomic_output(target) as temporary:
        temporary.write_text(scoring_report(manifest, scored, batches, [alert] if alert else [], threshold) + "\n")
    from pipeline.ops.html_report import html_report, write_html  # it draws with this module's plots

    files = [{"file": Path(b.file).name, "rows": b.rows, "anomalies": b.anomalies} for b in batches]
    write_html(target.with_suffix(".html"), html_report(manifest, scored, files, alert, context))
    return target
