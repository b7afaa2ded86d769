"""Entry point module of ``miro-reward-shapes-sharpness``: registers the ``shapes-sharpness`` reward."""

from __future__ import annotations

from miro_core.hookspecs import Register, hookimpl
from miro_reward_shapes_sharpness.reward import ShapesSharpness

MIRO_API = ">=1,<2"


@hookimpl
def register_rewards(register: Register) -> None:
    register(ShapesSharpness)
