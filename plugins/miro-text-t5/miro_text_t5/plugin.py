"""Entry point module of the ``t5`` text encoder plugin."""

from __future__ import annotations

from miro_core.hookspecs import Register, hookimpl
from miro_text_t5.encoder import T5TextEncoder

MIRO_API = ">=1,<2"


@hookimpl
def register_text_encoders(register: Register) -> None:
    register(T5TextEncoder)
