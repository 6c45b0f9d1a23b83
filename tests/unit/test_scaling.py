"""The quantile (rank-Gauss) input map: Gaussian-looking inside the training range, linear
beyond it, invertible, and the same in numpy, torch and onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import skew

from pipeline.artifact.contract import INPUT_CLIP
from pipeline.artifact.manifest import ScalerSpec
from pipeline.data.scaling import MIN_ROWS_PER_SEGMENT, MIN_SKEW, QUANTILE_KNOTS, Scaler
from pipeline.model import graphs
from pipeline.model.defaults import resolve
from pipeline.model.graphs import _Scaling

RNG = np.random.default_rng(0)
SKEWED = RNG.lognormal(0.0, 1.5, 4000)  # heavy right tail
SPIKY = np.where(RNG.random(4000) < 0.9, 0.0, RNG.exponential(1.0, 4000)) + 1e-6 * (RNG.random(4000) < 0.5)
TRAIN = np.column_stack([SKEWED, SPIKY, RNG.integers(0, 2, 4000), np.full(4000, 3.0), RNG.integers(0, 5, 4000)])


@pytest.fixture(scope="module")
def scaler() -> Scaler:
    return Scaler.fit(TRAIN.astype(np.float32), method="quantile", keep_raw=np.array([False, False, True, False, False]))


def test_a_skewed_column_comes_out_gaussian_and_in_the_same_order(scaler: Scaler) -> None:
    mapped = scaler.transform(TRAIN.astype(np.float32))
    assert skew(SKEWED) > 5 and abs(skew(mapped[:, 0])) < MIN_SKEW  # measured: 7.1 → 0.86 (8 knots)
    assert np.all(np.diff(mapped[np.argsort(SKEWED), 0]) >= 0)  # monotone: ranks are kept
    assert mapped[:, 0].mean() == pytest.approx(0, abs=1e-3) and mapped[:, 0].std() == pytest.approx(1, abs=1e-3)


def test_too_few_rows_for_the_knots_leave_every_column_unmapped() -> None:
    """Below 100 rows per segment the knots are noise more than shape: no map, only the
    standard scaling (ADBench's 5 sets that small all scored higher without it)."""
    enough = MIN_ROWS_PER_SEGMENT * (QUANTILE_KNOTS - 1)
    few = Scaler.fit(SKEWED[: enough - 1, None].astype(np.float32), method="quantile")
    assert few.monotone_map() is None
    assert few.transform(SKEWED[:5, None].astype(np.float32))[:, 0] == pytest.approx(
        (SKEWED[:5] - few.mean) / few.scale, rel=1e-5
    )
    assert not Scaler.fit(SKEWED[:enough, None].astype(np.float32), method="quantile").identity_columns().any()


def test_beyond_the_training_range_the_map_stays_linear_at_the_columns_own_scale(scaler: Scaler) -> None:
    top = SKEWED.max()
    far = np.tile(TRAIN[:1], (3, 1)).astype(np.float32)
    far[:, 0] = [top, top + 10 * SKEWED.std(), top + 100 * SKEWED.std()]
    mapped = scaler.transform(far)[:, 0] * scaler.scale[0]  # in map units: 1/std per raw unit
    assert mapped[1] - mapped[0] == pytest.approx(10, rel=1e-3)
    assert mapped[2] - mapped[0] == pytest.approx(100, rel=1e-3)  # a 100-sd shift is not capped


def test_binary_constant_and_symmetric_columns_are_only_standardised(scaler: Scaler) -> None:
    for column in (2, 3, 4):  # 0/1, constant, uniform on 0..4 (skewness 0)
        assert scaler.knots[column, :2].tolist() == [0.0, 1.0] and scaler.levels[column, :2].tolist() == [0.0, 1.0]
    assert (scaler.mean[2], scaler.scale[2]) == (0.0, 1.0)  # Bernoulli inputs stay 0/1
    assert scaler.scale[3] == 1.0 and scaler.transform(TRAIN[:3].astype(np.float32))[:, 3].tolist() == [0.0] * 3


def test_inverse_undoes_the_map_inside_and_outside_the_training_range(scaler: Scaler) -> None:
    rows = np.vstack([TRAIN[:200], TRAIN[:5] * 50 + 7, TRAIN[:5] - 40]).astype(np.float32)
    rows[:, 2], rows[:, 3] = rows[:, 2] % 2, 3.0
    np.testing.assert_allclose(scaler.inverse(scaler.transform(rows)), rows, rtol=1e-4, atol=1e-4)


def test_torch_runs_the_map_as_numpy_does_even_on_steep_segments(scaler: Scaler) -> None:
    # SPIKY has knots 1e-6 apart: a steep segment that a sum of ReLUs would lose in float32.
    rows = np.vstack([TRAIN[:500], TRAIN[:20] * 30.0, -TRAIN[:20]]).astype(np.float32)
    with torch.no_grad():
        got = _Scaling(scaler)(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(got, scaler.transform(rows), rtol=1e-5, atol=2e-5)


def test_picking_columns_by_matmul_equals_the_gather_to_the_bit_with_infinite_inputs(
    scaler: Scaler, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = np.vstack([TRAIN[:500], TRAIN[:20] * 1e30, -TRAIN[:20]]).astype(np.float32)
    rows[:3, 0], rows[3:6, 1], rows[6, 4] = np.inf, -np.inf, np.inf
    by_matmul = _Scaling(scaler)
    monkeypatch.setattr(graphs, "PICK_BY_MATMUL_UP_TO", 0)  # a table too wide for the MatMul
    by_gather = _Scaling(scaler)
    assert by_matmul.by_matmul and not by_gather.by_matmul
    with torch.no_grad():
        fast, slow = (module(torch.from_numpy(rows)).numpy() for module in (by_matmul, by_gather))
    assert np.isfinite(fast).all() and np.array_equal(fast, slow)
    assert fast[0, 0] == INPUT_CLIP and fast[3, 1] == -INPUT_CLIP


def test_the_manifest_refuses_a_map_that_is_not_monotone_or_not_whole(scaler: Scaler) -> None:
    spec = ScalerSpec.of(scaler).model_dump()
    assert (
        ScalerSpec.model_validate(spec).build().transform(TRAIN[:4].astype(np.float32)).tolist()
        == scaler.transform(TRAIN[:4].astype(np.float32)).tolist()
    )
    falling = {**spec, "knots": [row[::-1] for row in spec["knots"]]}
    with pytest.raises(ValueError, match="knots must not decrease"):
        ScalerSpec.model_validate(falling)
    with pytest.raises(ValueError, match="come together"):
        ScalerSpec.model_validate({**spec, "tail": None})
    with pytest.raises(ValueError, match="not > 0"):
        ScalerSpec.model_validate({**spec, "tail": [0.0] * len(spec["tail"])})


def test_auto_scaling_is_the_quantile_map_for_tables_robust_for_one_series_and_standard_for_several() -> None:
    """Chosen per mode and signal count by the half-and-half protocol (bench/NOTES.md, sessions
    3 and 8); a sensor's stays open until the window's inputs are known; an explicit choice stands."""
    from pipeline.core.config import DataConfig, ModelConfig, PipelineConfig, WindowSpec

    sensor = DataConfig(mode="sensor", time_column="t", window=WindowSpec(length=8))
    assert PipelineConfig().model.scaling == "auto"
    assert resolve(PipelineConfig()).model.scaling == "quantile"
    assert resolve(PipelineConfig(data=sensor)).model.scaling == "auto"
    assert resolve(PipelineConfig(data=sensor), inputs=8).model.scaling == "robust"  # one signal, 8 steps
    assert resolve(PipelineConfig(data=sensor), inputs=16).model.scaling == "standard"  # two signals
    assert resolve(PipelineConfig(), inputs=1).model.scaling == "quantile"  # a one-column table is no series
    chosen = PipelineConfig(data=sensor, model=ModelConfig(scaling="quantile", balance="families"))
    assert resolve(chosen) is chosen
    with pytest.raises(ValueError, match="unknown scaling 'auto'"):
        Scaler.fit(np.ones((4, 2)), method="auto")


def test_a_tables_latent_code_is_two_dimensional_and_a_sensors_keeps_the_rule_by_inputs() -> None:
    """Chosen per mode by the half-and-half protocol (bench/NOTES.md, session 6); an explicit size stands."""
    from pipeline.core.config import DataConfig, ModelConfig, PipelineConfig

    sensor = DataConfig(mode="sensor", time_column="t")
    assert PipelineConfig().model.latent is None and resolve(PipelineConfig()).model.latent == 2
    assert resolve(PipelineConfig(data=sensor)).model.latent is None  # VAEShape.for_inputs: 4, 2 below 8
    chosen = PipelineConfig(model=ModelConfig(latent=4, scaling="quantile", balance="none"))
    assert resolve(chosen) is chosen


def test_a_narrow_table_trains_with_beta_one_and_a_tenth_trimmed_one_series_with_beta_one_others_3_and_5_percent() -> None:
    """Chosen by the half-and-half protocol (bench/NOTES.md, sessions 7 and 8); a value the config
    sets stands, and training settles open ones the same way when no config was resolved first."""
    from pipeline.core.config import DataConfig, ModelConfig, PipelineConfig, TrainConfig
    from pipeline.model.train import train_vae

    sensor = DataConfig(mode="sensor", time_column="t")
    assert resolve(PipelineConfig()).train.beta is None  # no inputs known yet
    narrow, wide = resolve(PipelineConfig(), inputs=16).train, resolve(PipelineConfig(), inputs=17).train
    assert (narrow.beta, narrow.trim_fraction, wide.beta, wide.trim_fraction) == (1.0, 0.10, 3.0, 0.05)
    several = resolve(PipelineConfig(data=sensor), inputs=20).train  # 2 signals in windows of 10
    one = resolve(PipelineConfig(data=sensor), inputs=10).train
    assert (several.beta, several.trim_fraction, one.beta, one.trim_fraction) == (3.0, 0.05, 1.0, 0.05)
    chosen = PipelineConfig(
        model=ModelConfig(latent=4, scaling="quantile", balance="none"), train=TrainConfig(beta=2.0, trim_fraction=0.0)
    )
    assert resolve(chosen, inputs=5) is chosen
    x = RNG.normal(size=(300, 4)).astype(np.float32)
    history = train_vae(x[:250], x[250:], ModelConfig(members=1), TrainConfig(epochs=12, progress=False)).history
    assert history[-1]["kl_weight"] == 1.0  # past the 10-epoch warm-up: β 1 for 4 inputs
