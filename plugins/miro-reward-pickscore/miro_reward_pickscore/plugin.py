"""Entry point module of the ``pickscore`` reward: registers the class, imports nothing heavy."""

from miro_core.hookspecs import Register, hookimpl
from miro_reward_pickscore.reward import PickScore

MIRO_API = ">=1,<2"


@hookimpl
def register_rewards(register: Register) -> None:
    register(PickScore)
