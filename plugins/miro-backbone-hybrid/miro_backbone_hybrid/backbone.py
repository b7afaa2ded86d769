"""Descriptor of the hybrid backbone: named sizes, and how rewards enter the network."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from miro_core.backbone import Backbone, BackboneSpec

if TYPE_CHECKING:
    import torch


class HybridBackbone(Backbone):
    """Conv levels at 1/1 and 1/2 resolution around a transformer at 1/4 that cross-attends to the
    conditioning tokens (rewards, registers, text); time + pooled rewards modulate every block."""

    name = "hybrid"
    description = "conv U-shape + cross-attention transformer at 1/4 resolution (fast on CPU, small images)"
    reward_conditioning = frozenset({"tokens", "pooled"})
    sizes: ClassVar[dict[str, dict[str, object]]] = {
        "tiny": {"channels": (16, 32), "width": 64, "depth": 1, "heads": 2, "emb_dim": 64},
        "small": {"channels": (32, 64), "width": 128, "depth": 2, "heads": 4, "emb_dim": 128},
        "base": {"channels": (32, 64), "width": 192, "depth": 4, "heads": 6, "emb_dim": 192},
        "large": {"channels": (64, 128), "width": 384, "depth": 8, "heads": 6, "emb_dim": 384, "res_blocks": 2},
    }

    def build(self, spec: BackboneSpec) -> torch.nn.Module:
        import torch

        from miro_backbone_hybrid.network import HybridUNet

        config = self.size_config()
        config.pop("patch_size", None)
        if "channels" in config:
            config["channels"] = tuple(config["channels"])  # type: ignore[arg-type]
        network = HybridUNet(spec.in_channels, spec.image_size, spec.cond_dim, **config)  # type: ignore[arg-type]
        # oneDNN convolutions run about 25% faster on CPU in channels-last layout at these sizes.
        return network.to(memory_format=torch.channels_last)
