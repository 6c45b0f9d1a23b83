"""The MLP variational autoencoder (PyTorch). Encode, reparameterise and decode stay apart,
and the likelihood maths lives in `pipeline.model.elbo`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import pairwise

import torch
from torch import nn

from pipeline.model import elbo
from pipeline.model.likelihood import Density, Family, density_of, shape_df

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0  # posterior log-variance bounds, far from any trained value


@dataclass(frozen=True)
class VAEShape:
    """Everything needed to rebuild the network (stored in checkpoint and manifest)."""

    n_inputs: int
    hidden: tuple[int, ...]
    latent: int
    likelihood: Family
    dropout: float = 0.0
    members: int = 1  # independently initialised VAEs trained side by side; scores are averaged
    student_df: float | None = None  # the Student-t's degrees of freedom, when likelihood is student

    @classmethod
    def for_inputs(  # noqa: PLR0913 - the config's model fields, one each
        cls,
        n_inputs: int,
        hidden: list[int] | None,
        latent: int | None,
        likelihood: Family,
        dropout: float,
        members: int = 1,
        student_df: float | None = None,
    ) -> VAEShape:
        """Fill unset sizes by the measured rule: hidden [2d, d] clipped, latent 4 (2 below 8 inputs;
        a table's config settles its own latent first, `settled_latent`; see README)."""
        if hidden is None:
            hidden = [min(128, max(16, 2 * n_inputs)), min(64, max(8, n_inputs))]
        if latent is None:
            latent = 4 if n_inputs >= 8 else 2
        return cls(n_inputs, tuple(hidden), latent, likelihood, dropout, members, shape_df(likelihood, student_df))

    @property
    def density(self) -> Density:
        return density_of(self.likelihood, self.student_df)

    def to_dict(self) -> dict:
        return asdict(self)

    def multiply_adds_per_row(self) -> int:
        """Multiply-adds of one row through encoder and decoder, all members together."""
        encoder = [self.n_inputs, *self.hidden, 2 * self.latent]
        decoder = [self.latent, *reversed(self.hidden), self.n_inputs]
        return self.members * sum(a * b for sizes in (encoder, decoder) for a, b in pairwise(sizes))


class MemberLinear(nn.Module):
    """One linear layer per ensemble member, applied in a single batched MatMul: inputs
    [..., members, in] (or [..., 1, in], broadcast to every member) → [..., members, out].
    Each member is initialised like `nn.Linear`, from its own draws."""

    def __init__(self, members: int, n_in: int, n_out: int) -> None:
        super().__init__()
        layers = [nn.Linear(n_in, n_out) for _ in range(members)]
        self.weight = nn.Parameter(torch.stack([layer.weight.detach().T for layer in layers]))  # [M, in, out]
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))  # [M, out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.shape[0] == 1:  # one member: a plain MatMul (an Einsum is 1.4× slower)
            if x.dim() == 2:  # bias added inside the GEMM: one pass fewer in training
                return torch.addmm(self.bias[0], x, self.weight[0])
            return x @ self.weight[0] + self.bias[0]
        # Members first, then one batched MatMul: onnxruntime runs it 1.7× faster than the
        # Einsum it replaced and can quantise it to int8; a member axis of 1 (inputs shared
        # by all members) broadcasts in it.
        # The permutations name every axis (no negative ones): the TorchScript exporter writes
        # them into Transpose as given, and onnxruntime refuses a negative perm.
        members, rank = self.weight.shape[0], x.dim()
        weight = self.weight.view(members, *[1] * (rank - 3), *self.weight.shape[1:])
        members_first = [rank - 2, *range(rank - 2), rank - 1]
        members_back = [*range(1, rank - 1), 0, rank - 1]
        return (x.permute(members_first) @ weight).permute(members_back) + self.bias

    def members_first(self, x: torch.Tensor) -> torch.Tensor:
        """Training's layout: [members, batch, in] → [members, batch, out] in one batched
        MatMul with the bias inside it (baddbmm), no transposes around it."""
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)

    def member(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Member `index`'s layer alone on 2-D inputs [batch, in] → [batch, out]: one Gemm
        with its bias (and the ReLU after it) fused in onnxruntime."""
        return torch.addmm(self.bias[index], x, self.weight[index])


def _run_member(mlp: nn.Sequential, x: torch.Tensor, index: int) -> torch.Tensor:
    """One member's path through an ensemble MLP, on 2-D inputs (inference: no dropout)."""
    for layer in mlp:
        if isinstance(layer, MemberLinear):
            x = layer.member(x, index)
        elif isinstance(layer, nn.ReLU):
            x = torch.relu(x)
    return x


def _run_members_first(mlp: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """An ensemble MLP on members-first inputs [members, batch, in] (dropout included)."""
    for layer in mlp:
        x = layer.members_first(x) if isinstance(layer, MemberLinear) else layer(x)
    return x


def _mlp(sizes: list[int], dropout: float, members: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(pairwise(sizes)):
        layers.append(MemberLinear(members, a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU(inplace=True))  # its input (a fresh Linear output) is needed by nothing else
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Gaussian encoder q(z|x) and a decoder p(x|z) of the shape's density (`shape.density`:
    Gaussian with fixed or learned per-feature variance, or Student-t), and Bernoulli on the
    features flagged in `bernoulli_mask`.

    The module holds `shape.members` independent VAEs. Features come in as [..., features];
    every latent and decoded tensor has a member axis just before its last axis
    ([..., members, latent] and [..., members, features])."""

    bernoulli_mask: torch.Tensor  # a buffer
    input_weight: torch.Tensor  # a buffer: each input's weight in the ELBO (train.family_weights)

    def __init__(
        self, shape: VAEShape, bernoulli_mask: torch.Tensor | None = None, input_weight: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.shape = shape
        self.encoder = _mlp([shape.n_inputs, *shape.hidden, 2 * shape.latent], shape.dropout, shape.members)
        self.decoder = _mlp([shape.latent, *reversed(shape.hidden), shape.n_inputs], shape.dropout, shape.members)
        # Learned per-feature log-variance; stays at 0 (unit variance, i.e. MSE) when fixed.
        self.density = shape.density
        self.decoder_logvar = nn.Parameter(
            torch.zeros(shape.members, shape.n_inputs), requires_grad=self.density.learns_variance
        )
        mask = bernoulli_mask if bernoulli_mask is not None else torch.zeros(shape.n_inputs, dtype=torch.bool)
        self.register_buffer("bernoulli_mask", mask.bool())
        # A Python fact, not a tensor test, so the exported graphs hold no data-dependent branch.
        self.uses_bernoulli = bool(mask.any())
        weight = input_weight if input_weight is not None else torch.ones(shape.n_inputs)
        self.register_buffer("input_weight", weight.float())
        self.uses_weight = bool((weight != 1).any())  # likewise: an unweighted model exports the graph it always had

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled features [..., features] → (mu, logvar) of q(z|x), each [..., members, latent].
        The log-variance is bounded: far outside the training range (a 1e38 reading) it would
        pass 88, where exp() overflows float32 and the KL, so the score, becomes inf."""
        if self.shape.members == 1:  # 2-D MatMuls, which onnxruntime fuses with bias and ReLU
            mu, logvar = self.encoder(x).unsqueeze(-2).chunk(2, dim=-1)
        else:
            mu, logvar = self.encoder(x.unsqueeze(-2)).chunk(2, dim=-1)
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def encode_member(self, x: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`encode` for member `index` alone, on [batch, features] → (mu, logvar) [batch, latent].
        The scorer runs members one after another: five chains of 2-D Gemms scored 1.25× faster
        in onnxruntime than the batched MatMuls of `encode` (bench/NOTES.md, issue 19)."""
        mu, logvar = _run_member(self.encoder, x, index).chunk(2, dim=-1)
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def encode_members_first(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`encode` in training's layout: [batch, features] → (mu, logvar) [members, batch, latent].
        A training step took 0.7–0.9 of the time it takes through `encode`'s [batch, members, …]
        layout, whose every layer transposes to a batched MatMul and back (bench/NOTES.md,
        session 6)."""
        inputs = x.unsqueeze(0).expand(self.shape.members, *x.shape)
        mu, logvar = _run_members_first(self.encoder, inputs).chunk(2, dim=-1)
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def feature_nll_members_first(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """`feature_nll` in training's layout: x [batch, features] and z [members, batch,
        latent] → [members, batch, features]."""
        mask = self.bernoulli_mask if self.uses_bernoulli else None
        decoded = _run_members_first(self.decoder, z)
        logvar = self.decoded_logvar().unsqueeze(1)
        return self.weighted(elbo.feature_nll(x, decoded, logvar, mask, self.density))

    def decode_member(self, z: torch.Tensor, index: int) -> torch.Tensor:
        """`decode` for member `index` alone: z [batch, latent] → [batch, features]."""
        return _run_member(self.decoder, z, index)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return mu + torch.exp(0.5 * logvar) * eps

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent → decoder output: Gaussian means, or logits on Bernoulli features."""
        if self.shape.members == 1:
            return self.decoder(z.squeeze(-2)).unsqueeze(-2)
        return self.decoder(z)

    def decoded_logvar(self) -> torch.Tensor:
        """Per-feature log-variance of p(x|z), clamped so no feature gets a degenerate density."""
        return self.decoder_logvar.clamp(-6.0, 6.0)

    def reconstruction(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent → (reconstruction mean, log-variance), both in scaled feature units. Under
        the Student-t the second is the log of the squared scale (0), as its variance ν/(ν−2)
        does not exist for ν ≤ 2."""
        out = self.decode(z)
        mean = torch.where(self.bernoulli_mask, torch.sigmoid(out), out)
        logvar = torch.where(self.bernoulli_mask, torch.zeros_like(out), self.decoded_logvar().expand_as(out))
        return mean, logvar

    def feature_nll(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """−log p(x|z) per member and feature (scaled units): x [..., features] and
        z [..., members, latent] → [..., members, features]."""
        mask = self.bernoulli_mask if self.uses_bernoulli else None
        return self.weighted(elbo.feature_nll(x.unsqueeze(-2), self.decode(z), self.decoded_logvar(), mask, self.density))

    def weighted(self, nll: torch.Tensor) -> torch.Tensor:
        """Per-input NLL [..., features] times each input's weight in the ELBO."""
        return nll * self.input_weight if self.uses_weight else nll
