"""A table: train on production batches, export to ONNX, score a new file, read the result.

    .venv/bin/python examples/python/score_a_table.py [--epochs N]

The same as `vad train data/tabular/history.csv --config data/tabular.toml` and `vad score`,
from Python. Training needs the `train` extra (torch); scoring needs only onnxruntime."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import polars as pl
from sklearn.metrics import roc_auc_score

from pipeline.core.config import load_config
from pipeline.runtime import Scorer, score_files
from pipeline.training.fit import fit_model

DATA = Path(__file__).resolve().parents[2] / "data"


def main(epochs: int | None) -> None:
    # The config names the roles: `batch_id` is a key, `label` is kept out of the features
    # (and used to report how well training separates), `anomaly_kind` is ignored.
    config = load_config(DATA / "tabular.toml", train={"progress": False, **({"epochs": epochs} if epochs else {})})
    with tempfile.TemporaryDirectory() as models:
        version = fit_model(DATA / "tabular" / "history.csv", config, models).version_dir
        print(f"exported {version.name} of {config.name}: {sorted(p.name for p in version.iterdir())}")

        scorer = Scorer.load(version)  # onnxruntime only; CUDA when there is a working GPU
        report = score_files(scorer, DATA / "tabular" / "batch.csv", Path(models) / "scores.parquet")
        print(f"{report.rows} rows scored, {report.anomalies} above the threshold {report.threshold:.2f}")

        scores = pl.read_parquet(report.output)
        truth = pl.read_csv(DATA / "tabular" / "batch.csv").select("batch_id", "label")
        joined = scores.join(truth, on="batch_id")
        print(f"ROC-AUC against the batch's labels: {roc_auc_score(joined['label'], joined['score']):.3f}")
        print(scores.sort("score", descending=True).select("batch_id", "score", "top1_feature", "top1_share").head(5))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="fewer epochs for a quick run (default: the library's)")
    main(parser.parse_args().epochs)
