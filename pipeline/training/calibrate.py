"""Alarm thresholds fitted on validation scores (higher score = more anomalous): quantile,
contamination, peaks over threshold, or best F1 against labels."""

from __future__ import annotations

import logging
import math

import numpy as np

from pipeline.artifact.threshold import Threshold
from pipeline.core.config import ThresholdConfig
from pipeline.core.errors import PipelineError

log = logging.getLogger(__name__)

# POT's tail fit is trusted only with this many excesses over the initial quantile, and with a
# generalised Pareto shape of at least -0.5: below it the maximum-likelihood estimate is
# irregular (Smith 1985) and the extrapolated threshold sits at the fitted tail's end point.
# Measured on the bundled sensor demo: shape -1.32 flagged 3.1% of clean windows for a 0.1% risk.
POT_MIN_EXCESSES = 10
POT_MIN_SHAPE = -0.5


def fit_threshold(scores: np.ndarray, config: ThresholdConfig, labels: np.ndarray | None = None) -> Threshold:
    """Fit the configured threshold on (validation) scores."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    scores = scores[finite]
    if scores.size < 2:
        raise PipelineError(f"a threshold needs at least 2 finite scores, got {scores.size}.")
    if config.method == "quantile":
        fitted = finite_sample_quantile(scores, config.quantile, "quantile", {"quantile": config.quantile})
    elif config.method == "contamination":
        fitted = finite_sample_quantile(
            scores, 1.0 - config.contamination, "contamination", {"contamination": config.contamination}
        )
    elif config.method == "pot":
        fitted = pot_threshold(scores, config.pot_initial_quantile, config.pot_risk)
    elif labels is None:
        raise PipelineError("threshold method 'best-f1' needs labels: name their column (--label-column, `label_column`).")
    else:
        fitted = best_f1_threshold(scores, np.asarray(labels)[finite])
    return fitted.model_copy(update={"persistence": config.persistence, "alarm": config.alarm})


def finite_sample_quantile(scores: np.ndarray, level: float, method: str, parameters: dict[str, float]) -> Threshold:
    """The ⌈(n + 1)·level⌉-th smallest of n scores: a new normal score exceeds it with
    probability at most 1 − level when the scores are exchangeable (the split-conformal rank;
    an interpolated quantile of a few scores sits below the tail it is meant to bound). Where
    n is too small for that rank, the largest score stands in and the note says so."""
    ordered = np.sort(scores)
    rank = math.ceil((len(ordered) + 1) * level)
    note = ""
    if rank > len(ordered):
        needed = math.ceil(level / (1.0 - level))
        note = (
            f"only {len(ordered)} calibration scores for a {1 - level:.3g} rate of flags (it needs at least "
            f"{needed}): the threshold is their largest score, and the rate of flags on normal data can be "
            "higher than asked; train on more data or ask for a higher rate."
        )
        log.warning(note)
    return Threshold(value=float(ordered[min(rank, len(ordered)) - 1]), method=method, parameters=parameters, note=note)


def pot_threshold(scores: np.ndarray, initial_quantile: float, risk: float) -> Threshold:
    """Peaks over threshold (Siffer et al., KDD 2017): fit a generalised Pareto law to the
    excesses over a high quantile and extrapolate to the score exceeded with probability `risk`.
    Where the fit cannot be trusted (too few excesses, or a shape below POT_MIN_SHAPE), the
    empirical (1 − risk) quantile is used instead, and the note says why."""
    t = float(np.quantile(scores, initial_quantile))
    excess = scores[scores > t] - t
    parameters = {"initial_quantile": initial_quantile, "risk": risk}
    if excess.size < POT_MIN_EXCESSES:
        return _pot_fallback(
            scores,
            parameters,
            f"only {excess.size} validation scores lie above the initial "
            f"quantile {initial_quantile} (the fit needs {POT_MIN_EXCESSES})",
        )
    from scipy import stats  # here, not at the top: 0.4 s of every `vad train` start, for `pot` only

    shape, _, scale = stats.genpareto.fit(excess, floc=0.0)
    parameters.update(gpd_shape=float(shape), gpd_scale=float(scale))
    if shape < POT_MIN_SHAPE:
        return _pot_fallback(scores, parameters, f"the tail fit is unsound (GPD shape {shape:.2f} < {POT_MIN_SHAPE})")
    ratio = risk * scores.size / excess.size
    if abs(shape) < 1e-9:
        value = t - scale * math.log(ratio)
    else:
        value = t + scale / shape * (ratio ** (-shape) - 1.0)
    return Threshold(value=float(value), method="pot", parameters=parameters)


def _pot_fallback(scores: np.ndarray, parameters: dict[str, float], why: str) -> Threshold:
    risk = parameters["risk"]
    note = f"POT fell back to the empirical {1 - risk:g} quantile of {scores.size} validation scores: {why}."
    log.warning(note)
    return Threshold(
        value=float(np.quantile(scores, 1.0 - risk)), method="pot", parameters={**parameters, "fallback": 1.0}, note=note
    )


def best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> Threshold:
    """The threshold that maximises F1 against known labels."""
    if labels.shape != scores.shape or len(np.unique(labels)) < 2:
        raise PipelineError("best-f1 needs one 0/1 label per score with both classes present.")
    from sklearn.metrics import precision_recall_curve  # only with labels: 0.2 s of start-up otherwise

    precision, recall, cuts = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1]))
    # Scores equal to the cut are anomalous in precision_recall_curve; step just below it.
    value = float(np.nextafter(cuts[best], -np.inf))
    return Threshold(value=value, method="best-f1", parameters={"f1": float(f1[best])})
