"""Guided sampling: the strategy picks the negative branch, the sampler integrates the ODE.

The positive and negative branches of classifier-free guidance run in ONE batched forward pass;
steps where the strategy's weight is 0 (outside the guidance interval) evaluate the positive branch
alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from miro_core.guidance import GuidanceStrategy
from miro_core.sampler import Sampler


@dataclass
class Branch:
    """One side of guidance: text embedding, its mask and the reward levels (None without rewards)."""

    text_tokens: torch.Tensor
    text_mask: torch.Tensor
    levels: torch.Tensor | None


def _cat_levels(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None or b is None:
        return None
    return torch.cat([a, b])


@torch.no_grad()
def guided_sample(
    model: torch.nn.Module,
    noise: torch.Tensor,
    positive: Branch,
    negative: Branch,
    strategy: GuidanceStrategy,
    sampler: Sampler,
    num_steps: int,
) -> torch.Tensor:
    """Integrate from ``noise`` at t = 1 to t = 0 with guidance; returns x_0."""
    both_tokens = torch.cat([positive.text_tokens, negative.text_tokens])
    both_mask = torch.cat([positive.text_mask, negative.text_mask])
    both_levels = _cat_levels(positive.levels, negative.levels)
    n = noise.shape[0]

    def velocity(x: torch.Tensor, t: float, step: int) -> torch.Tensor:
        weight = strategy.scale_at(step, num_steps)
        if weight == 0.0:
            times = torch.full((n,), t, device=x.device)
            return model(x, times, positive.text_tokens, positive.text_mask, positive.levels)
        times = torch.full((2 * n,), t, device=x.device)
        v = model(torch.cat([x, x]), times, both_tokens, both_mask, both_levels)
        v_pos, v_neg = v[:n], v[n:]
        return strategy.combine(v_pos, v_neg, weight)

    return sampler.sample(velocity, noise, num_steps)
