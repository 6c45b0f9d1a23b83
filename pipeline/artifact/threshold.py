"""The threshold record a model carries (rows with score > value are anomalous), and where a
score falls among the validation scores. Fitting a threshold is `pipeline.training.calibrate`'s
work: this module stays free of scipy.stats and scikit-learn, so scoring does not load them."""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

from pipeline.core.config import AlarmRule, Persistence

# Where a score falls among the validation scores, 0-100 (the `percentile` column): whole
# percentiles, then finer steps in the top one, where alarms are decided.
PERCENTILE_LEVELS = [float(v) for v in range(99)] + [99.0 + i / 10 for i in range(10)] + [99.95, 99.99, 100.0]


class Calibration(BaseModel):
    """The scores a threshold was fitted on: how many, whence, and which share of the training
    rows (windows) they stand for. `training period`: every training window of a sensor model,
    scored by the final model; `validation`: its validation rows (tables)."""

    source: Literal["validation", "training period"]
    rows: int = Field(ge=1)
    coverage: float = Field(ge=0, le=1)


class Threshold(BaseModel):
    """A fitted threshold: rows with score > value are anomalous (in sensor mode, after the
    persistence rule). `note` says why a method fell back to another rule, or that the
    calibration scores were too few for the rate asked, when so."""

    value: float
    method: str
    parameters: dict[str, float] = {}
    persistence: Persistence = Persistence()
    alarm: AlarmRule = AlarmRule()  # models exported before it take the default
    note: str = ""
    calibration: Calibration | None = None  # absent in models exported before it


class PercentileTable(BaseModel):
    """Validation scores at given percentiles (0-100), both non-decreasing, as many of each."""

    levels: list[float]
    values: list[float]

    @model_validator(mode="after")
    def _monotone(self) -> PercentileTable:
        if len(self.levels) != len(self.values) or len(self.levels) < 2:
            raise ValueError("levels and values need the same number (≥ 2) of entries")
        for name, row in (("levels", self.levels), ("values", self.values)):
            if not all(math.isfinite(v) for v in row) or any(b < a for a, b in pairwise(row)):
                raise ValueError(f"{name} must be finite and must not decrease")
        return self


def percentile_table(scores: np.ndarray) -> PercentileTable:
    """The validation scores at PERCENTILE_LEVELS, as stored in the manifest."""
    finite = np.asarray(scores, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return PercentileTable(levels=PERCENTILE_LEVELS, values=[float(v) for v in np.percentile(finite, PERCENTILE_LEVELS)])


def percentile_of(scores: np.ndarray, table: PercentileTable) -> np.ndarray:
    """Where each score falls among the validation scores (0-100, linear between the stored
    levels): comparable across models, whatever the number of inputs makes the scores' size."""
    levels: np.ndarray = np.interp(scores, table.values, table.levels)
    return levels.astype(np.float32)


def threshold_at_quantile(quantile: float, table: PercentileTable) -> float:
    """The validation score at `quantile` (0-1), linear between the stored levels: a threshold
    given as a share of the calibration scores, as `--threshold-quantile` takes it."""
    return float(np.interp(100.0 * quantile, table.levels, table.values))


def misplaced_threshold(value: float, table: PercentileTable | None, own: float) -> str | None:
    """Why a threshold given by hand is likely not the one meant, or None: below every
    validation score, every row is flagged (newcomer review N4: `--threshold 0.99`, a quantile
    typed as a score, flagged 2,931 of 2,940 rows); above every one and the model's own, only
    what calibration never saw. Said with which option does what."""
    if table is None:
        return None
    if value < table.values[0]:
        where = f"lies below every calibration score (the lowest is {table.values[0]:.4g}): nearly every row is flagged"
    elif value > max(table.values[-1], own):
        where = f"lies above every calibration score (the highest is {table.values[-1]:.4g}): few rows can be flagged"
    else:
        return None
    return (
        f"threshold {value:.4g} {where}. --threshold is a raw score (this model's own is {own:.4g}); "
        "--threshold-quantile 0.99 takes a share of the calibration scores, and `vad threshold` re-fits one."
    )


class Int8Drift(BaseModel):
    """How far the int8 scorer's scores moved from the fp32 scorer's, on a probe batch."""

    median_relative_change: float
    max_relative_change: float


QUANTILES = ("0.5", "0.9", "0.99")  # the validation score quantiles every manifest records


class ValidationRecord(BaseModel):
    """What the validation split said about the model (the manifest's `validation`): the
    objective reached, the score's quantiles (alerts measure severity from the median, the
    score of a normal row) and percentiles, and what export measured (parity, int8 drift).
    Typed, so a model without its quantiles is refused instead of alerting at the wrong level."""

    rows: int = Field(ge=1)
    neg_beta_elbo: float
    neg_elbo: float
    score_quantiles: dict[str, float]
    score_percentiles: PercentileTable | None = None  # absent in models exported before it
    parity_max_relative_error: float | None = None  # written by export, after the parity gate
    int8: Int8Drift | None = None  # with `[export] int8 = true`

    @field_validator("score_quantiles")
    @classmethod
    def _has_quantiles(cls, quantiles: dict[str, float]) -> dict[str, float]:
        missing = [q for q in QUANTILES if q not in quantiles]
        if missing:
            raise ValueError(f"validation score quantiles {missing} are missing (alert severity needs the median)")
        if not all(math.isfinite(v) for v in quantiles.values()):
            raise ValueError("a validation score quantile is not a finite number")
        return quantiles

    @property
    def normal_score(self) -> float:
        """The median validation score: where a normal row scores."""
        return self.score_quantiles["0.5"]
