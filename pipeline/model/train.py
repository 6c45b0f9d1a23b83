"""Training the VAE: standardise, split, optimise the β-ELBO with KL warm-up, stop early on
validation negative ELBO and restore the best weights. Same seed → same weights on CPU."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.core.config import ModelConfig, TrainConfig
from pipeline.core.errors import PipelineError
from pipeline.data.scaling import Scaler
from pipeline.model import elbo
from pipeline.model.defaults import settled_balance, settled_scaling, settled_train
from pipeline.model.likelihood import density_of
from pipeline.model.optim import FusedAdam
from pipeline.model.vae import VAE, VAEShape

# Batch size and learning rate by device, where the config leaves them open. On the CPU, 256
# rows and 1e-3 are the measured defaults (README, "Defaults"). On CUDA a step of a model this
# small is bound by kernel launches, not arithmetic, so rows per second grow with the batch;
# bench/gpu.py measures the curve and the objective each batch reaches (BENCHMARKS.md, "GPU").
# The learning rate grows with the square root of the batch, up to 3× (batch 4096 at 3e-3
# kept 10_cover's ROC-AUC in bench/speed.py). Batches stay below 1/32 of the rows, so small
# sets keep enough steps per epoch: under 16,384 rows CUDA trains exactly as the CPU does.
CPU_BATCH, CPU_LEARNING_RATE = 256, 1e-3
CUDA_MAX_BATCH = 16384
CUDA_BF16 = False  # bench/gpu.py: bf16 autocast is no faster for layers this narrow
# On the CPU a step whose MatMuls total fewer multiply-adds than this runs on one thread: at
# 32 inputs (11 M per step of 256 rows, 5 members) one thread took 0.85–0.9 of two threads'
# time, at 48 inputs (24 M) 1.05 (bench/NOTES.md, session 6). Threads waking for ops this
# small cost more than they share, and a busy second core slows them far more.
CPU_SINGLE_THREAD_BELOW = 16_000_000


@dataclass(frozen=True)
class TrainingPlan:
    """What one training run uses: the config's choices, or the device's measured defaults."""

    batch_size: int
    learning_rate: float
    bf16: bool
    threads: int | None = None  # torch's CPU threads while training; None: torch's own setting


def training_plan(rows: int, device: torch.device, cfg: TrainConfig, shape: VAEShape) -> TrainingPlan:
    """Batch size, learning rate, bf16 autocast and CPU threads for `rows` training rows of a
    `shape` model on `device`."""
    batch = CPU_BATCH
    if device.type == "cuda":
        batch = min(CUDA_MAX_BATCH, max(CPU_BATCH, 2 ** int(math.log2(max(rows // 32, 1)))))
    batch = cfg.batch_size or batch
    rate = cfg.learning_rate or CPU_LEARNING_RATE * min(3.0, math.sqrt(batch / CPU_BATCH))
    bf16 = (CUDA_BF16 if cfg.bf16 is None else cfg.bf16) and device.type == "cuda"
    small = min(batch, rows) * shape.multiply_adds_per_row() < CPU_SINGLE_THREAD_BELOW
    return TrainingPlan(batch, rate, bf16, 1 if device.type == "cpu" and small else None)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `threads` inside the block and restored after it."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads:
            torch.set_num_threads(before)


@dataclass
class TrainResult:
    """A trained model with what export and threshold fitting need next."""

    model: VAE
    scaler: Scaler
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_validation: float = float("inf")
    device: str = "cpu"
    plan: TrainingPlan | None = None


def resolve_device(requested: str) -> torch.device:
    """`auto` takes CUDA when a working GPU is visible, else the CPU."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise PipelineError("device 'cuda' was requested, but torch sees no CUDA GPU. Use --device cpu or auto.")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


def binary_columns(x: np.ndarray) -> np.ndarray:
    """Columns whose training values are all 0 or 1 (candidates for a Bernoulli likelihood)."""
    return np.all((x == 0) | (x == 1), axis=0)


def family_weights(bernoulli: np.ndarray) -> np.ndarray:
    """Per-input ELBO weights that give the 0/1 inputs (`bernoulli`) and the continuous ones
    equal say: each input of the larger family weighs (smaller / larger), the others 1. All 1
    when one family is absent; never above 1, so no input counts more than it does unweighted."""
    weights = np.ones(len(bernoulli), np.float32)
    binary, continuous = int(bernoulli.sum()), int((~bernoulli).sum())
    if binary and continuous:
        larger = bernoulli if binary > continuous else ~bernoulli
        weights[larger] = min(binary, continuous) / max(binary, continuous)
    return weights


def train_vae(x_train: np.ndarray, x_val: np.ndarray, model_config: ModelConfig, train_config: TrainConfig) -> TrainResult:
    """Fit a VAE on raw feature rows (float32); `x_val` drives early stopping only."""
    if len(x_train) < 2 or len(x_val) < 1:
        raise PipelineError(
            f"training needs at least 2 training and 1 validation rows, got {len(x_train)} and {len(x_val)}."
        )
    device = resolve_device(train_config.device)
    binary = density_of(model_config.likelihood, model_config.student_df).reads_binary
    bernoulli = binary_columns(x_train) if binary else np.zeros(x_train.shape[1], bool)
    # "auto" is settled by the data's mode (defaults.resolve); rows reaching here without one are a table's.
    balanced = settled_balance(model_config.balance, "tabular") == "families"
    weights = family_weights(bernoulli) if balanced else np.ones(x_train.shape[1], np.float32)
    scaler = Scaler.fit(x_train, method=settled_scaling(model_config.scaling, "tabular"), keep_raw=bernoulli)
    train_config = settled_train(train_config, "tabular", x_train.shape[1])  # a table's, unless settled before
    shape = VAEShape.for_inputs(
        x_train.shape[1],
        model_config.hidden,
        model_config.latent,
        model_config.likelihood,
        model_config.dropout,
        model_config.members,
        model_config.student_df,
    )
    devices = [device.index or 0] if device.type == "cuda" else []
    # fork_rng: seeding here never changes the caller's global random state.
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(train_config.seed)
        model = VAE(shape, torch.from_numpy(bernoulli), torch.from_numpy(weights)).to(device)
        # The whole set lives on the device; clipping keeps a few extreme (contaminated) rows
        # from dominating the fit. Scoring clips far wider (contract.INPUT_CLIP).
        clip = train_config.clip_inputs
        train = torch.from_numpy(scaler.transform(x_train)).to(device).clamp_(-clip, clip)
        val = torch.from_numpy(scaler.transform(x_val)).to(device).clamp_(-clip, clip)
        plan = training_plan(len(train), device, train_config, shape)
        with torch_threads(plan.threads):
            result = _optimise(model, train, val, train_config, plan)
    result.scaler = scaler
    return result


def _optimise(model: VAE, train: torch.Tensor, val: torch.Tensor, cfg: TrainConfig, plan: TrainingPlan) -> TrainResult:
    """Adam over minibatches of `train` (on its device), β warmed up, the worst rows of each
    batch trimmed, stopping early on `val`'s objective. `cfg` is settled (β and trim set)."""
    beta = cfg.beta
    assert beta is not None and cfg.trim_fraction is not None  # settled_train leaves neither open
    # The fused Adam step (one kernel over all parameters) took a quarter of the per-tensor loop's
    # time; FusedAdam runs it without torch.optim's 1.3 s import of torch._dynamo (optim.py).
    # Training devices are the CPU and CUDA (TrainConfig.device), both with the fused kernel.
    epochs = EpochRunner(model, FusedAdam(model.parameters(), lr=plan.learning_rate), cfg, plan)
    stopping = EarlyStopping(cfg.patience, cfg.warmup_epochs, cfg.epochs)
    history: list[dict] = []
    bar = tqdm(range(1, cfg.epochs + 1), desc="train", unit="epoch", disable=None if cfg.progress else True, leave=False)
    for epoch in bar:
        started = time.perf_counter()
        weight = kl_weight(epoch, beta, cfg.warmup_epochs)
        nll_mean, kl_mean = epochs.train_epoch(train, weight)
        val_nll, val_kl, val_kl_floored = validation_terms(model, val, cfg.free_bits)
        # Stop on the objective being optimised (negative β-ELBO at the final β, with the
        # same free-bits floor); the plain ELBO (β = 1) is recorded beside it.
        validation = val_nll + beta * val_kl_floored
        seconds = time.perf_counter() - started
        history.append(
            {
                "epoch": epoch,
                "nll": nll_mean,
                "kl": kl_mean,
                "kl_weight": weight,
                "validation_objective": validation,
                "validation_neg_elbo": val_nll + val_kl,
                "rows_per_s": len(train) / seconds,
                "seconds": seconds,
            }
        )
        bar.set_postfix(
            nll=f"{nll_mean:.3f}", kl=f"{kl_mean:.3f}", val=f"{validation:.3f}", rows_s=f"{len(train) / seconds:,.0f}"
        )
        if stopping.stop(epoch, validation, model):
            break
    bar.close()
    stopping.restore(model)
    model.eval()
    return TrainResult(
        model=model,
        scaler=None,  # type: ignore[arg-type]
        history=history,
        best_epoch=stopping.best_epoch,
        best_validation=stopping.best_value,
        device=str(train.device),
        plan=plan,
    )


def kl_weight(epoch: int, beta: float, warmup_epochs: int) -> float:
    """The KL term's weight in `epoch` (from 1): β, reached linearly over the warm-up epochs."""
    return beta * min(1.0, epoch / warmup_epochs) if warmup_epochs else beta


class EarlyStopping:
    """Keeps the weights of the best validation objective and stops after `patience` epochs
    without a relative gain of 1e-4. Epochs inside the KL warm-up optimise another objective:
    none of them is judged (the last epoch is, whatever the warm-up)."""

    def __init__(self, patience: int, warmup_epochs: int, epochs: int) -> None:
        self.patience, self.warmup_epochs, self.epochs = patience, warmup_epochs, epochs
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_value, self.best_epoch, self.stale = float("inf"), 0, 0

    def stop(self, epoch: int, validation: float, model: VAE) -> bool:
        """Judge `epoch`'s objective (keeping the model's weights when they are the best); True: stop."""
        if epoch < self.warmup_epochs and epoch < self.epochs:
            return False
        if self.best_state is None or validation < self.best_value - 1e-4 * abs(self.best_value):
            self.best_value, self.best_epoch, self.stale = validation, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.stale += 1
        return self.stale >= self.patience

    def restore(self, model: VAE) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


def loss_terms(model: VAE, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-row, per-member reconstruction NLL and KL of one batch, and q(z|x)'s moments,
    each [batch, members, …], computed members first (VAE.encode_members_first)."""
    mu, logvar = model.encode_members_first(batch)
    z = model.reparameterize(mu, logvar, torch.randn_like(mu))
    nll = model.feature_nll_members_first(batch, z).sum(-1)
    kl = elbo.kl_to_standard_normal(mu, logvar)
    return nll.T, kl.T, mu.transpose(0, 1), logvar.transpose(0, 1)


class EpochRunner:
    """One pass over the training rows: minibatches in a fresh order, each a trimmed β-ELBO step."""

    def __init__(self, model: VAE, optimiser: FusedAdam, cfg: TrainConfig, plan: TrainingPlan) -> None:
        self.model, self.optimiser, self.cfg, self.plan = model, optimiser, cfg, plan
        self.terms = torch.compile(loss_terms) if cfg.compile else loss_terms

    def train_epoch(self, train: torch.Tensor, weight: float) -> tuple[float, float]:
        """One epoch at KL weight `weight`; the mean NLL and KL per row, over every row seen."""
        model, cfg, device = self.model, self.cfg, train.device
        assert cfg.trim_fraction is not None
        model.train()
        order = torch.randperm(len(train), device=device)
        sums = torch.zeros(2, device=device)  # accumulated on the device: no per-batch sync
        for start in range(0, len(train), self.plan.batch_size):
            batch = train[order[start : start + self.plan.batch_size]]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.plan.bf16):
                nll, kl, mu, logvar = self.terms(model, batch)  # nll, kl: [batch, members]
            # Rows whose β-loss is in the top `trim_fraction` of the batch (per member) are left
            # out: unlabelled training data holds anomalies, and a VAE that learns to
            # reconstruct them stops flagging them. Summed over members, so each member's
            # gradient is exactly that of its own (trimmed) β-ELBO.
            keep = elbo.trimmed_mask((nll + weight * kl).detach(), cfg.trim_fraction)
            kept = keep.sum(0)
            kl_term = (
                elbo.kl_with_free_bits(mu, logvar, cfg.free_bits, keep)
                if cfg.free_bits
                else ((kl * keep).sum(0) / kept).sum()
            )
            loss = ((nll * keep).sum(0) / kept).sum() + weight * kl_term
            self.optimiser.zero_grad()
            loss.backward()
            self.optimiser.step()
            sums += torch.stack([nll.detach().mean(-1).sum(), kl.detach().mean(-1).sum()]).float()
        nll_mean, kl_mean = (sums / len(train)).tolist()
        return nll_mean, kl_mean


@torch.no_grad()
def validation_terms(model: VAE, x: torch.Tensor, free_bits: float = 0.0, batch: int = 65536) -> tuple[float, float, float]:
    """Mean reconstruction NLL (z = mu), KL, and KL with the free-bits floor on scaled rows,
    averaged over ensemble members, in batches so a large validation set never has to fit
    through the network at once."""
    was_training = model.training
    model.eval()
    nll_sum = torch.zeros((), device=x.device)
    kl_per_dim = torch.zeros(model.shape.members, model.shape.latent, device=x.device)
    for start in range(0, len(x), batch):
        rows = x[start : start + batch]
        mu, logvar = model.encode(rows)
        nll_sum += model.feature_nll(rows, mu).sum()
        kl_per_dim += elbo.kl_per_dimension(mu, logvar).sum(0)
    model.train(was_training)
    members = model.shape.members
    kl_per_dim /= len(x)
    return (
        float(nll_sum) / len(x) / members,
        float(kl_per_dim.sum()) / members,
        float(kl_per_dim.clamp(min=free_bits).sum()) / members,
    )
