"""Entry point module of the ``jina-clip`` reward: registers the class, imports nothing heavy."""

from miro_core.hookspecs import Register, hookimpl
from miro_reward_jina_clip.reward import JinaCLIPScore

MIRO_API = ">=1,<2"


@hookimpl
def register_rewards(register: Register) -> None:
    register(JinaCLIPScore)
