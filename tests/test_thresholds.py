"""Thresholds (issue 16): POT only where its fit is sound, alarm persistence, re-fitting a
threshold without retraining, the percentile column, and settings refused before training."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import polars as pl
import pytest
from common import DATA

from pipeline.artifact.manifest import read_manifest
from pipeline.cli import main
from pipeline.core.config import ThresholdConfig, load_config
from pipeline.core.errors import PipelineError
from pipeline.data.windows import entity_bounds
from pipeline.runtime import Scorer, persistent
from pipeline.training.calibrate import POT_MIN_SHAPE, fit_threshold

RNG = np.random.default_rng(0)
POT = ThresholdConfig(method="pot", pot_risk=1e-3)


def test_pot_extrapolates_a_sound_tail() -> None:
    scores = RNG.exponential(size=20_000)  # exponential tail: GPD shape 0
    fitted = fit_threshold(scores, POT)
    assert not fitted.note and "fallback" not in fitted.parameters
    assert abs(fitted.parameters["gpd_shape"]) < 0.2
    assert fitted.value == pytest.approx(np.log(1 / 1e-3), rel=0.1)  # the exponential's 0.999 quantile


def test_pot_falls_back_on_a_bounded_tail_with_a_message() -> None:
    scores = RNG.uniform(size=20_000)  # a hard upper end: the fitted shape is about -1
    fitted = fit_threshold(scores, POT)
    assert fitted.parameters["fallback"] == 1.0 and fitted.parameters["gpd_shape"] < POT_MIN_SHAPE
    assert "tail fit is unsound" in fitted.note
    assert fitted.value == pytest.approx(np.quantile(scores, 1 - 1e-3))


def test_pot_falls_back_when_too_few_scores_lie_in_the_tail() -> None:
    fitted = fit_threshold(RNG.normal(size=60), POT)  # above the 0.98 quantile of 60 rows: 2
    assert fitted.parameters["fallback"] == 1.0 and "only 2 validation scores" in fitted.note


def test_persistence_counts_k_of_the_last_n_rows_within_each_series() -> None:
    exceeds = np.array([1, 1, 0, 1, 0, 0, 1, 1, 1, 1], bool)
    flags = persistent(exceeds, [(0, 5), (5, 10)], k=2, n=3)
    # first series: rows 1 (1,1), 3 (1,0,1); second starts afresh at row 5 and fills from row 7
    assert flags.tolist() == [False, True, True, True, False, False, False, True, True, True]


def test_settings_that_cannot_work_are_refused_before_training() -> None:
    with pytest.raises(PipelineError, match="best-f1.*label_column"):
        load_config(None, threshold={"method": "best-f1"})
    with pytest.raises(PipelineError, match="persistence.*sensor"):
        load_config(None, threshold={"persistence": {"k": 2, "n": 3}})
    with pytest.raises(PipelineError, match="cannot exceed"):
        load_config(None, data={"mode": "sensor", "time_column": "t"}, threshold={"persistence": {"k": 4, "n": 3}})


def test_refit_writes_a_new_version_with_the_same_graphs_and_a_persistent_threshold(
    sensor_model: Path, tmp_path: Path
) -> None:
    root = tmp_path / "model"
    shutil.copytree(sensor_model, root / "1")
    (root / "latest").write_text("1\n")
    main_args = [
        "threshold",
        str(root),
        str(DATA / "sensors" / "history.parquet"),
        "--method",
        "quantile",
        "--target",
        "0.995",
        "--persistence",
        "3/5",
    ]
    with pytest.raises(SystemExit) as done:
        main(main_args)
    assert done.value.code == 0
    assert (root / "latest").read_text().strip() == "1"  # published, not live until asked (N15)
    first, second = read_manifest(root / "1"), read_manifest(root / "2")
    assert second.lineage["parent_version"] == "1" and second.lineage["previous_threshold"]["value"] == first.threshold.value
    assert second.threshold.method == "quantile" and (second.threshold.persistence.k, second.threshold.persistence.n) == (
        3,
        5,
    )
    graph = {p.key: p.value for p in onnx.load(str(root / "2" / "scorer.onnx")).metadata_props}
    assert float(graph["threshold"]) == second.threshold.value and graph["created_at"] == second.created_at
    batch = pl.read_parquet(DATA / "sensors" / "batch.parquet")
    old, new = Scorer.load(root / "1").score(batch), Scorer.load(root / "2").score(batch)
    np.testing.assert_array_equal(old["score"].to_numpy(), new["score"].to_numpy())  # same arithmetic
    exceeds = new["score"].to_numpy() > second.threshold.value
    expected = persistent(exceeds, entity_bounds(new, second.feature_schema), 3, 5)
    np.testing.assert_array_equal(new["is_anomaly"].to_numpy(), expected)
    # Persistence drops isolated exceedances and keeps runs (it may also flag a run's next rows,
    # so the counts alone prove nothing: this model's 904 exceedances gave 904 flags).
    assert expected.any() and (exceeds & ~expected).any() and (exceeds & expected).any()


def test_percentile_places_each_score_among_the_validation_scores(tabular_fit) -> None:
    scorer = Scorer.load(tabular_fit.version_dir)
    table = scorer.manifest.validation.score_percentiles
    assert table is not None
    scored = scorer.score(pl.read_csv(DATA / "tabular" / "batch.csv")).sort("score")
    percentile = scored["percentile"].to_numpy()
    assert percentile.min() >= 0 and percentile.max() <= 100 and np.all(np.diff(percentile) >= 0)
    above = scored["score"].to_numpy() > table.values[table.levels.index(99.0)]
    assert np.all(percentile[above] >= 99.0) and np.all(percentile[~above] <= 99.0)
    validation = tabular_fit.calibrated.validation_scores  # the validation rows themselves spread evenly
    from pipeline.artifact.threshold import percentile_of

    assert np.mean(percentile_of(validation, table) <= 50) == pytest.approx(0.5, abs=0.02)


def test_python_and_the_command_line_aim_at_the_same_false_alarm_rate() -> None:
    from pipeline.training.detector import VAEDetector

    assert VAEDetector().contamination == pytest.approx(1 - ThresholdConfig().quantile)
