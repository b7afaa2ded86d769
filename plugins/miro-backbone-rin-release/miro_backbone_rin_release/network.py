"""The released MIRO RIN network (miro-t2i 0.1.4): patch interface, latents, read / compute / write blocks.

One block (``RINBlock``), all pre-norm residual blocks from :mod:`miro_core.attention_blocks`::

    z = z + CrossAttn(z <- [time | cond.tokens], mask) ; z = z + SwiGLU(z)   # retrieve_cond
    z = z + CrossAttn(z <- x)                          ; z = z + SwiGLU(z)   # retriever_ca
    for each processing layer: z = z + SelfAttn(z)    ; z = z + SwiGLU(z)   # processer_sa
    x = x + CrossAttn(x <- z)                          ; x = x + SwiGLU(x)   # writer_ca

``x`` is the interface (one token per patch, ``data_dim`` wide: linear patch embedding, RMSNorm, learned
positions), ``z`` the latents (``latents_dim`` wide; conditioning tokens of another width are projected to
it, the release has none of that), initialised as learned latents plus the time embedding
of ``gamma = 1 - t``. With self-conditioning, ``LN2(prev + MLP(LN1(prev)))`` of the previous evaluation's
final latents ``prev`` (zeros at the first step) is added to ``z``. The output is read off the interface
by RMSNorm and a linear patch decoder. Module names follow the released checkpoints, so the authors'
``network.*`` tensors load one to one.
"""

from __future__ import annotations

import torch
from torch import nn

from miro_core.attention_blocks import CrossAttentionBlock, GeluMLP, RMSNorm, SelfAttentionBlock
from miro_core.conditioning import Conditioning
from miro_core.fourier import FourierEmbedder


class RINBlock(nn.Module):
    def __init__(
        self,
        data_dim: int,
        latents_dim: int,
        num_processing_layers: int,
        read_write_heads: int,
        compute_heads: int,
        latent_mlp_multiplier: int,
        data_mlp_multiplier: int,
        use_cond_rin_block: bool,
        compute_dropout: float,
        rw_stochastic_depth: float,
        compute_stochastic_depth: float,
    ) -> None:
        super().__init__()
        rw = {"heads": read_write_heads, "stochastic_depth": rw_stochastic_depth}
        self.retrieve_cond: CrossAttentionBlock | None = None
        if use_cond_rin_block:
            self.retrieve_cond = CrossAttentionBlock(
                latents_dim, latents_dim, mlp_multiplier=latent_mlp_multiplier, **rw
            )
        self.retriever_ca = CrossAttentionBlock(latents_dim, data_dim, mlp_multiplier=latent_mlp_multiplier, **rw)
        self.processer_sa = nn.ModuleList(
            SelfAttentionBlock(
                latents_dim,
                compute_heads,
                mlp_multiplier=latent_mlp_multiplier,
                dropout=compute_dropout,
                stochastic_depth=compute_stochastic_depth,
            )
            for _ in range(num_processing_layers)
        )
        self.writer_ca = CrossAttentionBlock(data_dim, latents_dim, mlp_multiplier=data_mlp_multiplier, **rw)

    def forward(
        self, data: torch.Tensor, latents: torch.Tensor, cond: torch.Tensor, cond_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.retrieve_cond is not None:
            latents = self.retrieve_cond(latents, cond, cond_mask)
        latents = self.retriever_ca(latents, data)
        for layer in self.processer_sa:
            latents = layer(latents)
        return self.writer_ca(data, latents), latents


class RINReleaseNetwork(nn.Module):
    """``forward(x, t, cond, state) -> (velocity, state)``: a stateful network (see :mod:`miro_core.backbone`).

    ``state`` is the previous evaluation's final latents ``(B, latents, latents_dim)`` or None (zeros); without
    ``use_self_conditioning`` the returned state is None.
    """

    #: The sampler carries this network's state between steps (self-conditioning).
    stateful = True

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        cond_dim: int = 1024,
        patch_size: int = 2,
        data_dim: int = 512,
        num_latents: int = 256,
        latents_dim: int = 1024,
        num_blocks: int = 4,
        num_processing_layers: int = 4,
        read_write_heads: int = 16,
        compute_heads: int = 32,
        latent_mlp_multiplier: int = 4,
        data_mlp_multiplier: int = 4,
        use_cond_rin_block: bool = True,
        concat_cond_token_to_latents: bool = False,
        num_cond_tokens: int = 0,
        use_self_conditioning: bool = True,
        compute_dropout: float = 0.0,
        rw_stochastic_depth: float = 0.0,
        compute_stochastic_depth: float = 0.0,
        self_condition_rate: float = 0.9,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.latents_dim = latents_dim
        self.concat_cond_token_to_latents = concat_cond_token_to_latents
        self.use_self_conditioning = use_self_conditioning
        #: Read by MiroModel in training: share of samples whose second pass is self-conditioned.
        self.self_condition_rate = self_condition_rate if use_self_conditioning else 0.0
        learned = num_latents - num_cond_tokens - 1 if concat_cond_token_to_latents else num_latents
        if learned < 1:
            raise ValueError(f"num_latents {num_latents} leaves no learned latents after {num_cond_tokens + 1} tokens")

        self.patch_extractor = nn.Linear(in_channels * patch_size * patch_size, data_dim)
        self.data_pos_embedding = nn.Parameter(torch.zeros((image_size // patch_size) ** 2, data_dim))
        self.data_ln = RMSNorm(data_dim)
        self.latents = nn.Parameter(torch.zeros(learned, latents_dim))
        self.time_embedder = FourierEmbedder(latents_dim // 4, latents_dim)
        # The release mixes the conditioning at the latent width (no projection); other widths are projected.
        self.cond_in: nn.Module = nn.Identity() if cond_dim == latents_dim else nn.Linear(cond_dim, latents_dim)
        if use_self_conditioning:
            self.ln_previous_1 = nn.LayerNorm(latents_dim, eps=1e-6)
            self.linear_previous = GeluMLP(latents_dim, latent_mlp_multiplier)
            self.ln_previous_2 = nn.LayerNorm(latents_dim, eps=1e-6)
        self.rin_blocks = nn.ModuleList(
            RINBlock(
                data_dim,
                latents_dim,
                num_processing_layers,
                read_write_heads,
                compute_heads,
                latent_mlp_multiplier,
                data_mlp_multiplier,
                use_cond_rin_block,
                compute_dropout,
                rw_stochastic_depth,
                compute_stochastic_depth,
            )
            for _ in range(num_blocks)
        )
        self.map_tokens_to_patches = nn.Sequential(
            RMSNorm(data_dim), nn.Linear(data_dim, in_channels * patch_size * patch_size)
        )
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """As released: Xavier-uniform linear layers, zero biases, truncated-normal embeddings."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.data_pos_embedding, std=0.02, a=-0.04, b=0.04)
        nn.init.trunc_normal_(self.latents, std=0.02, a=-0.04, b=0.04)
        if self.use_self_conditioning:
            # The self-conditioning residual starts as a no-op.
            nn.init.zeros_(self.ln_previous_2.weight)
            nn.init.zeros_(self.ln_previous_2.bias)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, H/p * W/p, p * p * C)``, pixels of a patch in (row, column, channel) order."""
        b, c, h, w = x.shape
        p = self.patch_size
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, (h // p) * (w // p), p * p * c)

    def unpatchify(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, p, c = x.shape[0], self.patch_size, self.in_channels
        x = x.reshape(b, h // p, w // p, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, c, h, w)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, _, h, w = x.shape
        # The released network is a function of gamma = 1 - t, clamped as its noise schedule clamps it.
        gamma = (1.0 - t.float()).clamp(min=1e-9)
        data = self.data_ln(self.patch_extractor(self.patchify(x))) + self.data_pos_embedding[None]
        time = self.time_embedder(gamma).to(data.dtype)
        tokens = self.cond_in(cond.tokens.to(data.dtype))
        context = torch.cat([time[:, None], tokens], dim=1)
        always = torch.ones(b, 1, dtype=torch.bool, device=cond.mask.device)
        context_mask = torch.cat([always, cond.mask.bool()], dim=1)
        latents = self.latents[None].expand(b, -1, -1)
        if self.concat_cond_token_to_latents:
            z = torch.cat([latents, context], dim=1)
        else:
            z = latents + time[:, None]
        if self.use_self_conditioning:
            previous = torch.zeros_like(z) if state is None else state.to(z.dtype)
            z = z + self.ln_previous_2(previous + self.linear_previous(self.ln_previous_1(previous)))
        for block in self.rin_blocks:
            data, z = block(data, z, context, context_mask)
        out = self.unpatchify(self.map_tokens_to_patches(data), h, w)
        return out, (z if self.use_self_conditioning else None)
