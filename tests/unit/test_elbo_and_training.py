"""ELBO maths against torch.distributions, and training behaviour (seeds, early stopping,
checkpoints)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Normal, StudentT, kl_divergence

from pipeline.core.config import ModelConfig, TrainConfig
from pipeline.core.errors import PipelineError
from pipeline.data.scaling import Scaler
from pipeline.model import elbo
from pipeline.model.graphs import ScorerGraph, score_with_torch
from pipeline.model.train import family_weights, train_vae

X = np.random.default_rng(1).normal(size=(600, 5)).astype(np.float32)
FAST = TrainConfig(epochs=8, patience=3, progress=False)


def test_nll_terms_match_torch_distributions() -> None:
    x, mean, logvar = torch.randn(50, 4), torch.randn(50, 4), torch.randn(50, 4)
    expected = -Normal(mean, torch.exp(0.5 * logvar)).log_prob(x)
    torch.testing.assert_close(elbo.gaussian_nll(x, mean, logvar), expected)
    target, logits = torch.randint(0, 2, (50, 4)).float(), torch.randn(50, 4) * 5
    torch.testing.assert_close(elbo.bernoulli_nll(target, logits), -Bernoulli(logits=logits).log_prob(target))
    for df in (1.0, 4.0, 30.0):
        expected = -StudentT(df, mean, 1.0).log_prob(x)
        torch.testing.assert_close(elbo.student_nll(x, mean, df), expected)


def test_kl_matches_torch_distributions() -> None:
    mu, logvar = torch.randn(20, 3), torch.randn(20, 3)
    expected = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(elbo.kl_to_standard_normal(mu, logvar), expected)


def test_same_seed_gives_same_weights_and_other_seed_does_not() -> None:
    a = train_vae(X[:500], X[500:], ModelConfig(), FAST)
    b = train_vae(X[:500], X[500:], ModelConfig(), FAST)
    c = train_vae(X[:500], X[500:], ModelConfig(), FAST.model_copy(update={"seed": 1}))
    for (name, wa), wb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        torch.testing.assert_close(wa, wb, rtol=0, atol=0, msg=name)
    assert not torch.equal(a.model.encoder[0].weight, c.model.encoder[0].weight)


def test_training_does_not_touch_global_random_state() -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    train_vae(X[:500], X[500:], ModelConfig(), FAST)
    assert torch.equal(before, torch.random.get_rng_state())


def test_best_epoch_is_restored_and_history_recorded() -> None:
    result = train_vae(X[:500], X[500:], ModelConfig(), TrainConfig(epochs=30, patience=2, progress=False))
    values = [h["validation_objective"] for h in result.history][9:]  # after warm-up
    assert result.best_validation == pytest.approx(min(values))
    assert result.history[result.best_epoch - 1]["validation_objective"] == pytest.approx(min(values))
    assert result.best_epoch >= 10  # never inside the KL warm-up
    assert {"epoch", "nll", "kl", "kl_weight", "rows_per_s"} <= set(result.history[0])


def test_learned_variance_and_bernoulli_likelihoods_train() -> None:
    binary = np.hstack([X, (X[:, :2] > 0).astype(np.float32)])
    result = train_vae(binary[:500], binary[500:], ModelConfig(likelihood="bernoulli"), FAST)
    assert result.model.bernoulli_mask.tolist() == [False] * 5 + [True] * 2
    assert result.scaler.scale[5:].tolist() == [1.0, 1.0]  # Bernoulli inputs stay 0/1
    gaussian = train_vae(X[:500], X[500:], ModelConfig(likelihood="gaussian"), FAST)
    assert gaussian.model.decoder_logvar.requires_grad
    assert not torch.all(gaussian.model.decoder_logvar == 0)


def test_student_likelihood_keeps_bernoulli_inputs_and_scores_alike_on_both_scorer_paths() -> None:
    """The Student-t takes the continuous inputs and leaves 0/1 ones Bernoulli; the scorer's
    shared-density path (one sum of log(ν + diff²) over members) gives the per-member NLL."""
    student = ModelConfig(likelihood="student", student_df=3.0)
    binary = np.hstack([X, (X[:, :2] > 0).astype(np.float32)])
    mixed = train_vae(binary[:500], binary[500:], student, FAST)
    assert mixed.model.bernoulli_mask.tolist() == [False] * 5 + [True] * 2
    assert mixed.model.density.df == 3.0 and not mixed.model.decoder_logvar.requires_grad
    result = train_vae(X[:500], X[500:], student, FAST)
    graph = ScorerGraph(result.model, result.scaler)
    assert graph.shared_density
    rows = torch.from_numpy(np.vstack([X[500:], [[30.0, -8.0, 0.0, 0.0, 0.0]]]).astype(np.float32))
    with torch.no_grad():
        shared, shared_nll, *_ = graph.score_terms(rows)
        graph.shared_density, graph.nll_offset = False, torch.zeros_like(graph.nll_offset)
        per_member, member_nll, *_ = graph.score_terms(rows)
    torch.testing.assert_close(shared, per_member, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(shared_nll, member_nll, rtol=1e-5, atol=1e-5)
    # The far row's first input, about 30 scaled units off: the t's tail gives it about 12 nats,
    # where the unit Gaussian's would give about 450.
    assert 5.0 < float(member_nll[-1, 0]) < 20.0


def test_family_weights_give_the_smaller_family_equal_say() -> None:
    flags = np.array([False, True, True, True, True])
    assert family_weights(flags).tolist() == [1.0, 0.25, 0.25, 0.25, 0.25]
    assert family_weights(~flags).tolist() == [1.0, 0.25, 0.25, 0.25, 0.25]  # whichever family is larger
    assert family_weights(np.array([True, False, False])).tolist() == [1.0, 0.5, 0.5]
    assert family_weights(np.zeros(3, bool)).tolist() == [1.0, 1.0, 1.0]  # one family: nothing to balance


def test_balanced_inputs_weigh_in_training_and_in_the_exported_scorer() -> None:
    """A table asks for `balance = families` here: two 0/1 columns beside five continuous ones,
    so each continuous input weighs 2/5, in the training loss and in the scorer's per-input NLL."""
    binary = np.hstack([X, (X[:, :2] > 0).astype(np.float32)])
    plain = train_vae(binary[:500], binary[500:], ModelConfig(), FAST)
    balanced = train_vae(binary[:500], binary[500:], ModelConfig(balance="families"), FAST)
    assert plain.model.input_weight.tolist() == [1.0] * 7  # tables default to none
    assert balanced.model.input_weight.tolist() == pytest.approx([0.4] * 5 + [1.0] * 2)
    _, nll = score_with_torch(balanced.model, balanced.scaler, binary[500:])
    balanced.model.input_weight.fill_(1.0)
    _, unweighted = score_with_torch(balanced.model, balanced.scaler, binary[500:])
    np.testing.assert_allclose(nll[:, :5], 0.4 * unweighted[:, :5], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nll[:, 5:], unweighted[:, 5:], rtol=1e-6)


def test_robust_scaler_ignores_outliers() -> None:
    data = np.concatenate([np.random.default_rng(0).normal(5, 2, (1000, 1)), [[1e6]]]).astype(np.float32)
    scaler = Scaler.fit(data, method="robust")
    assert scaler.mean[0] == pytest.approx(5, abs=0.3)
    assert scaler.scale[0] == pytest.approx(2, rel=0.15)


def test_cuda_request_without_gpu_is_clear() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(PipelineError, match="torch sees no CUDA GPU"):
        train_vae(X[:500], X[500:], ModelConfig(), FAST.model_copy(update={"device": "cuda"}))


def test_checkpoint_loads_with_weights_only(sensor_model: Path) -> None:
    from pipeline.model.graphs import score_with_torch
    from pipeline.runtime import Scorer
    from pipeline.training.export import load_checkpoint

    vae, scaler = load_checkpoint(sensor_model / "checkpoint.pt")  # torch.load(weights_only=True) inside
    scorer = Scorer.load(sensor_model)
    x = np.asarray(scorer.manifest.scaler.mean, np.float32)[None, :].repeat(4, 0)
    np.testing.assert_allclose(score_with_torch(vae, scaler, x)[0], scorer.score_array(x).score, rtol=1e-5)


def test_free_bits_floor_each_latent_dimension() -> None:
    mu = torch.zeros(10, 3)
    logvar = torch.zeros(10, 3)
    logvar[:, 0] = -2.0  # only dimension 0 carries information
    per_dim = 0.5 * (torch.exp(torch.tensor(-2.0)) - 1 + 2.0)
    assert float(elbo.kl_with_free_bits(mu, logvar, 0.0)) == pytest.approx(float(per_dim))
    assert float(elbo.kl_with_free_bits(mu, logvar, 0.5)) == pytest.approx(max(float(per_dim), 0.5) + 1.0)


def test_free_bits_keep_the_latent_in_use() -> None:
    # Rank-2 data: the latent is worth using, but a heavy β pushes the posterior to the prior.
    rng = np.random.default_rng(2)
    low_rank = (rng.normal(size=(600, 2)) @ rng.normal(size=(2, 6)) + 0.05 * rng.normal(size=(600, 6))).astype(np.float32)
    config = FAST.model_copy(update={"beta": 10.0, "epochs": 30, "batch_size": 32, "patience": 30})
    collapsed = train_vae(low_rank[:500], low_rank[500:], ModelConfig(), config)
    kept = train_vae(low_rank[:500], low_rank[500:], ModelConfig(), config.model_copy(update={"free_bits": 1.0}))
    assert kept.history[-1]["kl"] > collapsed.history[-1]["kl"] + 0.5  # measured: 1.34 vs 0.00005
    assert kept.history[-1]["nll"] < collapsed.history[-1]["nll"] - 1.0  # measured: 6.8 vs 8.5


def test_trimmed_mask_drops_the_highest_losses_per_member() -> None:
    loss = torch.tensor([[1.0, 9.0], [5.0, 2.0], [9.0, 1.0], [2.0, 5.0]])
    keep = elbo.trimmed_mask(loss, 0.25)
    assert keep.tolist() == [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 1.0]]
    assert torch.equal(elbo.trimmed_mask(loss, 0.0), torch.ones_like(loss))


def test_trimming_keeps_contamination_out_of_the_model() -> None:
    # 5% of the training rows are a tight off-manifold cluster (anomalies nobody labelled).
    rng = np.random.default_rng(3)
    normal = rng.normal(size=(950, 2)) @ rng.normal(size=(2, 8)) + 0.1 * rng.normal(size=(950, 8))
    cluster = np.tile(rng.normal(size=(1, 8)) * 3.0, (50, 1)) + 0.1 * rng.normal(size=(50, 8))
    x = np.concatenate([normal, cluster]).astype(np.float32)
    config = FAST.model_copy(update={"epochs": 40, "patience": 40, "warmup_epochs": 5})

    def cluster_gap(trim: float) -> float:
        result = train_vae(x, x[:100], ModelConfig(members=1), config.model_copy(update={"trim_fraction": trim}))
        score = score_with_torch(result.model, result.scaler, x)[0]
        return float(np.median(score[950:]) - np.quantile(score[:950], 0.95))

    assert cluster_gap(0.08) > cluster_gap(0.0)


def test_ensemble_score_is_the_mean_of_its_members() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    result = train_vae(x[:250], x[250:], ModelConfig(members=3), FAST)
    vae, scaler = result.model, result.scaler
    weights = vae.encoder[0].weight
    assert weights.shape[0] == 3 and not torch.allclose(weights[0], weights[1])  # independent draws
    scaled = torch.from_numpy(scaler.transform(x[250:]))
    with torch.no_grad():
        mu, logvar = vae.encode(scaled)
        per_member = vae.feature_nll(scaled, mu).sum(-1) + elbo.kl_to_standard_normal(mu, logvar)  # [rows, members]
    expected = per_member.mean(-1).numpy() + np.log(scaler.scale).sum()
    np.testing.assert_allclose(score_with_torch(vae, scaler, x[250:])[0], expected, rtol=1e-5)


@pytest.mark.slow
def test_compiled_training_learns_what_eager_training_learns() -> None:
    """`compile = true` runs the same loss through torch.compile (its own random stream, so
    not the same weights): it must reach about the same validation objective."""
    config = FAST.model_copy(update={"epochs": 12})
    from torch._dynamo.utils import counters

    traced = counters["stats"]["unique_graphs"]
    eager = train_vae(X[:500], X[500:], ModelConfig(members=1), config)
    assert counters["stats"]["unique_graphs"] == traced
    compiled = train_vae(X[:500], X[500:], ModelConfig(members=1), config.model_copy(update={"compile": True}))
    assert counters["stats"]["unique_graphs"] > traced  # torch.compile really traced the loss
    first = compiled.history[0]["validation_objective"]
    assert compiled.best_validation < first  # it optimised
    assert compiled.best_validation == pytest.approx(eager.best_validation, rel=0.05)


def test_contribution_shares_hold_float32_precision_on_large_raw_units() -> None:
    """In raw units of thousands every NLL carries log(scale) ≈ 7 nats; subtracting two such
    NLLs to get a row's excess over the baseline lost digits (shares off by 1e-5 against
    float64). The scorer folds the constant into the baseline first: off by under 2e-6."""
    import copy

    from pipeline.model.graphs import ScorerGraph

    rng = np.random.default_rng(5)
    x = (rng.normal(size=(900, 6)) @ rng.normal(size=(6, 6)) * 1e3 + 5e4).astype(np.float32)
    result = train_vae(x[:600], x[600:700], ModelConfig(members=3), FAST)
    vae, scaler = result.model, result.scaler
    with torch.no_grad():
        baseline = ScorerGraph(vae, scaler).score_terms(torch.from_numpy(x[600:700]))[1].double().mean(0).numpy()
        top_share = ScorerGraph(vae, scaler, baseline)(torch.from_numpy(x[700:]))[-1].numpy()
        exact = copy.deepcopy(vae).double()
        scaled = torch.from_numpy(scaler.transform(x[700:])).double()
        mu, _ = exact.encode(scaled)
        nll = exact.feature_nll(scaled, mu).mean(-2) + torch.log(torch.from_numpy(scaler.scale).double())
    excess = (nll - torch.from_numpy(baseline)).clamp(min=0)
    shares = (excess / excess.sum(-1, keepdim=True).clamp(min=1e-300)).sort(-1, descending=True).values[:, :3]
    assert (shares[:, 0] > 0).float().mean() > 0.5  # most rows have some NLL above normal
    assert np.abs(top_share - shares.numpy()).max() < 2e-6


def test_a_series_of_one_signal_validates_on_its_whole_period_and_sensors_on_their_latest_windows() -> None:
    """Spread: the latest tenth of each of ten time blocks of each entity (a daily cycle's every
    phase); otherwise the latest tenth of each entity, what comes just before scoring."""
    from pipeline.training.fit import validation_windows

    ends, bounds = np.arange(1000), [(0, 600), (600, 1000)]
    spread = validation_windows(ends, bounds, 0.1, spread=True)
    assert spread.sum() == 100
    assert [int(spread[start : start + 60].sum()) for start in range(0, 600, 60)] == [6] * 10
    assert np.flatnonzero(spread[:60]).tolist() == list(range(54, 60))  # the latest of its block
    latest = validation_windows(ends, bounds, 0.1)
    assert np.flatnonzero(latest).tolist() == [*range(540, 600), *range(960, 1000)]


@pytest.mark.parametrize("family", ["fixed", "bernoulli", "student"])
def test_a_unit_density_s_folded_form_is_its_nll(family: str) -> None:
    """The scorer graph sums `coefficient · spread(d²) + constant` over members instead of each
    member's NLL (ScorerGraph's shared density): the two must be one number."""
    from pipeline.model.likelihood import density_of

    density = density_of(family, 3.0)
    x, mean = torch.randn(64, 5, dtype=torch.float64), torch.randn(64, 5, dtype=torch.float64)
    folded = density.coefficient * density.spread((x - mean).square()) + density.constant
    torch.testing.assert_close(folded, density.nll(x, mean, torch.zeros_like(x)))


def test_every_family_of_the_config_has_a_density_and_no_other_does() -> None:
    from typing import get_args

    from pipeline.core.config import ModelConfig
    from pipeline.model.likelihood import Family, density_of

    assert set(get_args(ModelConfig.model_fields["likelihood"].annotation)) == set(get_args(Family))
    assert [density_of(f, 4.0).learns_variance for f in get_args(Family)] == [f == "gaussian" for f in get_args(Family)]
    with pytest.raises(ValueError, match="unknown likelihood 'laplace'"):
        density_of("laplace")
