"""The PyTorch modules that become the ONNX graphs. Validation scores at training are
computed with `ScorerGraph` itself, so the threshold is fitted on exactly what is exported."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline import elbo
from pipeline.model import VAE
from pipeline.train import Scaler

INPUT_CLIP = 1e4  # scaled units; keeps squared errors finite for absurd inputs


class _Scaling(nn.Module):
    """Raw features → clipped scaled features, plus log(scale) to report densities in raw units."""

    def __init__(self, scaler: Scaler) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(scaler.mean))
        self.register_buffer("scale", torch.from_numpy(scaler.scale))
        self.register_buffer("log_scale", torch.log(torch.from_numpy(scaler.scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.scale).clamp(-INPUT_CLIP, INPUT_CLIP)


class EncoderGraph(nn.Module):
    """scaled features [batch, features] → (mu, logvar), each [batch, members, latent]."""

    def __init__(self, vae: VAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vae.encode(x)


class DecoderGraph(nn.Module):
    """z [batch, members, latent] → (reconstruction mean, log-variance), each
    [batch, members, features], in scaled units."""

    def __init__(self, vae: VAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vae.reconstruction(z)


class ScorerGraph(nn.Module):
    """Raw features → score (negative ELBO at z = mu, averaged over members), per-input NLL
    and KL (member means), and mu [batch, members, latent]."""

    def __init__(self, vae: VAE, scaler: Scaler) -> None:
        super().__init__()
        self.vae, self.scaling = vae, _Scaling(scaler)

    def forward(self, x_raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.scaling(x_raw)
        mu, logvar = self.vae.encode(x)
        nll = (self.vae.feature_nll(x, mu) + self.scaling.log_scale).mean(-2)
        kl = elbo.kl_to_standard_normal(mu, logvar).mean(-1)
        return nll.sum(-1) + kl, nll, kl, mu


class SampledScorerGraph(nn.Module):
    """Raw features and standard-normal noise eps[batch, samples, latent] → log importance
    weights log p(x, z_k) − log q(z_k | x) per sample and member [batch, samples, members],
    and the mean per-input NLL. Per member, the MC ELBO is the mean of its weights and the
    IWAE bound their log-mean-exp; the score averages members. The caller draws eps (shared
    by the members), so a seed fixes the scores."""

    def __init__(self, vae: VAE, scaler: Scaler) -> None:
        super().__init__()
        self.vae, self.scaling = vae, _Scaling(scaler)

    def forward(self, x_raw: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.scaling(x_raw).unsqueeze(1)  # [batch, 1, features]
        mu, logvar = self.vae.encode(x)  # [batch, 1, members, latent]
        z = self.vae.reparameterize(mu, logvar, eps.unsqueeze(-2))  # [batch, samples, members, latent]
        nll = self.vae.feature_nll(x, z) + self.scaling.log_scale
        log_weight = -nll.sum(-1) + elbo.standard_log_normal(z) - elbo.log_normal(z, mu, logvar)
        return log_weight, nll.mean((1, 2))


GRAPH_IO = {
    "encoder": (["x_scaled"], ["mu", "logvar"]),
    "decoder": (["z"], ["mean", "logvar"]),
    "scorer": (["x"], ["score", "feature_nll", "kl", "mu"]),
    "scorer_sampled": (["x", "eps"], ["log_weight", "feature_nll"]),
}


def build_graphs(vae: VAE, scaler: Scaler) -> dict[str, nn.Module]:
    return {"encoder": EncoderGraph(vae), "decoder": DecoderGraph(vae),
            "scorer": ScorerGraph(vae, scaler), "scorer_sampled": SampledScorerGraph(vae, scaler)}


@torch.no_grad()
def score_with_torch(vae: VAE, scaler: Scaler, x_raw: np.ndarray, batch: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Scores (higher = more anomalous) and per-input NLL, as the exported scorer computes them."""
    graph = ScorerGraph(vae, scaler).eval()
    device = next(vae.parameters()).device
    scores, nlls = [], []
    for start in range(0, len(x_raw), batch):
        chunk = torch.from_numpy(np.ascontiguousarray(x_raw[start:start + batch], dtype=np.float32)).to(device)
        score, nll, _, _ = graph.to(device)(chunk)
        scores.append(score.float().cpu().numpy())
        nlls.append(nll.float().cpu().numpy())
    return np.concatenate(scores), np.concatenate(nlls)
