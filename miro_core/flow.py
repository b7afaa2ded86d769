"""Flow matching (MIRO-NOTES section 5): the path, the target and the time distribution.

``x_t = (1 - t) x0 + t eps`` with ``t = 1`` pure noise; the network predicts the velocity
``eps - x0``; training times are logit-normal(0, 1) as released (uniform is the page's variant).
"""

from __future__ import annotations

from typing import Literal

import torch

TimeSampling = Literal["logit-normal", "uniform"]


def sample_time(
    batch: int,
    mode: TimeSampling = "logit-normal",
    generator: torch.Generator | None = None,
    device: str = "cpu",
    shift: float = 1.0,
) -> torch.Tensor:
    """Training times in (0, 1); ``shift`` > 1 moves them towards noise, < 1 towards data (SD3's shift)."""
    if mode == "logit-normal":
        t = torch.sigmoid(torch.randn(batch, generator=generator))
    elif mode == "uniform":
        t = torch.rand(batch, generator=generator)
    else:
        raise ValueError(f"unknown time sampling {mode!r}; use logit-normal or uniform")
    return shift_time(t, shift).to(device)


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3's resolution shift ``s t / (1 + (s - 1) t)``: the same signal-to-noise ratio divided by ``s**2``."""
    if shift <= 0:
        raise ValueError(f"time shift must be positive, got {shift}")
    return t if shift == 1.0 else shift * t / (1 + (shift - 1) * t)


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The point at time ``t`` on the straight path from data ``x0`` (t=0) to ``noise`` (t=1)."""
    t = t.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


def input_scale(t: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """EDM2-style input preconditioning: 1 / std(x_t) when x0 has std ``sigma_data``, noise std 1.

    Computed from ``gamma = 1 - t`` (clamped at 1e-9) in the released model's order of operations, so that
    float32 results match it bit for bit.
    """
    gamma = (1 - t).clamp(min=1e-9)
    return 1 / torch.sqrt((gamma * sigma_data) ** 2 + (1 - gamma) ** 2)


def per_sample_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)
