"""Registers the hybrid backbone."""

from miro_backbone_hybrid.backbone import HybridBackbone
from miro_core.hookspecs import Register, hookimpl

MIRO_API = ">=1,<2"


@hookimpl
def register_backbones(register: Register) -> None:
    register(HybridBackbone)
