"""Does the drift rule hold on data it was not chosen on? (issue 21)

    python bench/drift_check.py

The per-entity rule (a median moved more than `DriftRules.shift` spreads of training medians)
was set on the demo fleet. Here it meets SKAB's anomaly-free stream (1 Hz, 8 sensors, never
used to choose it): a sensor model trains on the stream's first 60%, and the rest is scored in
batches of 600 readings (ten minutes). bench/thresholds.py measured where the stream stays in
its training range (its seventh and eighth tenths) and where it leaves it (the last fifth), so
each batch's drift verdict can be read against that. `--shift 0.01` shows every column's
shift. Prints a table; writes nothing.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import polars as pl
import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core.config import DriftRules, load_config  # noqa: E402
from pipeline.runtime import Scorer, score_files  # noqa: E402
from pipeline.training.fit import fit_model  # noqa: E402

STREAM = ROOT.parent / "shared" / "data" / "skab" / "anomaly-free" / "anomaly-free.csv"


def main(batch: int = 600, train_share: float = 0.6, epochs: int = 20, shift: float = DriftRules().shift) -> None:
    rules = DriftRules(shift=shift)
    frame = pl.read_csv(STREAM, separator=";", try_parse_dates=True)
    cut = int(frame.height * train_share)
    sensors = [c for c in frame.columns if c != "datetime"]
    table = Table(
        title=f"Drift verdicts on SKAB's anomaly-free stream (trained on its first {train_share:.0%}), limit {shift:g}"
    )
    for column in (
        "batch (rows)",
        "tenth of the stream",
        "drifted",
        "columns past the rule (spreads)",
        "latent PSI",
        "score PSI",
    ):
        table.add_column(column)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        frame.head(cut).write_parquet(folder / "train.parquet")
        config = load_config(
            None,
            data={"mode": "sensor", "time_column": "datetime", "features": sensors, "window": {"length": 10, "stride": 1}},
            train={"epochs": epochs, "progress": False},
        )
        scorer = Scorer.load(fit_model(folder / "train.parquet", config, folder / "models").version_dir)
        for start in range(cut, frame.height - batch + 1, batch):
            frame.slice(start, batch).write_parquet(folder / "batch.parquet")
            drift = score_files(scorer, folder / "batch.parquet", folder / "scores.parquet", drift_rules=rules).drift
            assert drift is not None
            shifted = drift.entities.get("*", {})
            table.add_row(
                f"{start}-{start + batch}",
                f"{(start + batch / 2) / frame.height * 10:.1f}",
                "yes" if drift.drifted else "no",
                ", ".join(f"{c} {v:+.1f}" for c, v in shifted.items()),
                f"{drift.latent:.2f}",
                f"{drift.score:.2f}",
            )
    Console().print(table)


if __name__ == "__main__":
    typer.run(main)
