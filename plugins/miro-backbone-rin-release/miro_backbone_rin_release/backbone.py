"""The light ``rin-release`` descriptor: named sizes, options and ``build``; torch is imported only inside ``build``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from miro_core.backbone import Backbone, BackboneOptions, BackboneSpec
from miro_core.component import ComponentOptions
from miro_core.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: The released network's own constructor arguments (``CADRINTextCond`` in miro-t2i 0.1.4), so that an
#: imported ``config.json`` maps onto options without renaming.
NETWORK_OPTIONS = frozenset(
    {
        "patch_size",
        "data_dim",
        "num_latents",
        "latents_dim",
        "num_blocks",
        "num_processing_layers",
        "read_write_heads",
        "compute_heads",
        "latent_mlp_multiplier",
        "data_mlp_multiplier",
        "use_cond_rin_block",
        "concat_cond_token_to_latents",
        "num_cond_tokens",
        "use_self_conditioning",
        "compute_dropout",
        "rw_stochastic_depth",
        "compute_stochastic_depth",
    }
)

RELEASED = {
    "patch_size": 2,
    "data_dim": 512,
    "num_latents": 256,
    "latents_dim": 1024,
    "num_blocks": 4,
    "num_processing_layers": 4,
    "read_write_heads": 16,
    "compute_heads": 32,
    "latent_mlp_multiplier": 4,
    "data_mlp_multiplier": 4,
    "use_cond_rin_block": True,
    "concat_cond_token_to_latents": False,
    "use_self_conditioning": True,
}


class RINReleaseOptions(BackboneOptions):
    #: Training: probability that a sample's second pass gets the first pass's final latents (0.9 released);
    #: the others get zeros. Only used with ``use_self_conditioning``.
    self_condition_rate: float = Field(0.9, ge=0.0, le=1.0)


class RINReleaseBackbone(Backbone):
    """The RIN of the released MIRO model: RMSNorm, q/k LayerNorm, SwiGLU, a time token, self-conditioning.

    Each block: the latents cross-attend to ``[time token | cond.tokens]`` (``retrieve_cond``), read the patch
    interface (``retriever_ca``), run ``num_processing_layers`` self-attention layers (``processer_sa``) and
    the interface writes back (``writer_ca``). The network returns its final latents as sampler state, which
    the next step feeds back in (latent self-conditioning). ``miro`` is the released configuration.
    """

    name = "rin-release"
    version = "1"
    description = "the released MIRO RIN (miro-t2i 0.1.4), loads the authors' checkpoints; sizes tiny, small, miro"
    Options: ClassVar[type[ComponentOptions]] = RINReleaseOptions
    reward_conditioning: ClassVar[frozenset[str]] = frozenset({"tokens"})
    designs: ClassVar[frozenset[str]] = frozenset({"released"})
    network_options = NETWORK_OPTIONS
    sizes: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {
            **RELEASED,
            "data_dim": 32,
            "num_latents": 16,
            "latents_dim": 64,
            "num_blocks": 2,
            "num_processing_layers": 1,
            "read_write_heads": 4,
            "compute_heads": 4,
        },
        "small": {
            **RELEASED,
            "data_dim": 128,
            "num_latents": 64,
            "latents_dim": 256,
            "num_blocks": 2,
            "num_processing_layers": 2,
            "read_write_heads": 8,
            "compute_heads": 8,
        },
        "miro": dict(RELEASED),
    }

    def build(self, spec: BackboneSpec) -> torch.nn.Module:
        from miro_backbone_rin_release.network import RINReleaseNetwork

        config = self.size_config()
        self.check_patch_size(config, spec)
        latents_dim, data_dim = int(config["latents_dim"]), int(config["data_dim"])
        rw, compute = int(config["read_write_heads"]), int(config["compute_heads"])
        if min(latents_dim, data_dim) % rw or latents_dim % compute:
            raise ConfigError(
                "backbone 'rin-release': min(data_dim, latents_dim) must be a multiple of read_write_heads and "
                "latents_dim a multiple of compute_heads"
            )
        if latents_dim % 4:
            raise ConfigError("backbone 'rin-release': latents_dim must be a multiple of 4 (time embedding)")
        if config.get("concat_cond_token_to_latents") and "num_cond_tokens" not in config:
            raise ConfigError("backbone 'rin-release': concat_cond_token_to_latents needs num_cond_tokens")
        return RINReleaseNetwork(
            in_channels=spec.in_channels,
            image_size=spec.image_size,
            cond_dim=spec.cond_dim,
            self_condition_rate=self.options.self_condition_rate,
            **config,
        )
