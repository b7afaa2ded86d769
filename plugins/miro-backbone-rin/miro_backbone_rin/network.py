"""The RIN network: interface (patch tokens), latents, and read / compute / write blocks.

One block, with pre-norm residual attention blocks (``Attn`` followed by an MLP)::

    z = z + CrossAttn(z <- [time | pooled | cond.tokens], mask)   ; z = z + MLP(z)   # condition
    z = z + CrossAttn(z <- x)                                     ; z = z + MLP(z)   # read
    for each processing layer: z = z + SelfAttn(z)                ; z = z + MLP(z)   # compute
    x = x + CrossAttn(x <- z)                                     ; x = x + MLP(x)   # write

``x`` is the interface (one token per patch, ``interface_dim`` wide, learned positions), ``z`` the
``num_latents`` latents (``latent_dim`` wide) initialised from learned embeddings plus the timestep and pooled
reward embeddings. The output is read off the interface by a LayerNorm and a linear patch decoder.
"""

from __future__ import annotations

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from miro_core.conditioning import Conditioning


class CrossAttentionBlock(nn.Module):
    """``x = x + Attn(LN(x), LN(ctx), mask)``, then ``x = x + MLP(LN(x))``."""

    def __init__(self, dim: int, context_dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim, eps=1e-6)
        self.norm_kv = nn.LayerNorm(context_dim, eps=1e-6)
        self.attn = Attention(
            query_dim=dim, cross_attention_dim=context_dim, heads=heads, dim_head=dim // heads, bias=True
        )
        self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FeedForward(dim, inner_dim=int(dim * mlp_ratio), activation_fn="gelu")

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm_q(x), encoder_hidden_states=self.norm_kv(context), attention_mask=mask)
        return x + self.mlp(self.norm_mlp(x))


class SelfAttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(query_dim=dim, heads=heads, dim_head=dim // heads, bias=True)
        self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FeedForward(dim, inner_dim=int(dim * mlp_ratio), activation_fn="gelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm_attn(x))
        return x + self.mlp(self.norm_mlp(x))


class RINBlock(nn.Module):
    def __init__(
        self,
        interface_dim: int,
        latent_dim: int,
        num_layers: int,
        read_write_heads: int,
        compute_heads: int,
        latent_mlp_ratio: float,
        interface_mlp_ratio: float,
    ) -> None:
        super().__init__()
        self.condition = CrossAttentionBlock(latent_dim, latent_dim, read_write_heads, latent_mlp_ratio)
        self.read = CrossAttentionBlock(latent_dim, interface_dim, read_write_heads, latent_mlp_ratio)
        self.compute = nn.ModuleList(
            [SelfAttentionBlock(latent_dim, compute_heads, latent_mlp_ratio) for _ in range(num_layers)]
        )
        self.write = CrossAttentionBlock(interface_dim, latent_dim, read_write_heads, interface_mlp_ratio)

    def forward(
        self, x: torch.Tensor, z: torch.Tensor, context: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.condition(z, context, mask)
        z = self.read(z, x)
        for layer in self.compute:
            z = layer(z)
        x = self.write(x, z)
        return x, z


class RINNetwork(nn.Module):
    """``forward(x, t, cond) -> velocity`` (see :mod:`miro_core.backbone`).

    With ``self_condition``, the forward pass may run the network twice: a first pass without gradient yields
    latents that warm-start the second (in training with probability ``self_condition_prob``, in eval mode
    when ``self_condition_eval == "two_pass"``); otherwise the previous latents are zeros. Either way the
    call stays ``forward(x, t, cond) -> velocity``.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        cond_dim: int,
        patch_size: int = 2,
        interface_dim: int = 256,
        num_latents: int = 256,
        latent_dim: int = 1024,
        num_blocks: int = 4,
        num_layers: int = 4,
        read_write_heads: int = 16,
        compute_heads: int = 16,
        latent_mlp_ratio: float = 4.0,
        interface_mlp_ratio: float = 4.0,
        time_scale: float = 1000.0,
        self_condition: bool = False,
        self_condition_prob: float = 0.9,
        self_condition_eval: str = "two_pass",
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.time_scale = time_scale
        self.self_condition = self_condition
        self.self_condition_prob = self_condition_prob
        self.self_condition_eval = self_condition_eval
        grid = image_size // patch_size

        self.patch_embed = nn.Conv2d(in_channels, interface_dim, kernel_size=patch_size, stride=patch_size)
        self.interface_norm = nn.LayerNorm(interface_dim, eps=1e-6)
        self.interface_pos = nn.Parameter(torch.zeros(grid * grid, interface_dim))
        self.latents = nn.Parameter(torch.zeros(num_latents, latent_dim))

        self.t_frequencies = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.t_embedder = TimestepEmbedding(256, latent_dim)
        self.pooled_embedder = nn.Sequential(
            nn.Linear(cond_dim, latent_dim), nn.SiLU(), nn.Linear(latent_dim, latent_dim)
        )
        self.cond_in: nn.Module = nn.Identity() if cond_dim == latent_dim else nn.Linear(cond_dim, latent_dim)

        self.previous_in: nn.Module | None = None
        self.previous_out: nn.LayerNorm | None = None
        if self_condition:
            self.previous_in = nn.Sequential(
                nn.LayerNorm(latent_dim, eps=1e-6),
                FeedForward(latent_dim, inner_dim=int(latent_dim * latent_mlp_ratio), activation_fn="gelu"),
            )
            self.previous_out = nn.LayerNorm(latent_dim, eps=1e-6)

        self.blocks = nn.ModuleList(
            [
                RINBlock(
                    interface_dim,
                    latent_dim,
                    num_layers,
                    read_write_heads,
                    compute_heads,
                    latent_mlp_ratio,
                    interface_mlp_ratio,
                )
                for _ in range(num_blocks)
            ]
        )
        self.out_norm = nn.LayerNorm(interface_dim, eps=1e-6)
        self.out_proj = nn.Linear(interface_dim, patch_size * patch_size * in_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        def basic(module: nn.Module) -> None:
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(basic)
        nn.init.trunc_normal_(self.interface_pos, std=0.02, a=-0.04, b=0.04)
        nn.init.trunc_normal_(self.latents, std=0.02, a=-0.04, b=0.04)
        # The velocity head starts at zero (as DiT's), so the first steps do not fight a random output.
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)
        if self.previous_out is not None:
            # The warm start begins as a no-op and is learned.
            nn.init.zeros_(self.previous_out.weight)
            nn.init.zeros_(self.previous_out.bias)

    def unpatchify(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        p, c = self.patch_size, self.in_channels
        h, w = height // p, width // p
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, w * p)

    def run(
        self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning, previous: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass; returns ``(velocity, final latents)``."""
        batch, _, height, width = x.shape
        interface = self.patch_embed(x).flatten(2).transpose(1, 2)
        interface = self.interface_norm(interface) + self.interface_pos.to(interface.dtype)

        dtype = interface.dtype
        time_emb = self.t_embedder(self.t_frequencies(t * self.time_scale).to(dtype))
        pooled_emb = self.pooled_embedder(cond.pooled.to(dtype))
        z = self.latents.to(dtype)[None].expand(batch, -1, -1) + (time_emb + pooled_emb)[:, None, :]
        if self.previous_in is not None and self.previous_out is not None:
            if previous is None:
                previous = torch.zeros_like(z)
            z = z + self.previous_out(previous + self.previous_in(previous))

        context = torch.cat([time_emb[:, None], pooled_emb[:, None], self.cond_in(cond.tokens.to(dtype))], dim=1)
        always = torch.ones(batch, 2, dtype=torch.bool, device=cond.mask.device)
        mask = torch.cat([always, cond.mask.bool()], dim=1)[:, None, :]

        for block in self.blocks:
            interface, z = block(interface, z, context, mask)
        out = self.out_proj(self.out_norm(interface))
        return self.unpatchify(out, height, width), z

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        previous = None
        if self.self_condition:
            if self.training:
                warm = bool(torch.rand(()) < self.self_condition_prob)
            else:
                warm = self.self_condition_eval == "two_pass"
            if warm:
                with torch.no_grad():
                    _, previous = self.run(x, t, cond, None)
                previous = previous.detach()
        return self.run(x, t, cond, previous)[0]
