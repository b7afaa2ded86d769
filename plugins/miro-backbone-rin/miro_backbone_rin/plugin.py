"""Entry point module of the ``rin`` backbone plugin."""

from __future__ import annotations

from miro_backbone_rin.backbone import RINBackbone
from miro_core.hookspecs import Register, hookimpl

MIRO_API = ">=1,<2"


@hookimpl
def register_backbones(register: Register) -> None:
    register(RINBackbone)
