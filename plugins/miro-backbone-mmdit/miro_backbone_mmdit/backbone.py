"""The light ``mmdit`` descriptor: named sizes and ``build``; torch is imported only inside ``build``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from miro_core.backbone import Backbone, BackboneSpec
from miro_core.errors import ConfigError

if TYPE_CHECKING:
    import torch

NETWORK_OPTIONS = frozenset(
    {"num_layers", "num_heads", "head_dim", "patch_size", "dual_attention_layers", "qk_norm", "time_scale"}
)


class MMDiTBackbone(Backbone):
    """MMDiT (Esser et al. 2024, Stable Diffusion 3) through diffusers' ``SD3Transformer2DModel``.

    The conditioning tokens are the joint-attention "context" stream (``cond_dim`` is projected to the
    model width by SD3's ``context_embedder``), ``cond.pooled`` goes through ``pooled_projections`` into the
    timestep embedding (adaLN). SD3 has no attention mask; this plugin installs a joint-attention processor
    that masks padded context tokens as keys, so they never reach the image stream.

    Sizes follow SD3's scaling rule (width = 64 x depth, heads = depth): ``medium`` is SD3-medium's
    transformer, ``large`` SD3.5-large's (with RMS q/k normalisation).
    """

    name = "mmdit"
    version = "1"
    description = "MMDiT (SD3 joint attention, diffusers) with masked context; sizes tiny, small, base, medium, large"
    reward_conditioning: ClassVar[frozenset[str]] = frozenset({"tokens", "pooled"})
    network_options = NETWORK_OPTIONS
    sizes: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"num_layers": 2, "num_heads": 2, "head_dim": 32, "patch_size": 2},
        "small": {"num_layers": 12, "num_heads": 12, "head_dim": 64, "patch_size": 2},
        "base": {"num_layers": 18, "num_heads": 18, "head_dim": 64, "patch_size": 2},
        "medium": {"num_layers": 24, "num_heads": 24, "head_dim": 64, "patch_size": 2},
        "large": {"num_layers": 38, "num_heads": 38, "head_dim": 64, "patch_size": 2, "qk_norm": "rms_norm"},
    }

    def build(self, spec: BackboneSpec) -> torch.nn.Module:
        from miro_backbone_mmdit.network import MMDiTNetwork

        config = self.size_config()
        self.check_patch_size(config, spec)
        if config.get("qk_norm") not in (None, "rms_norm", "layer_norm"):
            raise ConfigError("backbone 'mmdit': qk_norm must be null, 'rms_norm' or 'layer_norm'")
        return MMDiTNetwork(in_channels=spec.in_channels, image_size=spec.image_size, cond_dim=spec.cond_dim, **config)
