"""The GPU code paths' choices, checked where CI runs (no GPU): training's batch and precision
by device, the scorer's routing by batch size, TensorRT's engine cache, and the CPU fallback."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.artifact.manifest import read_manifest
from pipeline.core.config import TrainConfig
from pipeline.model.train import TrainingPlan, torch_threads, training_plan
from pipeline.model.vae import VAEShape
from pipeline.runtime import Scorer, default_chunk_rows, open_session
from pipeline.runtime.providers import CPU, CUDA, TENSORRT, TENSORRT_CACHE, provider_options, tensorrt_cache

CPU_DEVICE, CUDA_DEVICE = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
NARROW, WIDE = (VAEShape.for_inputs(n, None, None, "fixed", 0.0, 5) for n in (32, 64))  # 11 M, 43 M multiply-adds a step


def test_the_cpu_trains_as_it_always_did_whatever_the_size_on_one_thread_when_the_model_is_narrow() -> None:
    for rows in (50, 20_000, 2_000_000):
        assert training_plan(rows, CPU_DEVICE, TrainConfig(), NARROW) == TrainingPlan(256, 1e-3, False, 1)
        wide = None if rows > 256 else 1  # 50 rows make one batch of 50: 8 M multiply-adds
        assert training_plan(rows, CPU_DEVICE, TrainConfig(), WIDE) == TrainingPlan(256, 1e-3, False, wide)


def test_cuda_takes_larger_batches_only_where_the_data_has_room_for_them() -> None:
    assert training_plan(10_000, CUDA_DEVICE, TrainConfig(), NARROW) == TrainingPlan(256, 1e-3, False)
    mid = training_plan(100_000, CUDA_DEVICE, TrainConfig(), NARROW)  # 100,000 / 32 → 2,048
    assert mid.batch_size == 2048 and mid.learning_rate == pytest.approx(1e-3 * 8**0.5) and mid.threads is None
    assert training_plan(900_000, CUDA_DEVICE, TrainConfig(), NARROW) == TrainingPlan(16384, 3e-3, False)


def test_the_config_overrides_the_device_choice_and_bf16_needs_cuda() -> None:
    asked = TrainConfig(batch_size=512, learning_rate=5e-4, bf16=True)
    assert training_plan(900_000, CUDA_DEVICE, asked, NARROW) == TrainingPlan(512, 5e-4, True)
    assert training_plan(900_000, CPU_DEVICE, asked, NARROW) == TrainingPlan(512, 5e-4, False, None)  # 22 M


def test_the_thread_count_is_restored_after_training_even_when_it_fails() -> None:
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
        raise RuntimeError("training failed")
    assert torch.get_num_threads() == before


def test_the_plan_used_is_recorded_in_the_manifest(tabular_fit) -> None:
    plan = tabular_fit.calibrated.result.plan
    assert plan == TrainingPlan(256, 1e-3, False, 1)  # CI's CPU, a narrow model
    assert read_manifest(tabular_fit.version_dir).model["latent"] == 2  # a table's default
    assert read_manifest(tabular_fit.version_dir).training["plan"] == {
        "batch_size": 256,
        "learning_rate": 1e-3,
        "bf16": False,
        "threads": 1,
    }


def test_auto_scores_on_the_cpu_where_no_gpu_is_visible(tabular_model: Path) -> None:
    if Path("/dev/nvidiactl").exists():
        pytest.skip("a GPU is present")
    scorer = Scorer.load(tabular_model, provider="auto")
    kernel = scorer.kernel()
    assert kernel.gpu is None and kernel.describe() == CPU and not kernel.on_gpu(10**6)
    assert default_chunk_rows(scorer) == 65536


def test_batches_go_to_the_gpu_session_from_the_measured_floor(tabular_model: Path) -> None:
    """The routing rule, with a real second session standing in for the GPU's."""
    kernel = Scorer.load(tabular_model, provider="cpu").kernel()
    kernel.gpu = open_session((tabular_model / "scorer.onnx").read_bytes(), "cpu", "stand-in")
    kernel.gpu_min_rows = 1024
    assert not kernel.on_gpu(1) and not kernel.on_gpu(1023) and kernel.on_gpu(1024)
    assert "1,024+ rows" in kernel.describe()
    inputs = kernel.cpu[0].get_inputs()[0].shape[1]
    x = np.random.default_rng(0).standard_normal((3000, inputs)).astype(np.float32)
    small, large = kernel.run(["score"], x[:10])[0], kernel.run(["score"], x)[0]
    np.testing.assert_allclose(small, large[:10], rtol=1e-6)  # either path, the same scores
    kernel.cpu = []  # a GPU asked for by name takes every batch
    assert kernel.on_gpu(1)


def test_tensorrt_keeps_its_engines_beside_the_version_without_breaking_its_checksums(
    tabular_model: Path, tmp_path: Path
) -> None:
    version = tmp_path / "version"
    shutil.copytree(tabular_model, version)
    cache = tensorrt_cache(version)
    assert cache == version / TENSORRT_CACHE and cache.is_dir()
    (cache / "engine.bin").write_bytes(b"built by TensorRT")
    read_manifest(version)  # dot-named: not a stray file in a checked folder
    options = dict(provider_options([TENSORRT, CUDA, CPU], cache))
    assert options[TENSORRT]["trt_engine_cache_enable"] == "True"
    assert options[TENSORRT]["trt_engine_cache_path"] == str(cache)
    assert options[TENSORRT]["trt_fp16_enable"] == "False"  # fp16 only when asked: it changes scores
    assert options[CUDA] == {} and options[CPU] == {}
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert tensorrt_cache(blocked) is None  # cannot be created: engines are rebuilt, scoring goes on
