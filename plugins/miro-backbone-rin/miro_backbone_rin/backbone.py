"""The light ``rin`` descriptor: named sizes, options and ``build``; torch is imported only inside ``build``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from miro_core.backbone import Backbone, BackboneOptions, BackboneSpec
from miro_core.component import ComponentOptions
from miro_core.errors import ConfigError

if TYPE_CHECKING:
    import torch

NETWORK_OPTIONS = frozenset(
    {
        "patch_size",
        "interface_dim",
        "num_latents",
        "latent_dim",
        "num_blocks",
        "num_layers",
        "read_write_heads",
        "compute_heads",
        "latent_mlp_ratio",
        "interface_mlp_ratio",
        "time_scale",
    }
)


class RINOptions(BackboneOptions):
    #: Latent self-conditioning (RIN's "warm start"): the latents of a first, gradient-free pass are fed
    #: (through a zero-initialised LayerNorm + MLP) into the initial latents of the second pass.
    self_condition: bool = False
    #: Training mode: probability that a batch gets the extra self-conditioning pass (RIN used 0.9).
    self_condition_prob: float = Field(0.9, ge=0.0, le=1.0)
    #: Eval mode: "two_pass" always runs the extra pass (2x FLOPs), "none" uses zero previous latents.
    self_condition_eval: Literal["two_pass", "none"] = "two_pass"


class RINBackbone(Backbone):
    """Recurrent Interface Network (Jabri, Fleet & Chen, ICML 2023) with conditioning cross-attention.

    Patch tokens form the *interface*, a smaller set of learned *latents* does the global computation. Each
    block: the latents cross-attend to the conditioning sequence ``[time token | pooled token | cond.tokens]``
    (masked), *read* from the interface (cross-attention), run ``num_layers`` self-attention layers, and the
    interface *writes* back (cross-attention from the latents). The timestep and pooled reward embeddings are
    also added to the initial latents. ``miro`` is the MIRO/CAD configuration (4 blocks x 4 layers,
    256 latents x 1024, interface 256, patch 2, 16 heads).
    """

    name = "rin"
    version = "1"
    description = "Recurrent Interface Network with cross-attention to reward/text tokens; sizes tiny, miro"
    Options: ClassVar[type[ComponentOptions]] = RINOptions
    reward_conditioning: ClassVar[frozenset[str]] = frozenset({"tokens", "pooled"})
    network_options = NETWORK_OPTIONS
    sizes: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {
            "patch_size": 2,
            "interface_dim": 32,
            "num_latents": 16,
            "latent_dim": 64,
            "num_blocks": 2,
            "num_layers": 1,
            "read_write_heads": 4,
            "compute_heads": 4,
        },
        "miro": {
            "patch_size": 2,
            "interface_dim": 256,
            "num_latents": 256,
            "latent_dim": 1024,
            "num_blocks": 4,
            "num_layers": 4,
            "read_write_heads": 16,
            "compute_heads": 16,
        },
    }

    def build(self, spec: BackboneSpec) -> torch.nn.Module:
        from miro_backbone_rin.network import RINNetwork

        config = self.size_config()
        self.check_patch_size(config, spec)
        if config["interface_dim"] % config["read_write_heads"] or config["latent_dim"] % config["read_write_heads"]:
            raise ConfigError("backbone 'rin': interface_dim and latent_dim must be multiples of read_write_heads")
        if config["latent_dim"] % config["compute_heads"]:
            raise ConfigError("backbone 'rin': latent_dim must be a multiple of compute_heads")
        opts = self.options
        return RINNetwork(
            in_channels=spec.in_channels,
            image_size=spec.image_size,
            cond_dim=spec.cond_dim,
            self_condition=opts.self_condition,
            self_condition_prob=opts.self_condition_prob,
            self_condition_eval=opts.self_condition_eval,
            **config,
        )
