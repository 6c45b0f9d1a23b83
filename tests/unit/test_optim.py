"""FusedAdam: the weights torch.optim.Adam(fused=True) trains, without importing torch._dynamo."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from pipeline.core.config import ModelConfig, TrainConfig
from pipeline.model import train
from pipeline.model.optim import FusedAdam

X = np.random.default_rng(2).lognormal(size=(700, 6)).astype(np.float32)
FAST = TrainConfig(epochs=12, patience=3, progress=False)


class TorchFusedAdam(torch.optim.Adam):
    """The optimiser FusedAdam replaced, behind FusedAdam's signature."""

    def __init__(self, params, lr: float) -> None:
        super().__init__(params, lr=lr, fused=True)


def test_training_with_fused_adam_gives_torch_adams_weights_to_the_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    ours = train.train_vae(X[:600], X[600:], ModelConfig(), FAST)
    monkeypatch.setattr(train, "FusedAdam", TorchFusedAdam)
    theirs = train.train_vae(X[:600], X[600:], ModelConfig(), FAST)
    assert len(ours.history) == len(theirs.history) > 10
    for (name, a), b in zip(ours.model.state_dict().items(), theirs.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_a_parameter_without_a_gradient_is_left_alone_and_keeps_its_step_count() -> None:
    used, unused = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    reference = torch.nn.Parameter(torch.ones(3))
    ours, theirs = FusedAdam([used, unused], lr=0.1), torch.optim.Adam([reference], lr=0.1, fused=True)
    for _ in range(3):
        for optimiser, parameter in ((ours, used), (theirs, reference)):
            optimiser.zero_grad()
            (parameter * torch.arange(3.0)).square().sum().backward()
            optimiser.step()
    assert torch.equal(used, reference) and not torch.equal(used, torch.ones(3))
    assert torch.equal(unused, torch.ones(3)) and ours.steps[0].item() == 3 and ours.steps[1].item() == 0


def test_a_device_without_the_fused_kernel_is_refused() -> None:
    with pytest.raises(ValueError, match="fused Adam kernel"):
        FusedAdam([torch.nn.Parameter(torch.ones(2, device="meta"))], lr=0.1)


def test_training_in_a_fresh_process_does_not_import_torch_dynamo() -> None:
    """torch.optim imported it on first use: 1.3 s of a 2,000-row `vad train`."""
    script = (
        "import sys, numpy as np\n"
        "from pipeline.core.config import ModelConfig, TrainConfig\n"
        "from pipeline.model.train import train_vae\n"
        "x = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)\n"
        "train_vae(x[:250], x[250:], ModelConfig(), TrainConfig(epochs=2, progress=False))\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"
