"""Entry point module of the ``hpsv2`` reward: registers the class, imports nothing heavy."""

from miro_core.hookspecs import Register, hookimpl
from miro_reward_hpsv2.reward import HPSv2

MIRO_API = ">=1,<2"


@hookimpl
def register_rewards(register: Register) -> None:
    register(HPSv2)
