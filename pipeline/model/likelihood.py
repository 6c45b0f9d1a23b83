"""The decoder's density p(x|z) on continuous inputs, one small class per family: what the VAE,
the ELBO, the scorer graph and training ask of a likelihood, in one place, so a new family is
one class here (issue 49: the family was a string and a loose float branched on at 8 sites).

- `fixed`: Gaussian with unit variance in scaled units (the ELBO's squared error).
- `gaussian`: Gaussian with a learned per-feature variance.
- `bernoulli`: `fixed` on continuous inputs, Bernoulli on 0/1 columns.
- `student`: Student-t with unit scale and `df` degrees of freedom, Bernoulli on 0/1 columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from pipeline.model import elbo

Family = Literal["fixed", "gaussian", "bernoulli", "student"]


@dataclass(frozen=True)
class Gaussian:
    """−log N(x; mean, exp(logvar)); the variance is learned per feature (`gaussian`) or unit."""

    learns_variance: bool = False
    reads_binary: bool = False  # 0/1 columns are scored as Bernoulli (`bernoulli`)
    df: ClassVar[None] = None
    # A unit density's NLL is coefficient · g(diff²) + constant: the scorer graph folds the
    # constant (with the scaler's log-scale) and sums g over members once (ScorerGraph).
    coefficient: ClassVar[float] = 0.5
    constant: ClassVar[float] = 0.5 * elbo.LOG_2PI

    def nll(self, x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return elbo.gaussian_nll(x, mean, logvar)

    def raw_nll(self, x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        """`nll` in raw units (plus the scaler's log-scale), arranged as d² · ½e^(−logvar) + (½(log 2π
        + logvar) + log scale): the bracket depends on weights only, so onnxruntime folds it at load
        and each row costs four elementwise passes instead of seven (the scorer graph's form)."""
        diff = x - mean
        return diff * diff * (0.5 * torch.exp(-logvar)) + (0.5 * (elbo.LOG_2PI + logvar) + log_scale)

    def spread(self, square: torch.Tensor) -> torch.Tensor:
        """g(diff²) of the folded form."""
        return square


@dataclass(frozen=True)
class StudentT:
    """−log t_ν(x; mean, 1): quadratic near the mean, logarithmic in the tails."""

    df: float
    learns_variance: bool = False
    reads_binary: bool = True

    def nll(self, x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return elbo.student_nll(x, mean, self.df)

    def raw_nll(self, x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        """`nll` in raw units: plus the scaler's log-scale."""
        return self.nll(x, mean, logvar) + log_scale

    @property
    def coefficient(self) -> float:  # −log t_ν(d) = const + ½(ν+1)·(log(ν + d²) − log ν)
        return 0.5 * (self.df + 1.0)

    @property
    def constant(self) -> float:
        return elbo.student_constant(self.df) - self.coefficient * math.log(self.df)

    def spread(self, square: torch.Tensor) -> torch.Tensor:
        return torch.log(square + self.df)


Density = Gaussian | StudentT


def density_of(family: str, student_df: float | None = None) -> Density:
    """The density a configured family names (`student_df` is read by `student` alone)."""
    if family == "student":
        if student_df is None:
            raise ValueError("the student likelihood needs its degrees of freedom (model.student_df)")
        return StudentT(float(student_df))
    if family == "gaussian":
        return Gaussian(learns_variance=True)
    if family == "bernoulli":
        return Gaussian(reads_binary=True)
    if family == "fixed":
        return Gaussian()
    raise ValueError(f"unknown likelihood {family!r}: fixed, gaussian, bernoulli or student")


def shape_df(family: str, student_df: float | None) -> float | None:
    """The degrees of freedom a model's shape keeps: its family's, None for the others."""
    return density_of(family, student_df).df
