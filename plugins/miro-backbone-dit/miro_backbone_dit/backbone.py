"""The light ``dit`` descriptor: named sizes and ``build``; torch is imported only inside ``build``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from miro_core.backbone import Backbone, BackboneSpec
from miro_core.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: Keyword arguments the network accepts from a size or from ``overrides``.
NETWORK_OPTIONS = frozenset(
    {"hidden_size", "depth", "num_heads", "patch_size", "mlp_ratio", "cross_attention", "time_scale"}
)


class DiTBackbone(Backbone):
    """DiT (Peebles & Xie 2023) with a cross-attention layer per block.

    Widths, depths and heads of S/B/L/XL are those of the DiT paper; the default patch size is 2
    (``dit-xl/2``). Rewards enter twice: every block cross-attends to ``cond.tokens`` (masked with
    ``cond.mask``), and ``cond.pooled`` is added to the timestep embedding that drives adaLN-Zero.
    """

    name = "dit"
    version = "1"
    description = "DiT (adaLN-Zero) with cross-attention to reward/text tokens; sizes tiny, s, b, l, xl"
    reward_conditioning: ClassVar[frozenset[str]] = frozenset({"tokens", "pooled"})
    network_options = NETWORK_OPTIONS
    sizes: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"hidden_size": 64, "depth": 2, "num_heads": 4, "patch_size": 2},
        "s": {"hidden_size": 384, "depth": 12, "num_heads": 6, "patch_size": 2},
        "b": {"hidden_size": 768, "depth": 12, "num_heads": 12, "patch_size": 2},
        "l": {"hidden_size": 1024, "depth": 24, "num_heads": 16, "patch_size": 2},
        "xl": {"hidden_size": 1152, "depth": 28, "num_heads": 16, "patch_size": 2},
    }

    def build(self, spec: BackboneSpec) -> torch.nn.Module:
        from miro_backbone_dit.network import DiTNetwork

        config = self.size_config()
        self.check_patch_size(config, spec)
        if config["hidden_size"] % config["num_heads"]:
            raise ConfigError("backbone 'dit': hidden_size must be a multiple of num_heads")
        return DiTNetwork(in_channels=spec.in_channels, image_size=spec.image_size, cond_dim=spec.cond_dim, **config)
