"""Entry point module of ``miro-reward-shapes-alignment``: registers the ``shapes-alignment`` reward."""

from __future__ import annotations

from miro_core.hookspecs import Register, hookimpl
from miro_reward_shapes_alignment.reward import ShapesAlignment

MIRO_API = ">=1,<2"


@hookimpl
def register_rewards(register: Register) -> None:
    register(ShapesAlignment)
