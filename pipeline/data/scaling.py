"""Input scaling fitted on training rows: an optional monotone per-column map, then centring
and scaling. The same numbers drive training (numpy, here), the exported graphs
(`graphs._Scaling`) and other runtimes (the manifest's `scaler`).

`quantile` maps each clearly skewed column through its own rank-Gauss curve, piecewise
linear between `QUANTILE_KNOTS` training quantiles and linear beyond them, so a heavy-tailed
column looks Gaussian to the VAE (its unit-variance likelihood fits it) while a value far
outside the training range stays far outside (SKAB's valve shift is 57 sd in one sensor;
the plain rank-Gauss map of scikit-learn's QuantileTransformer would cap it at 5.2)."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

QUANTILE_KNOTS = 8  # ADBench / SKAB, 3 seeds: 8 knots 0.828 / 0.969, 16 knots 0.826 / 0.974 (bench/NOTES.md)
# Only clearly skewed columns are mapped (|sample skewness| above this; 1 is the usual line
# for "highly skewed"). Mapping every column cost SKAB 0.11: expanding the dense middle of
# its near-symmetric sensors magnified the test rig's drift (bench/NOTES.md, session 6).
MIN_SKEW = 1.0
# Eight knots are seven segments; below 100 training rows a segment, the map's knots are noise
# more than shape. ADBench, 3 seeds: the 5 sets under 700 fitted rows (50–483) each scored
# 0.006–0.050 higher with no map, the 19 above lost 0.004 in all without it (bench/NOTES.md,
# session 7: chosen on either half, the rule gained on the other).
MIN_ROWS_PER_SEGMENT = 100


@dataclass(frozen=True)
class Scaler:
    """scaled = (map(raw) − mean) / scale, where `map` is the identity when `knots` is None.

    knots, levels: [inputs, K] map values at sorted raw positions (non-decreasing; a column
    with fewer distinct knots repeats its last one); tail: [inputs] slope beyond the ends."""

    mean: np.ndarray
    scale: np.ndarray
    knots: np.ndarray | None = None
    levels: np.ndarray | None = None
    tail: np.ndarray | None = None

    @classmethod
    def fit(
        cls, x: np.ndarray, method: str = "standard", keep_raw: np.ndarray | None = None, n_knots: int = QUANTILE_KNOTS
    ) -> Scaler:
        """`standard`: mean and standard deviation; `robust`: median and IQR/1.349 (a column
        with zero IQR falls back to its standard deviation); `quantile`: the rank-Gauss map,
        then standard, with no map at all below MIN_ROWS_PER_SEGMENT rows per segment.
        Constant columns keep scale 1; columns in `keep_raw` (Bernoulli features) stay 0/1."""
        if method not in ("standard", "robust", "quantile"):
            raise ValueError(f"unknown scaling {method!r}: standard, robust or quantile")
        keep_raw = np.zeros(x.shape[1], bool) if keep_raw is None else keep_raw
        knots = levels = tail = None
        if method == "quantile" and len(x) >= MIN_ROWS_PER_SEGMENT * (n_knots - 1):
            knots, levels, tail = _rank_gauss(x, n_knots, keep_raw)
            if _identity(knots, levels, tail).all():  # no column is skewed enough to map
                knots = levels = tail = None
            else:
                x = apply_map(x, knots, levels, tail)
        std = x.std(axis=0, dtype=np.float64)
        if method == "robust":
            low, mean, high = np.quantile(x, [0.25, 0.5, 0.75], axis=0)
            scale = np.where(high - low > 1e-8, (high - low) / 1.349, std)
        else:
            mean, scale = x.mean(axis=0, dtype=np.float64), std
        scale = np.where(scale < 1e-8, 1.0, scale)
        mean, scale = np.where(keep_raw, 0.0, mean), np.where(keep_raw, 1.0, scale)
        return cls(mean.astype(np.float32), scale.astype(np.float32), knots, levels, tail)

    def monotone_map(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(knots, levels, tail) when there is a map, else None."""
        if self.knots is None or self.levels is None or self.tail is None:
            return None
        return self.knots, self.levels, self.tail

    def identity_columns(self) -> np.ndarray:
        """Inputs whose map leaves every value as it is (all of them when there is no map)."""
        parts = self.monotone_map()
        return np.ones(len(self.mean), bool) if parts is None else _identity(*parts)

    def transform(self, x: np.ndarray) -> np.ndarray:
        parts = self.monotone_map()
        if parts is not None:
            x = apply_map(x, *parts)
        return ((x - self.mean) / self.scale).astype(np.float32)

    def inverse(self, scaled: np.ndarray) -> np.ndarray:
        """Scaled values back to raw units (decoder samples): the map is strictly increasing
        where it is not padding, so it inverts exactly."""
        mapped = scaled * self.scale + self.mean
        parts = self.monotone_map()
        if parts is None:
            return mapped.astype(np.float32)
        knots, levels, tail = parts
        return apply_map(mapped, levels, knots, 1.0 / tail)


def _rank_gauss(x: np.ndarray, n_knots: int, keep_raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column: knots at `n_knots` evenly spaced training quantiles, levels at the standard
    normal quantiles of the same probabilities (the ends at 0.5/n and 1 − 0.5/n), tied knots
    merged at their mean level, slope 1/std beyond the ends. Columns with fewer than three
    distinct values, with |skewness| ≤ `MIN_SKEW`, and `keep_raw` ones get the identity."""
    probabilities = np.linspace(0.0, 1.0, n_knots)
    edge = 0.5 / len(x)
    # The standard library's inverse CDF (within 1e-15 of scipy's ndtri) for these few knots:
    # importing scipy.special cost every `vad train` and `vad score` start 0.11 s.
    normal = np.array([NormalDist().inv_cdf(p) for p in np.clip(probabilities, edge, 1.0 - edge).tolist()])
    columns = x.shape[1]
    knots = np.tile(np.r_[0.0, np.ones(n_knots - 1)], (columns, 1))  # the identity, for columns left alone
    levels, tail = knots.copy(), np.ones(columns, np.float64)
    two_valued = np.all((x == x.min(axis=0)) | (x == x.max(axis=0)), axis=0)
    mapped = ~keep_raw & ~two_valued
    for j in np.flatnonzero(mapped):  # column by column in float64: no copy of the whole matrix
        mapped[j] = abs(_skewness(x[:, j])) > MIN_SKEW
    if not mapped.any():
        return knots.astype(np.float32), levels.astype(np.float32), tail.astype(np.float32)
    quantiles = np.quantile(x[:, mapped], probabilities, axis=0).T  # [mapped columns, K]
    for j, column_quantiles in zip(np.flatnonzero(mapped), quantiles, strict=True):
        unique, inverse = np.unique(column_quantiles, return_inverse=True)
        merged = np.bincount(inverse, weights=normal) / np.bincount(inverse)
        count = len(unique)
        knots[j, :count], knots[j, count:] = unique, unique[-1]
        levels[j, :count], levels[j, count:] = merged, merged[-1]
        tail[j] = 1.0 / max(float(x[:, j].std(dtype=np.float64)), 1e-12)
    return knots.astype(np.float32), levels.astype(np.float32), tail.astype(np.float32)


def _skewness(column: np.ndarray) -> float:
    """The sample skewness m3 / m2^1.5 (scipy.stats.skew's default), in float64; scipy's own
    call costs 1.4 ms of argument checks per column, more than the arithmetic."""
    centred = column.astype(np.float64) - column.mean(dtype=np.float64)
    squared = centred * centred
    m2, m3 = squared.mean(), (squared * centred).mean()
    return float(m3 / m2**1.5) if m2 > 0 else 0.0


def _identity(knots: np.ndarray, levels: np.ndarray, tail: np.ndarray) -> np.ndarray:
    return np.all(knots == levels, axis=1) & (tail == 1.0)


def apply_map(x: np.ndarray, knots: np.ndarray, levels: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """The piecewise-linear map per column (float32): interpolation between the knots, slope
    `tail` beyond the first and the last."""
    out = x.astype(np.float32)  # identity columns (0/1, symmetric, constant) stay as they are
    for j in np.flatnonzero(~_identity(knots, levels, tail)):
        column = x[:, j].astype(np.float64)
        low, high = float(knots[j, 0]), float(knots[j, -1])
        out[:, j] = np.interp(column, knots[j], levels[j]) + tail[j] * (
            np.minimum(column - low, 0.0) + np.maximum(column - high, 0.0)
        )
    return out
