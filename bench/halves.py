"""Model selection that shows its own generalisation gap: choose on one half, report on the
other, then swap.

Reads runs of bench/quality.py from bench/.cache/runs (one per candidate setting, `--label`),
takes ours' mean ROC-AUC on each fixed half of ADBench (quality.HALF_A, quality.HALF_B) and of
NAB (every other series, for the series defaults) and ours' mean VUS-PR on each half of the
telemetry files, and for each order picks the candidate that is best on the half it is chosen
on; gains are over the first label given. A candidate that
wins its own half but not the other is selection noise, not a default. SKAB's mean is beside.

    python bench/halves.py default beta4 iwae16      # labels of runs already made
"""

from __future__ import annotations

import json

import polars as pl
import typer
from quality import CACHE, HALF_A, HALF_B, HEADLINE, OURS, nab_series, telemetry_files

# The series defaults (sensor mode) are chosen by the same rule on NAB's 12 series, halved alike.
NAB_A, NAB_B = nab_series()[0::2], nab_series()[1::2]
TELEMETRY_A, TELEMETRY_B = telemetry_files()[0::2], telemetry_files()[1::2]


def load(label: str) -> pl.DataFrame:
    """Ours' headline metric per (suite, set) as `value` (VUS-PR on telemetry, ROC-AUC
    elsewhere), averaged over the run's seeds; a failed set counts as chance (ROC-AUC 0.5, VUS-PR
    0: a detector that refuses a set ranks it no better)."""
    run = json.loads((CACHE / "runs" / f"{label}.json").read_text())
    frame = pl.DataFrame([c for c in run["cells"] if c["detector"] == OURS], infer_schema_length=None)
    for metric in ("roc_auc", *HEADLINE.values()):
        if metric not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.Float64).alias(metric))
    value = pl.coalesce(
        *(pl.when(pl.col("suite") == suite).then(pl.col(metric).fill_null(0.0)) for suite, metric in HEADLINE.items()),
        pl.col("roc_auc").fill_null(0.5),
    )
    return (
        frame.with_columns(value=value)
        .group_by("suite", "dataset")
        .agg(pl.col("value").mean())
        .with_columns(label=pl.lit(label))
    )


def table(labels: list[str]) -> str:
    cells = pl.concat([load(label) for label in labels])
    means = {label: _means(cells.filter(pl.col("label") == label)) for label in labels}
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [
        "| candidate | half A | half B | SKAB | NAB | NAB half A | NAB half B | telemetry A (VUS-PR) | telemetry B |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {label} | {fmt(m['A'])} | {fmt(m['B'])} | {fmt(m['skab'])} | {fmt(m['nab'])} | {fmt(m['nab A'])} "
        f"| {fmt(m['nab B'])} | {fmt(m['telemetry A'])} | {fmt(m['telemetry B'])} |"
        for label, m in means.items()
    ]
    lines += [
        "",
        "| chosen on | chosen | its mean there | its mean on the other half | gap "
        "| gain over the first candidate there | gain on the other half |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    pairs = [("A", "B"), ("nab A", "nab B"), ("telemetry A", "telemetry B")]
    for chosen_on, other in [order for pair in pairs for order in (pair, pair[::-1])]:
        if any(m[chosen_on] is None or m[other] is None for m in means.values()):
            continue
        best = max(means, key=lambda label: means[label][chosen_on])
        base = means[labels[0]]
        there, elsewhere = means[best][chosen_on], means[best][other]
        half = f"{'half ' if len(chosen_on) == 1 else ''}{chosen_on}"
        lines.append(
            f"| {half} | {best} | {there:.3f} | {elsewhere:.3f} | {elsewhere - there:+.3f} | "
            f"{there - base[chosen_on]:+.3f} | {elsewhere - base[other]:+.3f} |"
        )
    lines += [
        "",
        f"Half A: {', '.join(HALF_A)}.",
        f"Half B: {', '.join(HALF_B)}.",
        f"NAB half A: {', '.join(NAB_A)}.",
        f"NAB half B: {', '.join(NAB_B)}.",
        f"Telemetry half A: {', '.join(TELEMETRY_A)}.",
        f"Telemetry half B: {', '.join(TELEMETRY_B)}.",
    ]
    return "\n".join(lines)


def _means(own: pl.DataFrame) -> dict[str, float | None]:
    """Mean headline metric of one candidate on each ADBench half, on SKAB, NAB and the
    telemetry halves."""

    def mean(rows: pl.DataFrame) -> float | None:
        return rows["value"].mean() if rows.height else None  # type: ignore[return-value]

    return {
        "A": mean(own.filter(pl.col("dataset").is_in(HALF_A))),
        "B": mean(own.filter(pl.col("dataset").is_in(HALF_B))),
        "skab": mean(own.filter(pl.col("suite") == "skab")),
        "nab": mean(own.filter(pl.col("suite") == "nab")),
        "nab A": mean(own.filter(pl.col("dataset").is_in(NAB_A))),
        "nab B": mean(own.filter(pl.col("dataset").is_in(NAB_B))),
        "telemetry A": mean(own.filter(pl.col("dataset").is_in(TELEMETRY_A))),
        "telemetry B": mean(own.filter(pl.col("dataset").is_in(TELEMETRY_B))),
    }


def main(labels: list[str]) -> None:
    print(table(labels))


if __name__ == "__main__":
    typer.run(main)
