"""`VAEDetector` in a scikit-learn Pipeline and a GridSearchCV, with the label convention spelled out.

    .venv/bin/python examples/python/sklearn_pipeline.py [--epochs N]

The y convention: here, as in PyOD, y = 1 marks an anomaly. scikit-learn's outlier detectors
(this one, IsolationForest) score the other way round: `decision_function` and
`score_samples` are *higher for normal rows*. So `scoring="roc_auc"` with y = 1 for anomalies
measures 1 − AUC. Score with `anomaly_score` (higher = more anomalous), as below, or pass
y = 1 for normal rows to scikit-learn's own scorers."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, PredefinedSplit
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.training.detector import VAEDetector

DATA = Path(__file__).resolve().parents[2] / "data"
FEATURES = ["temperature", "pressure", "duration_min", "energy_kwh", "yield_pct", "defects"]


def anomaly_score(pipeline: Pipeline, X: np.ndarray) -> np.ndarray:
    """The detector's negative ELBO (higher = more anomalous) after the pipeline's transforms."""
    return pipeline[-1].anomaly_score(pipeline[:-1].transform(X))


def anomaly_auc(pipeline: Pipeline, X: np.ndarray, y: np.ndarray) -> float:
    """A GridSearchCV scorer: ROC-AUC with y = 1 for anomalies."""
    return roc_auc_score(y, anomaly_score(pipeline, X))


def main(epochs: int) -> None:
    history = pl.read_csv(DATA / "tabular" / "history.csv")
    batch = pl.read_csv(DATA / "tabular" / "batch.csv")
    # Fit on unlabelled history, choose on the labelled batch: a split scikit-learn is told about.
    X = np.vstack([history.select(FEATURES).to_numpy(), batch.select(FEATURES).to_numpy()]).astype(np.float32)
    y = np.concatenate([np.zeros(history.height), batch["label"].to_numpy()])
    split = PredefinedSplit(np.concatenate([np.full(history.height, -1), np.zeros(batch.height)]))

    pipeline = make_pipeline(StandardScaler(), VAEDetector(epochs=epochs, members=1, random_state=0))
    search = GridSearchCV(
        pipeline,
        {"vaedetector__latent": [2, 4], "vaedetector__beta": [0.5, 1.0]},
        scoring=anomaly_auc,
        cv=split,
        refit=False,
    )
    search.fit(X, y)
    for params, auc in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"], strict=True):
        print(f"{params}: ROC-AUC {auc:.3f}")
    print(f"best: {search.best_params_}")

    # What `scoring="roc_auc"` would have reported for the same detector, with y = 1 for anomalies:
    fitted = make_pipeline(StandardScaler(), VAEDetector(epochs=epochs, members=1, random_state=0)).fit(X[y == 0])
    batch_x, batch_y = batch.select(FEATURES).to_numpy().astype(np.float32), batch["label"].to_numpy()
    print(
        f"ROC-AUC ranking by decision_function (scikit-learn's default scorer): "
        f"{roc_auc_score(batch_y, fitted.decision_function(batch_x)):.3f}; "
        f"by anomaly_score: {roc_auc_score(batch_y, anomaly_score(fitted, batch_x)):.3f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="training epochs per candidate")
    main(parser.parse_args().epochs)
