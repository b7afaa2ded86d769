"""Guided sampling: the strategy picks the negative branch, the sampler integrates the ODE.

The positive and negative branches of classifier-free guidance run in ONE batched forward pass;
steps where the strategy's weight is 0 (outside the guidance interval) evaluate the positive branch
alone.

Self-conditioning: a stateful model (``model.step`` returning ``(v, state)``, see
:mod:`miro_core.backbone`) gets back, at every evaluation, the state its previous evaluation returned,
kept separately for the positive and the negative branch, as the released MIRO sampler does. A step
without guidance updates the positive branch's state only; the negative branch keeps its last state
(zeros if it was never evaluated) for the next guided step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from miro_core.guidance import GuidanceStrategy
from miro_core.guidance_contract import checked_combination, checked_weight, checked_weights
from miro_core.network_contract import checked_sample, checked_velocity_call
from miro_core.sampler import Sampler


@dataclass
class Branch:
    """One side of guidance: text embedding, its mask and the reward levels (None without rewards)."""

    text_tokens: torch.Tensor
    text_mask: torch.Tensor
    levels: torch.Tensor | None


@dataclass(frozen=True)
class BranchStates:
    """The sampler state of guided sampling: one self-conditioning state per branch (None = zeros)."""

    positive: Any = None
    negative: Any = None


def _cat_levels(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None or b is None:
        return None
    return torch.cat([a, b])


def _stack_states(positive: Any, negative: Any) -> Any:
    """The batched state of both branches; a branch without state yet gets zeros like the other's."""
    if positive is None and negative is None:
        return None
    if positive is None:
        positive = torch.zeros_like(negative)
    if negative is None:
        negative = torch.zeros_like(positive)
    return torch.cat([positive, negative])


def evaluate(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, branch: Branch, state: Any) -> tuple[Any, Any]:
    """``(v, state)`` from a model with ``step`` (MiroModel), or ``(v, None)`` from a plain velocity model."""
    step = getattr(model, "step", None)
    if step is not None:
        return step(x, t, branch.text_tokens, branch.text_mask, branch.levels, state)
    return model(x, t, branch.text_tokens, branch.text_mask, branch.levels), None


@torch.no_grad()
def guided_sample(
    model: torch.nn.Module,
    noise: torch.Tensor,
    positive: Branch,
    negative: Branch,
    strategy: GuidanceStrategy,
    sampler: Sampler,
    num_steps: int,
    registry: Any = None,
) -> torch.Tensor:
    """Integrate from ``noise`` at t = 1 to t = 0 with guidance; returns x_0.

    The sampler's calls and result are checked (:mod:`miro_core.network_contract`); ``registry`` lets the
    errors name the sampler's distribution.
    """
    both = Branch(
        torch.cat([positive.text_tokens, negative.text_tokens]),
        torch.cat([positive.text_mask, negative.text_mask]),
        _cat_levels(positive.levels, negative.levels),
    )
    n = noise.shape[0]
    # every step's weight, checked before the first model evaluation (a plugin's NaN would give black images)
    weights = checked_weights(strategy, num_steps, registry)
    combined_once: list[bool] = []  # combine's result is checked for finiteness at the first guided step only
    # per evaluation: the velocity is finite or its input was not (so a NaN is blamed on the network that made it);
    # read only if x_0 is not finite, so no device sync per step
    finite: list[torch.Tensor] = []

    def velocity(
        x: torch.Tensor, t: float, step: int, states: BranchStates | None
    ) -> tuple[torch.Tensor, BranchStates]:
        t = checked_velocity_call(sampler, x, t, step, noise, registry)
        states = states or BranchStates()
        weight = weights[step] if 0 <= step < num_steps else checked_weight(strategy, step, num_steps, registry)
        if weight == 0.0:
            times = torch.full((n,), t, device=x.device)
            v, state = evaluate(model, x, times, positive, states.positive)
            finite.append(torch.isfinite(v).all() | ~torch.isfinite(x).all())
            return v, BranchStates(state, states.negative)
        times = torch.full((2 * n,), t, device=x.device)
        v, state = evaluate(model, torch.cat([x, x]), times, both, _stack_states(states.positive, states.negative))
        finite.append(torch.isfinite(v).all() | ~torch.isfinite(x).all())
        v_pos, v_neg = v[:n], v[n:]
        split = BranchStates() if state is None else BranchStates(state[:n], state[n:])
        combined = checked_combination(strategy, strategy.combine(v_pos, v_neg, weight), v_pos, v_neg,
                                       finite=not combined_once, registry=registry)
        combined_once.append(True)
        return combined, split

    x0 = sampler.integrate(velocity, noise, num_steps)
    backbone = getattr(model, "backbone_label", "the backbone")
    return checked_sample(sampler, x0, noise, lambda: bool(torch.stack(finite).all()) if finite else True,
                          backbone, registry)
