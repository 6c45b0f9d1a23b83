"""VAEDetector keeps scikit-learn's outlier-detector contract (river-style generic checks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from pipeline.runtime import Scorer
from pipeline.training.detector import VAEDetector

RNG = np.random.default_rng(0)
NORMAL = RNG.normal(size=(800, 6)).astype(np.float32)
OUTLIERS = RNG.normal(6, 1, size=(20, 6)).astype(np.float32)
X = np.vstack([NORMAL, OUTLIERS])


@pytest.fixture(scope="module")
def fitted() -> VAEDetector:
    return VAEDetector(epochs=15, contamination=0.05).fit(X)


def test_constructor_only_stores_arguments() -> None:
    detector = VAEDetector(latent=3, beta=2.0)
    assert detector.get_params()["latent"] == 3
    assert not [k for k in vars(detector) if k.endswith("_")]
    assert clone(detector).get_params() == detector.get_params()


def test_fit_returns_self_with_fitted_attributes(fitted: VAEDetector) -> None:
    assert fitted.n_features_in_ == 6
    assert not hasattr(fitted, "feature_names_in_")  # scikit-learn's rule: only a frame's columns have names
    assert fitted.offset_ == -fitted.threshold_


def test_scoring_layers_and_directions(fitted: VAEDetector) -> None:
    anomaly = fitted.anomaly_score(X)
    np.testing.assert_allclose(fitted.score_samples(X), -anomaly)
    np.testing.assert_allclose(fitted.decision_function(X), fitted.score_samples(X) - fitted.offset_)
    predicted = fitted.predict(X)
    assert set(np.unique(predicted)) == {-1, 1}
    assert (predicted == -1).mean() == pytest.approx(0.05, abs=0.01)
    assert anomaly[-20:].min() > np.median(anomaly[:800])  # beats chance: planted outliers rank high


def test_input_is_not_mutated_and_scores_repeat(fitted: VAEDetector) -> None:
    copy = X.copy()
    first = fitted.anomaly_score(X)
    np.testing.assert_array_equal(X, copy)
    np.testing.assert_array_equal(first, fitted.anomaly_score(X))


def test_two_seeded_fits_agree() -> None:
    a = VAEDetector(epochs=12, random_state=3).fit(NORMAL).anomaly_score(OUTLIERS)
    b = VAEDetector(epochs=12, random_state=3).fit(NORMAL).anomaly_score(OUTLIERS)
    np.testing.assert_array_equal(a, b)


def test_scoring_before_fit_fails_clearly() -> None:
    with pytest.raises(NotFittedError):
        VAEDetector().predict(X)


def test_wrong_width_is_a_clear_error(fitted: VAEDetector) -> None:
    with pytest.raises(ValueError, match="X has 4 features, but VAEDetector is expecting 6 features"):
        fitted.predict(X[:, :4])


def test_polars_frames_with_categories_are_accepted() -> None:
    frame = pl.DataFrame({"a": NORMAL[:, 0], "b": NORMAL[:, 1], "kind": np.where(NORMAL[:, 2] > 0, "p", "q")})
    detector = VAEDetector(epochs=5).fit(frame)
    assert detector.anomaly_score(frame).shape == (800,)
    assert list(detector.feature_names_in_) == ["a", "b", "kind=p", "kind=q"]


def test_export_matches_in_onnx(fitted: VAEDetector, tmp_path: Path) -> None:
    folder = fitted.export(tmp_path, name="det")
    scorer = Scorer.load(folder)
    np.testing.assert_allclose(scorer.score_array(X).score, fitted.anomaly_score(X), rtol=1e-5)
    assert scorer.threshold == pytest.approx(fitted.threshold_)


@pytest.mark.parametrize("binary", [False, True], ids=["continuous", "with-0/1-inputs"])
def test_a_student_t_model_exports_and_scores_alike_in_onnx(binary: bool, tmp_path: Path) -> None:
    """`likelihood = "student"` through the export's parity gate, on both scorer paths (the
    shared sum over members, and per member beside Bernoulli inputs); the outliers still lead."""
    x = np.hstack([X, (X[:, :1] > 0).astype(np.float32)]) if binary else X
    detector = VAEDetector(epochs=15, likelihood="student", student_df=3.0).fit(x)
    scorer = Scorer.load(detector.export(tmp_path, name="student"))
    assert scorer.manifest.model["likelihood"] == "student" and scorer.manifest.model["student_df"] == 3.0
    scores = scorer.score_array(x).score
    np.testing.assert_allclose(scores, detector.anomaly_score(x), rtol=1e-5)
    assert scores[len(NORMAL) :].min() > np.quantile(scores[: len(NORMAL)], 0.99)


def test_exported_detector_alerts_at_the_severity_its_scores_warrant(fitted: VAEDetector, tmp_path: Path) -> None:
    """The manifest keeps the validation scores' quantiles, so a peak just past the threshold
    is a warning; without them the median fell back to the threshold and every alert was critical."""
    from pipeline.artifact.manifest import read_manifest
    from pipeline.core.config import AlertRules
    from pipeline.ops.alerts import evaluate
    from pipeline.ops.records import BatchRef

    manifest = read_manifest(fitted.export(tmp_path, "alerting"))
    assert manifest.validation.normal_score < manifest.threshold.value
    just_past = manifest.threshold.value + 1e-3
    scored = pl.DataFrame({"score": [just_past] * 3, "is_anomaly": [True] * 3})
    alert, _ = evaluate(scored, manifest, AlertRules(), BatchRef(file="batch.csv", sha256="x"), last_alerts={})
    assert alert is not None and alert.severity == "warning"


@pytest.mark.parametrize("name", ["../../../x", "a/b", ".hidden", ""])
def test_export_name_is_a_name_not_a_path(fitted: VAEDetector, tmp_path: Path, name: str) -> None:
    from pipeline.core.errors import PipelineError

    with pytest.raises(PipelineError, match="never a path"):
        fitted.export(tmp_path / "root", name)
    assert not (tmp_path / "x").exists() and not list(tmp_path.rglob("*.onnx"))
