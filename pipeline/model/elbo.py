"""ELBO maths as pure torch functions, shared by training and the exported ONNX graphs.

All terms are negative log densities, so higher = more anomalous. The runtime never
re-implements them: it runs the graphs that were traced from these functions."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

if TYPE_CHECKING:  # the densities build on this module's functions
    from pipeline.model.likelihood import Density

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-element −log N(x; mean, exp(logvar))."""
    return 0.5 * (LOG_2PI + logvar + (x - mean).square() * torch.exp(-logvar))


def student_constant(df: float) -> float:
    """The Student-t density's normaliser, −log of Γ((ν+1)/2) / (Γ(ν/2) √(νπ)), at unit scale.
    A Python number: ν is fixed by the config, so no graph ever carries a log-gamma (ONNX has none)."""
    return math.lgamma(0.5 * df) - math.lgamma(0.5 * (df + 1.0)) + 0.5 * math.log(df * math.pi)


def student_nll(x: torch.Tensor, mean: torch.Tensor, df: float) -> torch.Tensor:
    """Per-element −log t_ν(x; mean, 1): quadratic near the mean like the unit Gaussian's, but
    logarithmic in the tails, so one column's extreme residual weighs less against the rest of
    the row, and the few contaminated rows in training pull the fit less."""
    return student_constant(df) + 0.5 * (df + 1.0) * torch.log1p((x - mean).square() * (1.0 / df))


def bernoulli_nll(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per-element −log Bernoulli(x; sigmoid(logits)), stable for large logits. A value
    outside [0, 1], which a Bernoulli feature never takes, is scored at the nearer end plus
    half its squared distance from it, so it counts as unlikely, never as likely (the raw
    formula rewards x = 5 when the logit is large)."""
    inside = x.clamp(0.0, 1.0)
    return F.softplus(logits) - inside * logits + 0.5 * (x - inside).square()


def feature_nll(
    x: torch.Tensor,
    decoded: torch.Tensor,
    logvar: torch.Tensor,
    bernoulli_mask: torch.Tensor | None,
    density: Density,
) -> torch.Tensor:
    """Per-feature reconstruction term: Bernoulli where the mask is set, the model's continuous
    density (`pipeline.model.likelihood`) elsewhere."""
    continuous = density.nll(x, decoded, logvar)
    if bernoulli_mask is None:
        return continuous
    return torch.where(bernoulli_mask, bernoulli_nll(x, decoded), continuous)


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) ‖ N(0, 1)) of each latent dimension, in closed form: the one place
    the formula is written (training, validation and the exported scorer all sum it)."""
    return 0.5 * (mu * mu + torch.exp(logvar) - 1.0 - logvar)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) ‖ N(0, I)) per row."""
    return kl_per_dimension(mu, logvar).sum(-1)


def kl_with_free_bits(
    mu: torch.Tensor, logvar: torch.Tensor, free_bits: float, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Batch-mean KL per latent dimension, each floored at `free_bits` nats (Kingma et al.
    2016): dimensions below the floor get no pressure to collapse further. `weights` (one
    per row, or per row and member) turn the mean into a weighted one. Returns a scalar."""
    per_row_dim = kl_per_dimension(mu, logvar)
    if weights is None:
        per_dim = per_row_dim.mean(0)
    else:
        w = weights.unsqueeze(-1)
        per_dim = (per_row_dim * w).sum(0) / w.sum(0)
    return per_dim.clamp(min=free_bits).sum()


def trimmed_mask(per_row_loss: torch.Tensor, fraction: float) -> torch.Tensor:
    """1.0 for rows kept, 0.0 for the `fraction` with the largest loss (per column, i.e. per
    ensemble member): the trimmed likelihood of robust statistics. At least one row stays."""
    if fraction <= 0:
        return torch.ones_like(per_row_loss)
    keep = max(1, int(per_row_loss.shape[0] * (1.0 - fraction)))
    cut = per_row_loss.kthvalue(keep, dim=0, keepdim=True).values
    return (per_row_loss <= cut).to(per_row_loss.dtype)


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, exp(logvar)) summed over the last axis."""
    return -gaussian_nll(z, mu, logvar).sum(-1)


def standard_log_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last axis."""
    return -0.5 * (LOG_2PI + z.square()).sum(-1)
