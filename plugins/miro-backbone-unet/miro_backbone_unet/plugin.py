"""Entry point module of the ``unet`` backbone plugin."""

from __future__ import annotations

from miro_backbone_unet.backbone import UNetBackbone
from miro_core.hookspecs import Register, hookimpl

MIRO_API = ">=1,<2"


@hookimpl
def register_backbones(register: Register) -> None:
    register(UNetBackbone)
