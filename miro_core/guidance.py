"""The guidance strategy contract: which negative branch to evaluate, and how hard to push away from it.

MIRO-NOTES section 6. Every strategy evaluates a positive branch (the prompt, reward targets ``s+``)
and, where its weight is non-zero, a negative branch (negative text, reward targets ``s-``) in the
same batched forward pass, then combines them as ``v = (1 + w) v(x, c, s+) - w v(x, c-, s-)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from miro_core.component import Component, ComponentOptions
from miro_core.errors import ConfigError


class GuidanceOptions(ComponentOptions):
    #: Guidance weight ``w`` (MIRO-NOTES: 7 at 500k steps; small models want 1.5 to 3).
    scale: float = 7.0
    #: ``constant`` keeps ``w``; ``linear`` ramps it as ``2 w (step / steps)``.
    schedule: Literal["constant", "linear"] = "constant"
    #: Guidance is applied only for steps in ``[interval_start, interval_end)`` as fractions of the run.
    interval_start: float = Field(0.0, ge=0.0, le=1.0)
    interval_end: float = Field(1.0, ge=0.0, le=1.0)
    #: Text of the negative branch: ``empty`` (released code) or ``same`` (the project page).
    negative_text: Literal["empty", "same"] = "empty"

    @model_validator(mode="after")
    def _interval_is_not_empty(self) -> GuidanceOptions:
        # An empty interval would switch guidance off without a word; say so instead.
        if self.interval_start >= self.interval_end:
            raise ValueError(
                f"interval_start ({self.interval_start}) must be below interval_end ({self.interval_end}); "
                "for no guidance use the strategy `none`"
            )
        return self


class GuidanceStrategy(Component):
    """Decides the negative branch's reward targets and the guidance weight at each step."""

    Options: ClassVar[type[ComponentOptions]] = GuidanceOptions

    @classmethod
    def kind(cls) -> str:
        return "guidance strategy"

    def negative_targets(
        self,
        reward_keys: Sequence[str],
        positive: Mapping[str, float],
        negative: Mapping[str, float],
    ) -> dict[str, float]:
        """Reward targets of the negative branch. Default: the positive targets (plain text CFG)."""
        return {key: positive[key] for key in reward_keys}

    def scale_at(self, step: int, num_steps: int) -> float:
        """Guidance weight at ``step`` (0-based) of ``num_steps``: schedule, then interval."""
        fraction = step / num_steps
        if not (self.options.interval_start <= fraction < self.options.interval_end):
            return 0.0
        if self.options.schedule == "linear":
            return 2.0 * self.options.scale * fraction
        return float(self.options.scale)

    @staticmethod
    def combine(v_positive: Any, v_negative: Any, weight: float) -> Any:
        """``(1 + w) v+ - w v-``; works on torch tensors and numpy arrays alike."""
        return (1.0 + weight) * v_positive - weight * v_negative


def check_reward_keys(
    given: Mapping[str, float], reward_keys: Sequence[str], what: str, bounded: bool = True
) -> None:
    """Reject targets for keys the model was not trained on, and values outside [0, 1] (with ``bounded``;
    without it, only values that are not finite numbers: released checkpoints take any level, as miro-t2i)."""
    unknown = sorted(set(given) - set(reward_keys))
    if unknown:
        trained = ", ".join(reward_keys) or "none (the run was trained without rewards)"
        raise ConfigError(f"unknown reward key(s) in {what}: {', '.join(unknown)}; this run knows: {trained}")
    for key, value in given.items():
        level = float(value)
        if bounded and not 0.0 <= level <= 1.0:
            raise ConfigError(f"{what} {key}={value} is outside [0, 1]")
        if not math.isfinite(level):
            raise ConfigError(f"{what} {key}={value} is not a finite number")
