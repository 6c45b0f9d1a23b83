"""Alarm thresholds fitted on validation scores (higher score = more anomalous)."""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel
from scipy import stats
from sklearn.metrics import precision_recall_curve

from pipeline.config import ThresholdConfig
from pipeline.errors import PipelineError


class Threshold(BaseModel):
    """A fitted threshold: rows with score > value are anomalous."""

    value: float
    method: str
    parameters: dict[str, float] = {}


def fit_threshold(scores: np.ndarray, config: ThresholdConfig, labels: np.ndarray | None = None) -> Threshold:
    """Fit the configured threshold on (validation) scores."""
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if scores.size < 2:
        raise PipelineError(f"a threshold needs at least 2 finite scores, got {scores.size}.")
    if config.method == "quantile":
        return Threshold(value=float(np.quantile(scores, config.quantile)), method="quantile",
                         parameters={"quantile": config.quantile})
    if config.method == "contamination":
        return Threshold(value=float(np.quantile(scores, 1.0 - config.contamination)), method="contamination",
                         parameters={"contamination": config.contamination})
    if config.method == "pot":
        return pot_threshold(scores, config.pot_initial_quantile, config.pot_risk)
    if labels is None:
        raise PipelineError("threshold method 'best-f1' needs labels: set the data's `label_column`.")
    return best_f1_threshold(scores, np.asarray(labels))


def pot_threshold(scores: np.ndarray, initial_quantile: float, risk: float) -> Threshold:
    """Peaks over threshold (Siffer et al., KDD 2017): fit a generalised Pareto law to the
    excesses over a high quantile and extrapolate to the score exceeded with probability `risk`."""
    t = float(np.quantile(scores, initial_quantile))
    excess = scores[scores > t] - t
    if excess.size < 10:
        raise PipelineError(
            f"POT needs at least 10 scores above the initial quantile {initial_quantile}, got {excess.size}; "
            "use more validation rows or a lower pot_initial_quantile."
        )
    shape, _, scale = stats.genpareto.fit(excess, floc=0.0)
    ratio = risk * scores.size / excess.size
    if abs(shape) < 1e-9:
        value = t - scale * math.log(ratio)
    else:
        value = t + scale / shape * (ratio ** (-shape) - 1.0)
    return Threshold(value=float(value), method="pot", parameters={
        "initial_quantile": initial_quantile, "risk": risk, "gpd_shape": float(shape), "gpd_scale": float(scale),
    })


def best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> Threshold:
    """The threshold that maximises F1 against known labels."""
    if labels.shape != scores.shape or len(np.unique(labels)) < 2:
        raise PipelineError("best-f1 needs one 0/1 label per score with both classes present.")
    precision, recall, cuts = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1]))
    # Scores equal to the cut are anomalous in precision_recall_curve; step just below it.
    value = float(np.nextafter(cuts[best], -np.inf))
    return Threshold(value=value, method="best-f1", parameters={"f1": float(f1[best])})
