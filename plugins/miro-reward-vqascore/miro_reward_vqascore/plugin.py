"""Entry point module of the ``vqascore`` reward: registers the class, imports nothing heavy."""

from miro_core.hookspecs import Register, hookimpl
from miro_reward_vqascore.reward import VQAScore

MIRO_API = ">=1,<2"


@hookimpl
def register_rewards(register: Register) -> None:
    register(VQAScore)
