"""Registers the MiniLM text encoder."""

from miro_core.hookspecs import Register, hookimpl
from miro_text_minilm.encoder import MiniLMTextEncoder

MIRO_API = ">=1,<2"


@hookimpl
def register_text_encoders(register: Register) -> None:
    register(MiniLMTextEncoder)
