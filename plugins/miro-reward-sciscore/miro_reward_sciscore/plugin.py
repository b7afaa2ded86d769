"""Entry point module of the ``sciscore`` reward: registers the class, imports nothing heavy."""

from miro_core.hookspecs import Register, hookimpl
from miro_reward_sciscore.reward import SciScore

MIRO_API = ">=1,<2"


@hookimpl
def register_rewards(register: Register) -> None:
    register(SciScore)
