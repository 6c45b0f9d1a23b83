"""Threshold fitting on known distributions."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.config import ThresholdConfig
from pipeline.core.errors import PipelineError
from pipeline.training.calibrate import fit_threshold

SCORES = np.random.default_rng(0).exponential(1.0, 200_000)


def test_quantile_and_contamination() -> None:
    assert fit_threshold(SCORES, ThresholdConfig(quantile=0.99)).value == pytest.approx(np.log(100), rel=0.03)
    assert fit_threshold(SCORES, ThresholdConfig(method="contamination", contamination=0.05)).value == pytest.approx(
        np.log(20), rel=0.03
    )


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


def test_the_finite_sample_quantile_bounds_the_rate_of_a_new_score() -> None:
    """The ⌈(n + 1)·q⌉-th smallest of n scores: with 199 scores and q = 0.99 the 198th, where an
    interpolated quantile sits between the 197th and 198th."""
    scores = np.arange(1.0, 200.0)
    assert fit_threshold(scores, ThresholdConfig(quantile=0.99)).value == 198.0
    assert np.quantile(scores, 0.99) < 198.0


def test_too_few_scores_for_the_rate_take_the_largest_and_say_so() -> None:
    fitted = fit_threshold(np.arange(60.0), ThresholdConfig(quantile=0.99))
    assert fitted.value == 59.0
    assert "only 60 calibration scores" in fitted.note and "at least 99" in fitted.note
    assert fit_threshold(np.arange(600.0), ThresholdConfig(quantile=0.99)).note == ""


def test_the_alarm_rule_travels_with_the_threshold() -> None:
    from pipeline.core.config import AlarmRule

    fitted = fit_threshold(SCORES[:1000], ThresholdConfig(alarm=AlarmRule(hold_off=7)))
    assert fitted.alarm.hold_off == 7
