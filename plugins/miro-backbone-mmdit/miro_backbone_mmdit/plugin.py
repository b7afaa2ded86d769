"""Entry point module of the ``mmdit`` backbone plugin."""

from __future__ import annotations

from miro_backbone_mmdit.backbone import MMDiTBackbone
from miro_core.hookspecs import Register, hookimpl

MIRO_API = ">=1,<2"


@hookimpl
def register_backbones(register: Register) -> None:
    register(MMDiTBackbone)
