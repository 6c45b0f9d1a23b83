"""A sensor fleet: windows over each machine's series, scores per time step, alarms, drift.

    .venv/bin/python examples/python/sensor_fleet.py [--epochs N]

Four presses, six signals every five minutes (data/sensors). The config says which column is
the machine and which the time; windows of an hour (12 steps) run over each machine alone."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import polars as pl

from pipeline.core.config import load_config
from pipeline.runtime import Scorer, score_files
from pipeline.training.fit import fit_model

DATA = Path(__file__).resolve().parents[2] / "data"


def main(epochs: int | None) -> None:
    config = load_config(DATA / "sensors.toml", train={"progress": False, **({"epochs": epochs} if epochs else {})})
    with tempfile.TemporaryDirectory() as models:
        version = fit_model(DATA / "sensors" / "history.parquet", config, models).version_dir
        scorer = Scorer.load(version)
        report = score_files(scorer, DATA / "sensors" / "batch.parquet", Path(models) / "scores.parquet")
        print(
            f"{report.rows} time steps scored: {report.anomalies} flagged, {report.alarms} alarm(s) "
            "(an alarm is the first flagged step of an episode)"
        )
        if report.drift is not None:
            print(f"drifting from training: {report.drift.drifting or 'nothing'}")

        scores = pl.read_parquet(report.output)
        per_machine = (
            scores.group_by("machine")
            .agg(flagged=pl.col("is_anomaly").sum(), alarms=pl.col("alarm").sum(), worst=pl.col("score").max())
            .sort("machine")
        )
        print(per_machine)
        print(scores.filter(pl.col("alarm")).select("machine", "timestamp", "score", "top1_feature"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="fewer epochs for a quick run (default: the library's)")
    main(parser.parse_args().epochs)
