"""The threshold record a model carries (rows with score > value are anomalous), and where a
score falls among the validation scores. Fitting a threshold is `pipeline.build.calibrate`'s
work: this module stays free of scipy.stats and scikit-learn, so scoring does not load them."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from pipeline.core.config import Persistence

# Where a score falls among the validation scores, 0-100 (the `percentile` column): whole
# percentiles, then finer steps in the top one, where alarms are decided.
PERCENTILE_LEVELS = [float(v) for v in range(99)] + [99.0 + i / 10 for i in range(10)] + [99.95, 99.99, 100.0]


class Threshold(BaseModel):
    """A fitted threshold: rows with score > value are anomalous (in sensor mode, after the
    persistence rule). `note` says why a method fell back to another rule, when it did."""

    value: float
    method: str
    parameters: dict[str, float] = {}
    persistence: Persistence = Persistence()
    note: str = ""


def percentile_table(scores: np.ndarray) -> dict[str, list[float]]:
    """The validation scores at PERCENTILE_LEVELS, as stored in the manifest."""
    finite = np.asarray(scores, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return {"levels": PERCENTILE_LEVELS, "values": [float(v) for v in np.percentile(finite, PERCENTILE_LEVELS)]}


def percentile_of(scores: np.ndarray, table: dict[str, list[float]]) -> np.ndarray:
    """Where each score falls among the validation scores (0-100, linear between the stored
    levels): comparable across models, whatever the number of inputs makes the scores' size."""
    return np.interp(scores, table["values"], table["levels"]).astype(np.float32)
