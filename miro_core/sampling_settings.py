"""What a sampling call actually uses, resolved once for ``miro sample``, ``miro eval`` and ``miro serve``.

The guidance weight can be given two ways: ``--guidance W`` and a strategy option ``scale=W``. They must
never disagree silently: when both are given with different values it is an error; when one is given it
wins over the run's default; the value used is what every config.json records. The reward targets
recorded are the ones the strategy actually used (its negative targets, not the command-line defaults).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from miro_core.errors import ConfigError


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{what}: must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{what}: must be a finite number, got {value!r}")
    return number


def resolve_guidance(
    guidance: float | None,
    strategy_options: Mapping[str, Any] | None,
    default: float,
    *,
    guidance_option: str = "--guidance",
    strategy_option: str = "--strategy-option",
) -> tuple[float, dict[str, Any]]:
    """The guidance weight to use and the strategy options without ``scale``.

    ``--guidance`` and ``scale=`` may both be given only with the same value; the weight must be finite
    and not negative.
    """
    options = dict(strategy_options or {})
    from_option = options.pop("scale", None)
    if from_option is not None:
        from_option = _number(from_option, f"{strategy_option} scale={from_option}")
    if guidance is not None:
        guidance = _number(guidance, f"{guidance_option} {guidance}")
    if guidance is not None and from_option is not None and guidance != from_option:
        raise ConfigError(
            f"{guidance_option} {guidance:g} and {strategy_option} scale={from_option:g} disagree; "
            f"give the guidance weight once (with {guidance_option})"
        )
    scale = guidance if guidance is not None else from_option if from_option is not None else float(default)
    if scale < 0:
        source = guidance_option if guidance is not None else f"{strategy_option} scale"
        raise ConfigError(f"{source} {scale:g}: the guidance weight must be 0 or more")
    return float(scale), options


@dataclass(frozen=True)
class SamplingSettings:
    """The strategy, weight and reward targets one sampling call uses (what config.json records)."""

    strategy: str
    strategy_options: dict[str, Any]
    guidance_scale: float
    reward_targets: dict[str, float]
    negative_reward_targets: dict[str, float]

    def as_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "strategy_options": self.strategy_options,
            "guidance": self.guidance_scale,
            "reward_targets": self.reward_targets,
            "negative_reward_targets": self.negative_reward_targets,
        }


def resolve_settings(
    pipe: Any,
    *,
    strategy: str,
    strategy_options: Mapping[str, Any] | None,
    guidance: float | None,
    reward_targets: Mapping[str, float] | None,
    negative_reward_targets: Mapping[str, float] | None,
    guidance_option: str = "--guidance",
    strategy_option: str = "--strategy-option",
    reward_option: str = "--reward",
    negative_reward_option: str = "--negative-reward",
    steps: int | None = None,
) -> SamplingSettings:
    """Check everything before sampling: the strategy exists and accepts its options, the targets name the
    run's rewards, the weight is given consistently, and the strategy keeps its contract (negative targets
    for exactly the run's rewards; a finite weight at each of ``steps``). Returns what the strategy will
    actually use."""
    from miro_core.guidance_contract import checked_weights

    default = float(pipe.config.get("guidance_scale", 7.0))
    scale, options = resolve_guidance(
        guidance, strategy_options, default, guidance_option=guidance_option, strategy_option=strategy_option
    )
    guide = pipe.registry.guidance.create(strategy, {"scale": scale, **options})
    positive, negative = pipe.resolve_targets(
        reward_targets, negative_reward_targets, guide, names=(reward_option, negative_reward_option)
    )
    if steps is not None:
        checked_weights(guide, steps, pipe.registry)
    return SamplingSettings(strategy, options, scale, dict(positive), dict(negative))
