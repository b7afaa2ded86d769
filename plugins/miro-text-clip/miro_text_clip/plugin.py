"""Entry point module of the ``clip-text`` text encoder plugin."""

from __future__ import annotations

from miro_core.hookspecs import Register, hookimpl
from miro_text_clip.encoder import CLIPTextEncoder

MIRO_API = ">=1,<2"


@hookimpl
def register_text_encoders(register: Register) -> None:
    register(CLIPTextEncoder)
