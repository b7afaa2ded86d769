"""Entry point module of ``miro-reward-shapes-aesthetic``: registers the ``shapes-aesthetic`` reward."""

from __future__ import annotations

from miro_core.hookspecs import Register, hookimpl
from miro_reward_shapes_aesthetic.reward import ShapesAesthetic

MIRO_API = ">=1,<2"


@hookimpl
def register_rewards(register: Register) -> None:
    register(ShapesAesthetic)
