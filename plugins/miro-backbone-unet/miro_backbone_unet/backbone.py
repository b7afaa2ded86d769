"""The light ``unet`` descriptor: named sizes and ``build``; torch is imported only inside ``build``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from miro_core.backbone import Backbone, BackboneSpec
from miro_core.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: Keyword arguments the network accepts from a size or from ``overrides``.
NETWORK_OPTIONS = frozenset(
    {
        "block_out_channels",
        "layers_per_block",
        "attention_levels",
        "head_dim",
        "transformer_layers",
        "norm_num_groups",
        "use_linear_projection",
        "time_scale",
    }
)


class UNetBackbone(Backbone):
    """A U-Net (diffusers' ``UNet2DConditionModel``) conditioned on tokens and on the pooled reward vector.

    Every cross-attention transformer (in the levels named by ``attention_levels`` and in the mid block)
    attends to ``cond.tokens`` (``encoder_hidden_states``, masked with ``cond.mask``); ``cond.pooled`` goes
    through the class embedding (``class_embed_type="projection"``) and is added to the timestep embedding
    that every ResNet block receives. Levels are numbered from full resolution (0) down; by default only the
    lower-resolution levels have attention. ``sd`` has Stable Diffusion 2's layout (attention at levels 0-2).
    """

    name = "unet"
    version = "1"
    description = "U-Net (diffusers UNet2DConditionModel) with cross-attention + class embedding; tiny, small, base, sd"
    reward_conditioning: ClassVar[frozenset[str]] = frozenset({"tokens", "pooled"})
    network_options = NETWORK_OPTIONS
    sizes: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {
            "block_out_channels": [32, 64],
            "layers_per_block": 1,
            "attention_levels": [1],
            "head_dim": 16,
            "norm_num_groups": 8,
        },
        "small": {
            "block_out_channels": [64, 128, 256],
            "layers_per_block": 2,
            "attention_levels": [1, 2],
            "head_dim": 32,
        },
        "base": {
            "block_out_channels": [128, 256, 512, 512],
            "layers_per_block": 2,
            "attention_levels": [2, 3],
            "head_dim": 64,
        },
        "sd": {
            "block_out_channels": [320, 640, 1280, 1280],
            "layers_per_block": 2,
            "attention_levels": [0, 1, 2],
            "head_dim": 64,
            "use_linear_projection": True,
        },
    }

    def build(self, spec: BackboneSpec) -> torch.nn.Module:
        from miro_backbone_unet.network import UNetNetwork

        config = self.size_config()
        channels = [int(c) for c in config["block_out_channels"]]
        levels = len(channels)
        factor = 2 ** (levels - 1)
        if spec.image_size % factor:
            raise ConfigError(
                f"backbone 'unet': image size {spec.image_size} is not a multiple of {factor} "
                f"({levels} levels halve the resolution {levels - 1} times)"
            )
        attention = sorted({int(i) for i in config["attention_levels"]})
        if any(i < 0 or i >= levels for i in attention):
            raise ConfigError(f"backbone 'unet': attention_levels must be level indices in 0..{levels - 1}")
        groups = int(config.get("norm_num_groups", 32))
        if any(c % groups for c in channels):
            raise ConfigError(f"backbone 'unet': every block_out_channels entry must be a multiple of {groups}")
        head_dim = int(config["head_dim"])
        if any(channels[i] % head_dim for i in [*attention, levels - 1]):
            raise ConfigError("backbone 'unet': channels of attention levels must be multiples of head_dim")
        config["block_out_channels"] = channels
        config["attention_levels"] = attention
        return UNetNetwork(in_channels=spec.in_channels, image_size=spec.image_size, cond_dim=spec.cond_dim, **config)
