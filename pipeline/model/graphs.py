"""The PyTorch modules that become the ONNX graphs. Validation scores at training are
computed with `ScorerGraph` itself, so the threshold is fitted on exactly what is exported."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from pipeline.artifact.contract import DECODER, ENCODER, INPUT_CLIP, SCORER, SCORER_SAMPLED, TOP_K
from pipeline.data.scaling import Scaler
from pipeline.data.schema import source_matrix
from pipeline.model import elbo
from pipeline.model.vae import VAE

FLOAT_MAX = float(torch.finfo(torch.float32).max)
# Up to this many inputs plus mapped inputs, the map picks its columns and puts them back by
# MatMul; past it, by Gather. A 0/1 MatMul costs (inputs + mapped) multiply-adds per value and
# the network's first layer about 1,280 per input, so the MatMul loses only on wide tables:
# all inputs mapped, it was still 1.03-1.12× faster at 64, 128 and 256 inputs (bench/NOTES.md).
PICK_BY_MATMUL_UP_TO = 512


class _Scaling(nn.Module):
    """Raw features → clipped scaled features, plus log(scale) to report densities in the
    units of the map (raw units when there is none).

    Only the inputs whose map is not the identity pay for it: they are picked, mapped and
    put back in place. Each value finds its segment by counting the knots at or below it
    (segment 0 lies below the first knot, segment K at or above the last: the linear tails
    are segments like the others), then takes that one segment's line: `base + slope · (x −
    knot)`. This is exact to a rounding in float32 and the same in onnxruntime and torch (a
    sum over all segments is not: its order of additions differs). Centring and scaling are
    folded into `base` and `slope`, and the three are one table, so each value takes one
    Gather, not three (the default scorer 1.07× faster, bench/NOTES.md).

    Up to PICK_BY_MATMUL_UP_TO inputs, picking and putting back are MatMuls with 0/1 matrices
    (exact on finite values: x·1 + 0 + …), which onnxruntime runs faster than Gathers on the
    last axis (the whole scorer 1.15× faster, bench/NOTES.md, session 5)."""

    mean: torch.Tensor  # buffers, registered below (declared for type checkers)
    scale: torch.Tensor
    inverse_scale: torch.Tensor
    log_scale: torch.Tensor
    pick: torch.Tensor  # pick and place, or columns and order: whichever forward() uses
    place: torch.Tensor
    columns: torch.Tensor
    order: torch.Tensor
    offset: torch.Tensor
    knots: torch.Tensor
    line_table: torch.Tensor

    def __init__(self, scaler: Scaler) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(scaler.mean))
        self.register_buffer("scale", torch.from_numpy(scaler.scale))
        self.register_buffer("inverse_scale", 1.0 / torch.from_numpy(scaler.scale))
        self.register_buffer("log_scale", torch.log(torch.from_numpy(scaler.scale)))
        columns = np.flatnonzero(~scaler.identity_columns())
        parts = scaler.monotone_map()
        self.mapped = parts is not None and len(columns) > 0
        if parts is not None and len(columns) > 0:
            all_knots, all_levels, all_tails = parts
            knots, levels = all_knots[columns].astype(np.float64), all_levels[columns].astype(np.float64)
            mean, scale = scaler.mean[columns].astype(np.float64)[:, None], scaler.scale[columns].astype(np.float64)[:, None]
            tail = all_tails[columns].astype(np.float64)[:, None]
            width = np.diff(knots, axis=1)
            inner_slope = np.divide(np.diff(levels, axis=1), width, out=np.zeros_like(width), where=width > 0)
            # per segment 0..K: the level, slope and knot its line starts from (tails included)
            base = np.concatenate([levels[:, :1], levels], axis=1)
            slope = np.concatenate([tail, inner_slope, tail], axis=1)
            start = np.concatenate([knots[:, :1], knots], axis=1)
            n, mapped, k = len(scaler.mean), len(columns), knots.shape[1]
            order = np.arange(n)
            order[columns] = n + np.arange(mapped)  # where each input comes from in [linear, mapped]
            self.by_matmul = n + mapped <= PICK_BY_MATMUL_UP_TO
            if self.by_matmul:
                pick, place = np.zeros((n, mapped)), np.zeros((n + mapped, n))
                pick[columns, np.arange(mapped)] = 1.0
                place[order, np.arange(n)] = 1.0
                selections: list[tuple[str, np.ndarray, type]] = [("pick", pick, np.float32), ("place", place, np.float32)]
            else:
                selections = [("columns", columns, np.int64), ("order", order, np.int64)]
            # only the tables forward() uses are stored
            for name, value, dtype in [
                *selections,
                ("knots", knots.T, np.float32),  # [K, mapped]: a value at or above k of them is in segment k
                ("offset", np.arange(mapped) * (k + 1), np.int64),  # row starts in the flat table
                # per segment (base, slope, knot), one row each: rows of a column start at its offset
                (
                    "line_table",
                    np.stack([((base - mean) / scale).ravel(), (slope / scale).ravel(), start.ravel()], -1),
                    np.float32,
                ),
            ]:
                self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(value, dtype)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaled = (x - self.mean) * self.inverse_scale
        if self.mapped:
            if self.by_matmul:  # an infinite input becomes the largest float first (0·∞ is NaN)
                part = x.clamp(-FLOAT_MAX, FLOAT_MAX) @ self.pick
            else:
                part = x.index_select(-1, self.columns)
            # one comparison per knot on [rows, mapped]: onnxruntime broadcasts [rows, mapped, 1]
            # against [mapped, K] element by element, which made the count 1.7× slower
            # (bench/NOTES.md, session 7)
            at_or_above = _sum([(part >= knot).to(x.dtype) for knot in self.knots.unbind(0)])
            segment = (at_or_above.long() + self.offset).flatten()
            base, slope, knot = self.line_table.index_select(0, segment).view(*part.shape, 3).unbind(-1)
            mapped = base + slope * (part - knot)
            if self.by_matmul:
                return torch.cat([scaled, mapped], -1).clamp(-INPUT_CLIP, INPUT_CLIP) @ self.place
            scaled = torch.cat([scaled, mapped], -1).index_select(-1, self.order)
        return scaled.clamp(-INPUT_CLIP, INPUT_CLIP)


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


class Contributions(nn.Module):
    """Per-input NLL [batch, inputs] → each source column's share of the NLL in excess of its
    validation mean (rows sum to 1, or 0 where nothing is above normal), and the `top_k`
    largest shares with their column indices (ties: the lower index first)."""

    baseline: torch.Tensor  # buffers
    to_source: torch.Tensor

    def __init__(self, baseline: np.ndarray, sources: list[str], top_k: int) -> None:
        super().__init__()
        names, to_source = source_matrix(sources)
        self.register_buffer("baseline", torch.as_tensor(np.asarray(baseline, np.float32)))
        self.register_buffer("to_source", torch.from_numpy(to_source))
        self.one_per_input = names == sources  # no one-hot groups: the sum per column is the identity
        self.top_k = min(top_k, len(names))

    def forward(self, nll: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        excess = (nll - self.baseline).clamp(min=0.0)
        if not self.one_per_input:
            excess = excess @ self.to_source
        # A zero total has all-zero excess, so the floor gives shares of 0 without a Where pass.
        shares = excess / excess.sum(-1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
        # k rounds of max-and-knock-out: 2.3× faster in onnxruntime than its TopK for k ≪ columns.
        # Ties go to the lower index (ArgMax's first maximum), as a stable sort would order them.
        indices, values = [], []
        for _ in range(self.top_k):
            value, index = shares.max(-1, keepdim=True)
            indices.append(index)
            values.append(value)
            shares = shares.scatter(-1, index, -1.0)
        return torch.cat(indices, -1), torch.cat(values, -1)


class ScorerGraph(nn.Module):
    """Raw features → score (negative ELBO at z = mu, averaged over members), per-input NLL
    and KL (member means), mu [batch, members, latent], and the top contributing source
    columns (`top_index`, `top_share`), all in one graph so scoring is one onnxruntime call.

    The Gaussian NLL is `elbo.gaussian_nll` rearranged (`Gaussian.raw_nll`) as diff² · ½e^(−logvar) + (½(log 2π +
    logvar) + log scale): the bracketed terms depend on weights only, so onnxruntime folds
    them at load and each row costs four elementwise passes instead of seven. When every
    input shares one fixed density (unit variance or one Student-t, no 0/1 input, no weights)
    the members share one sum: of diff² (three passes each, the default sensor scorer 1.10×
    faster, bench/NOTES.md, session 7) or of log(ν + diff²) (five), the rest folded into a
    coefficient and an offset."""

    nll_offset: torch.Tensor  # a buffer

    def __init__(
        self,
        vae: VAE,
        scaler: Scaler,
        baseline: np.ndarray | None = None,
        sources: list[str] | None = None,
        top_k: int = TOP_K,
    ) -> None:
        super().__init__()
        self.vae, self.scaling = vae, _Scaling(scaler)
        n = vae.shape.n_inputs
        # One fixed density for every input and member (no learned variance, no 0/1 input, no
        # weights): the members' mean NLL is coefficient · mean(g(diff)) + offset, with g(d) = d²
        # for the unit Gaussian and log(ν + d²) for the Student-t, and the contributions read the
        # excess of the first term over the baseline less the offset (folded here in float64),
        # which rounds less than subtracting two full NLLs.
        density = vae.density
        self.shared_density = not density.learns_variance and not vae.uses_bernoulli and not vae.uses_weight
        log_scale = np.log(scaler.scale.astype(np.float64))
        self.coefficient = density.coefficient
        offset = density.constant + log_scale if self.shared_density else np.zeros(n)
        self.register_buffer("nll_offset", torch.from_numpy(offset.astype(np.float32)))
        self.contributions = Contributions(
            (np.zeros(n) if baseline is None else np.asarray(baseline, np.float64)) - offset,
            sources or [f"x{i}" for i in range(n)],
            top_k,
        )

    def member_nll(self, x: torch.Tensor, decoded: torch.Tensor, index: int) -> torch.Tensor:
        """−log p(x | z = mu) per input in raw units for member `index`: [batch, inputs]."""
        nll = self.vae.density.raw_nll(x, decoded, self.vae.decoded_logvar()[index], self.scaling.log_scale)
        if self.vae.uses_bernoulli:  # Bernoulli inputs are kept raw (scale 1): no log-scale term
            nll = torch.where(self.vae.bernoulli_mask, elbo.bernoulli_nll(x, decoded), nll)
        return self.vae.weighted(nll)

    def score_terms(self, x_raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(score, per-input NLL, KL, mu): the scorer without its ranking of contributions.
        NLL and KL are member means; each member runs on its own (`VAE.encode_member`)."""
        score, nll, kl, mu, _ = self._terms(x_raw)
        return score, nll, kl, mu

    def _terms(self, x_raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """score_terms' four, then the per-input NLL less `nll_offset`."""
        x = self.scaling(x_raw)
        shared, nlls, kls, mus = [], [], [], []
        density = self.vae.density
        for index in range(self.vae.shape.members):
            mu, logvar = self.vae.encode_member(x, index)
            decoded = self.vae.decode_member(mu, index)
            if self.shared_density:
                diff = decoded - x
                square = diff * diff
                shared.append(density.spread(square))
            else:
                nlls.append(self.member_nll(x, decoded, index))
            kls.append(elbo.kl_to_standard_normal(mu, logvar))
            mus.append(mu)
        if self.shared_density:
            varying = _sum(shared) * (self.coefficient / len(shared))
            nll = varying + self.nll_offset
        else:
            nll = varying = _mean(nlls)
        kl = _mean(kls)
        return nll.sum(-1) + kl, nll, kl, torch.stack(mus, -2), varying

    def forward(self, x_raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        score, nll, kl, mu, varying = self._terms(x_raw)
        return score, nll, kl, mu, *self.contributions(varying)


def _sum(terms: list[torch.Tensor]) -> torch.Tensor:
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _mean(terms: list[torch.Tensor]) -> torch.Tensor:
    """The mean of the members' terms, with no pass at all for one member."""
    total = _sum(terms)
    return total if len(terms) == 1 else total * (1.0 / len(terms))


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
        nll = self.vae.feature_nll(x, z) + self.vae.weighted(self.scaling.log_scale)
        log_weight = -nll.sum(-1) + elbo.standard_log_normal(z) - elbo.log_normal(z, mu, logvar)
        return log_weight, nll.mean((1, 2))


def build_graphs(
    vae: VAE, scaler: Scaler, baseline: np.ndarray | None = None, sources: list[str] | None = None
) -> dict[str, nn.Module]:
    """The torch modules exported as the contract's graphs, by graph name."""
    return {
        ENCODER: EncoderGraph(vae),
        DECODER: DecoderGraph(vae),
        SCORER: ScorerGraph(vae, scaler, baseline, sources),
        SCORER_SAMPLED: SampledScorerGraph(vae, scaler),
    }


@torch.no_grad()
def score_with_torch(
    vae: VAE, scaler: Scaler, x_raw: np.ndarray, batch: int = 65536, dtype: torch.dtype = torch.float32
) -> tuple[np.ndarray, np.ndarray]:
    """Scores (higher = more anomalous) and per-input NLL, as the exported scorer computes them.
    `torch.float64` scores a copy of the model in double precision: a row's score then does not
    depend on the rows scored beside it (float32 kernels sum in batch-dependent orders)."""
    graph = ScorerGraph(copy.deepcopy(vae) if dtype != torch.float32 else vae, scaler).eval()
    device = next(vae.parameters()).device
    graph = graph.to(device=device, dtype=dtype)
    out = torch.float64 if dtype == torch.float64 else torch.float32  # half precisions come back as float32
    scores, nlls = [], []
    for start in range(0, len(x_raw), batch):
        chunk = torch.from_numpy(np.ascontiguousarray(x_raw[start : start + batch], dtype=np.float32)).to(device, dtype)
        score, nll, *_ = graph.score_terms(chunk)
        scores.append(score.to(out).cpu().numpy())
        nlls.append(nll.to(out).cpu().numpy())
    return np.concatenate(scores), np.concatenate(nlls)
