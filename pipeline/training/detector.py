"""`VAEDetector`: the VAE behind scikit-learn's outlier-detector interface.

Scores follow scikit-learn (as IsolationForest does): `score_samples` is the ELBO, so
lower = more abnormal; `decision_function` is negative for outliers; `predict` gives −1
for outliers and 1 for inliers. `anomaly_score` is the negative ELBO (higher = more
anomalous), the same number the CLI and the ONNX scorer write as `score`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

try:
    import torch
    from sklearn.base import BaseEstimator, OutlierMixin
    from sklearn.utils.validation import check_is_fitted, validate_data
except ModuleNotFoundError as missing:  # a scoring-only install (newcomer review N21)
    raise ModuleNotFoundError(
        f"VAEDetector trains a model and needs '{missing.name}': install the training extra, "
        "pip install 'vae-pipeline[train]' (scoring needs none of it).",
        name=missing.name,
    ) from missing

from pipeline.artifact.threshold import Threshold
from pipeline.core.config import DataConfig, ModelConfig, PipelineConfig, ThresholdConfig, TrainConfig
from pipeline.core.errors import PipelineError
from pipeline.data.inputs import model_inputs
from pipeline.data.schema import FeatureSchema, learn_schema
from pipeline.model.defaults import resolve
from pipeline.model.graphs import score_with_torch
from pipeline.model.train import TrainResult
from pipeline.training.export import Destination, FittedModel, Provenance, export_model
from pipeline.training.fit import fingerprint, random_validation_mask, train_and_calibrate, validation_record

MIN_ROWS = 3  # to fit: a training row, and the two validation rows a threshold needs


class VAEDetector(OutlierMixin, BaseEstimator):
    """Variational-autoencoder outlier detector; defaults are the measured library defaults.

    The constructor only stores its arguments; everything learned ends in `_`.
    `threshold_` is the (1 − contamination) quantile of the training scores. The default
    contamination, 0.01, is the false-alarm rate `vad train`'s default threshold (the 0.99
    quantile of validation scores) aims at, so Python and the command line flag alike; PyOD's
    0.1 assumes a tenth of the data is anomalous, which it rarely is."""

    def __init__(  # noqa: PLR0913 - scikit-learn's convention: each hyperparameter a keyword
        self,
        *,
        hidden: list[int] | None = None,
        latent: int | None = None,
        members: int = ModelConfig().members,
        likelihood: str = ModelConfig().likelihood,
        student_df: float = ModelConfig().student_df,
        scaling: str = ModelConfig().scaling,
        beta: float | None = TrainConfig().beta,
        epochs: int = 100,
        batch_size: int | None = None,
        learning_rate: float | None = None,
        patience: int = 10,
        validation_fraction: float = 0.1,
        free_bits: float = TrainConfig().free_bits,
        trim_fraction: float | None = TrainConfig().trim_fraction,
        contamination: float = ThresholdConfig().contamination,
        device: str = "auto",
        random_state: int = 0,
        progress: bool = False,
    ) -> None:
        self.hidden = hidden
        self.latent = latent
        self.members = members
        self.likelihood = likelihood
        self.student_df = student_df
        self.scaling = scaling
        self.beta = beta
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.free_bits = free_bits
        self.trim_fraction = trim_fraction
        self.contamination = contamination
        self.device = device
        self.random_state = random_state
        self.progress = progress

    def _config(self) -> PipelineConfig:
        return PipelineConfig(
            model=ModelConfig(
                hidden=self.hidden,
                latent=self.latent,
                members=self.members,
                likelihood=self.likelihood,
                student_df=self.student_df,
                scaling=self.scaling,
            ),
            train=TrainConfig(
                epochs=self.epochs,
                batch_size=self.batch_size,
                learning_rate=self.learning_rate,
                beta=self.beta,
                free_bits=self.free_bits,
                trim_fraction=self.trim_fraction,
                patience=self.patience,
                validation_fraction=self.validation_fraction,
                seed=self.random_state,
                device=self.device,
                progress=self.progress,
            ),
            threshold=ThresholdConfig(method="contamination", contamination=self.contamination),
        )

    def _rows(self, X, learn: bool = False) -> np.ndarray:
        """Polars frames go through the feature schema (types, categories, missing values);
        anything else through scikit-learn's own checks (`validate_data`: 2-D, finite, dense,
        real, MIN_ROWS rows to fit, the fitted number of features), as float32."""
        if isinstance(X, pl.DataFrame):
            if learn:
                self.schema_ = learn_schema(X, DataConfig())
            elif not isinstance(getattr(self, "schema_", None), FeatureSchema):
                raise PipelineError("this detector was fitted on an array; pass an array, not a DataFrame.")
            x = model_inputs(X, self.schema_, windows="none").x
            if learn:
                self.n_features_in_ = x.shape[1]
                self.feature_names_in_ = np.asarray(self.schema_.input_names, dtype=object)
            return x
        x = validate_data(self, X, reset=learn, dtype=np.float32, ensure_min_samples=MIN_ROWS if learn else 1)
        if learn:
            names = [f"x{i}" for i in range(x.shape[1])]
            self.schema_ = learn_schema(pl.DataFrame(x, schema=names), DataConfig())
        return np.ascontiguousarray(x)

    def fit(self, X, y=None) -> VAEDetector:
        """Train without labels (`y` is ignored). Returns self."""
        x = self._rows(X, learn=True)
        config = self._config()
        rng = np.random.default_rng(self.random_state)
        is_validation = random_validation_mask(len(x), self.validation_fraction, rng)
        calibrated = train_and_calibrate(x, is_validation, config)
        self.model_ = calibrated.result.model
        self.scaler_ = calibrated.result.scaler
        self.history_ = calibrated.result.history
        self.feature_baseline_ = calibrated.feature_baseline
        self._validation = validation_record(calibrated)  # for export: alerts' severity needs its quantiles
        train_scores = score_with_torch(self.model_, self.scaler_, x, dtype=torch.float64)[0]  # x is already checked
        self.threshold_ = float(np.quantile(train_scores, 1.0 - self.contamination))
        self.offset_ = -self.threshold_
        self._train_fingerprint = fingerprint(x, self.schema_.input_names)
        return self

    def anomaly_score(self, X) -> np.ndarray:
        """Negative ELBO per row: higher = more anomalous."""
        check_is_fitted(self, "model_")
        # float64: a row scores the same alone or among others (scikit-learn's subset-invariance
        # check failed by 1 float32 ulp on one machine, newcomer review 2026-12-07).
        return score_with_torch(self.model_, self.scaler_, self._rows(X), dtype=torch.float64)[0]

    def score_samples(self, X) -> np.ndarray:
        """ELBO per row (a lower bound of log p(x)): lower = more abnormal."""
        return -self.anomaly_score(X)

    def decision_function(self, X) -> np.ndarray:
        """`score_samples − offset_`: negative for outliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """−1 for outliers, 1 for inliers."""
        return np.where(self.decision_function(X) < 0, -1, 1)

    def export(self, root: str | Path = "exported", name: str = "detector", int8: bool = False) -> Path:
        """Write ONNX graphs and manifest like `vad train` does (with `int8`, the int8 scorer
        too); returns the version folder."""
        check_is_fitted(self, "model_")
        result = TrainResult(model=self.model_, scaler=self.scaler_, history=self.history_)
        threshold = Threshold(
            value=self.threshold_, method="contamination", parameters={"contamination": self.contamination}
        )
        probe = self.scaler_.inverse(np.random.default_rng(0).standard_normal((256, self.n_features_in_)))
        fitted = FittedModel(result, self.schema_, threshold, self.feature_baseline_)
        provenance = Provenance(
            training=resolve(self._config(), inputs=self.n_features_in_).model_dump(mode="json"),
            training_data=self._train_fingerprint,
            validation=self._validation,
        )
        return export_model(fitted, provenance, Destination(name, root), probe, int8=int8)
