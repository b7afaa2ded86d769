"""Entry point module of the ``rin-release`` backbone plugin."""

from __future__ import annotations

from miro_backbone_rin_release.backbone import RINReleaseBackbone
from miro_core.hookspecs import Register, hookimpl

MIRO_API = ">=1,<2"


@hookimpl
def register_backbones(register: Register) -> None:
    register(RINReleaseBackbone)
