"""The boundary between the sampler and a guidance strategy plugin: what it returns is checked before use.

A strategy (:class:`miro_core.guidance.GuidanceStrategy`) answers two questions, and a plugin's answer
reaches the model directly, so a wrong one would silently give wrong images (NaN weights give black
images; a missing key gives an obscure ``KeyError``):

- ``negative_targets(keys, positive, negative)`` must map exactly the run's reward keys to finite levels,
  in [0, 1] for this project's runs (released checkpoints take any finite level): :func:`checked_negative_targets`;
- ``scale_at(step, steps)`` must be a finite number at every step: :func:`checked_weights`, run for every
  step before the first model evaluation (:func:`checked_weight` for one step).

A strategy that overrides ``combine`` must return velocities shaped like the branches' (a wrong shape could
broadcast into the sampler's update unnoticed), finite where both branches are: :func:`checked_combination`.

Each violation raises :class:`~miro_core.errors.PluginError` naming the strategy and its distribution.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from miro_core.plugin_blame import broken, describe


def describe_strategy(strategy: Any, registry: Any = None) -> str:
    """``guidance strategy 'x' (distribution 1.2)``, or with the class when the registry does not know it."""
    return describe(strategy, "guidance", registry, kind="guidance strategy")


def _level(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def checked_negative_targets(
    strategy: Any,
    reward_keys: Sequence[str],
    result: Any,
    *,
    bounded: bool = True,
    registry: Any = None,
) -> dict[str, float]:
    """``result`` of ``negative_targets`` as ``{key: float}`` in the run's key order, or PluginError."""
    who = describe_strategy(strategy, registry)
    if not isinstance(result, Mapping):
        raise broken(who, "guidance",
                     f"negative_targets() returned {type(result).__name__}, not a mapping of reward key to level")
    missing = [key for key in reward_keys if key not in result]
    extra = sorted(str(key) for key in result if key not in reward_keys)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unknown {', '.join(extra)}")
        raise broken(
            who,
            "guidance",
            f"negative_targets() must give a level for exactly the run's reward keys "
            f"({', '.join(reward_keys) or 'none'}): {'; '.join(parts)}",
        )
    targets: dict[str, float] = {}
    for key in reward_keys:
        level = _level(result[key])
        if level is None:
            raise broken(who, "guidance", f"negative target {key}={result[key]!r} is not a finite number")
        if bounded and not 0.0 <= level <= 1.0:
            raise broken(who, "guidance",
                         f"negative target {key}={level:g} is outside [0, 1] (the levels the run was trained on)")
        targets[key] = level
    return targets


def checked_weight(strategy: Any, step: int, num_steps: int, registry: Any = None) -> float:
    """``scale_at(step, num_steps)`` as a float, or PluginError when it is not a finite number."""
    value = strategy.scale_at(step, num_steps)
    weight = _level(value)
    if weight is None:
        raise broken(
            describe_strategy(strategy, registry),
            "guidance",
            f"scale_at({step}, {num_steps}) returned {value!r}; the guidance weight must be a finite number",
        )
    return weight


def checked_weights(strategy: Any, num_steps: int, registry: Any = None) -> list[float]:
    """The checked weight of every step ``0 .. num_steps - 1``."""
    return [checked_weight(strategy, step, num_steps, registry) for step in range(num_steps)]


def checked_combination(
    strategy: Any, combined: Any, v_positive: Any, v_negative: Any, *, finite: bool, registry: Any = None
) -> Any:
    """``combine``'s result, or PluginError when it is not shaped like the velocities; with ``finite`` (the
    first guided evaluation only: one device sync per sampling call) also when it is not finite where both
    branches are."""
    shape = getattr(combined, "shape", None)
    if shape is None or tuple(shape) != tuple(v_positive.shape):
        raise broken(
            describe_strategy(strategy, registry),
            "guidance",
            f"combine() returned {type(combined).__name__} of shape {None if shape is None else tuple(shape)} "
            f"for velocities of shape {tuple(v_positive.shape)}",
        )
    if finite:
        import torch

        both_finite = torch.isfinite(v_positive) & torch.isfinite(v_negative)
        if not bool(torch.isfinite(combined)[both_finite].all()):
            raise broken(describe_strategy(strategy, registry), "guidance",
                         "combine() returned NaN or infinite velocities")
    return combined
