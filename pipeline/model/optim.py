"""Adam without `torch.optim`'s Optimizer class, for a command that trains once and exits.

`torch.optim.Optimizer` wraps its methods so that torch._dynamo is imported on their first
call: 1.3 s of a 6 s `vad train` on 2,000 rows (bench/NOTES.md, session 6), for a compiler this
loop does not use. `FusedAdam` calls the same fused kernel `torch.optim.Adam(fused=True)`
calls, with the same state, so the weights it trains are the same to the bit
(tests/unit/test_optim.py holds that).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

FUSED_DEVICES = ("cpu", "cuda")  # where torch has the fused Adam kernel


class FusedAdam:
    """Adam (no weight decay, no AMSGrad) over `params`, one fused kernel per step."""

    def __init__(
        self, params: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        if any(p.device.type not in FUSED_DEVICES for p in self.params):
            raise ValueError(f"the fused Adam kernel runs on {' and '.join(FUSED_DEVICES)} only")
        self.lr, self.betas, self.eps = lr, betas, eps
        self.exp_avgs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        # One float32 step count per parameter, on its device, as the fused torch.optim.Adam keeps it.
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One Adam update of every parameter that has a gradient."""
        has_grad = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not has_grad:
            return
        for group in {(self.params[i].device, self.params[i].dtype) for i in has_grad}:
            chosen = [i for i in has_grad if (self.params[i].device, self.params[i].dtype) == group]
            steps = [self.steps[i] for i in chosen]
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(
                [self.params[i] for i in chosen],
                [self.params[i].grad for i in chosen],  # type: ignore[misc]
                [self.exp_avgs[i] for i in chosen],
                [self.exp_avg_sqs[i] for i in chosen],
                [],
                steps,
                lr=self.lr,
                beta1=self.betas[0],
                beta2=self.betas[1],
                weight_decay=0.0,
                eps=self.eps,
                amsgrad=False,
                maximize=False,
            )
