"""Threshold fitting on known distributions."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.build.calibrate import fit_threshold
from pipeline.core.config import ThresholdConfig
from pipeline.core.errors import PipelineError

SCORES = np.random.default_rng(0).exponential(1.0, 200_000)


def test_quantile_and_contamination() -> None:
    assert fit_threshold(SCORES, ThresholdConfig(quantile=0.99)).value == pytest.approx(np.log(100), rel=0.03)
    assert fit_threshold(SCORES, ThresholdConfig(method="contamination", contamination=0.05)).value == \
        pytest.approx(np.log(20), rel=0.03)


def test_pot_extrapolates_to_the_target_false_alarm_rate() -> None:
    # Exponential tail: P(score > t) = exp(-t), so risk 1e-4 ↔ t = ln(1e4) ≈ 9.21.
    threshold = fit_threshold(SCORES, ThresholdConfig(method="pot", pot_risk=1e-4, pot_initial_quantile=0.98))
    assert threshold.value == pytest.approx(np.log(1e4), rel=0.08)
    assert threshold.parameters["gpd_shape"] == pytest.approx(0.0, abs=0.1)


def test_best_f1_separates_labelled_scores() -> None:
    scores = np.array([0.1, 0.2, 0.3, 5.0, 6.0])
    labels = np.array([0, 0, 0, 1, 1])
    threshold = fit_threshold(scores, ThresholdConfig(method="best-f1"), labels)
    assert 0.3 <= threshold.value < 5.0
    assert threshold.parameters["f1"] == 1.0


def test_best_f1_without_labels_is_a_clear_error() -> None:
    with pytest.raises(PipelineError, match="needs labels"):
        fit_threshold(SCORES, ThresholdConfig(method="best-f1"))
