"""The DiT network: patch embedding, adaLN-Zero blocks with cross-attention, linear decoder.

Built from diffusers parts (``PatchEmbed`` with fixed 2-D sin-cos positions, ``Timesteps`` +
``TimestepEmbedding``, ``Attention``, ``FeedForward``). One block is::

    x = x + gate1 * SelfAttn(modulate(LN(x), shift1, scale1))
    x = x + CrossAttn(LN(x), cond.tokens, mask=cond.mask)          # text + reward tokens
    x = x + gate2 * MLP(modulate(LN(x), shift2, scale2))

with ``(shift, scale, gate) = Linear(SiLU(c))`` per block and ``c = TimestepMLP(t) + PooledMLP(cond.pooled)``.
The adaLN projections and the output layer start at zero (adaLN-Zero), as in DiT.
"""

from __future__ import annotations

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import PatchEmbed, TimestepEmbedding, Timesteps
from torch import nn

from miro_core.conditioning import Conditioning


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def key_mask(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, L)`` bool -> an SDPA key mask ``(B, 1, L)`` and a ``(B, 1, 1)`` gate that is 0 for rows with no token.

    A row without any real token would make softmax undefined; it attends to its first token instead and the
    gate then zeroes the cross-attention output of that sample, so "no conditioning" contributes nothing.
    """
    has_token = mask.any(dim=1)
    safe = mask.clone()
    safe[:, 0] |= ~has_token
    return safe[:, None, :], has_token[:, None, None]


class DiTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, cond_dim: int, mlp_ratio: float, cross_attention: bool) -> None:
        super().__init__()
        head_dim = dim // num_heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(query_dim=dim, heads=num_heads, dim_head=head_dim, bias=True)
        self.norm_cross: nn.Module | None = None
        self.cross_attn: Attention | None = None
        if cross_attention:
            self.norm_cross = nn.LayerNorm(dim, eps=1e-6)
            self.cross_attn = Attention(
                query_dim=dim, cross_attention_dim=cond_dim, heads=num_heads, dim_head=head_dim, bias=True
            )
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = FeedForward(dim, inner_dim=int(dim * mlp_ratio), activation_fn="gelu-approximate")
        self.ada_ln = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, gate: torch.Tensor
    ) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada_ln(c)[:, None, :].chunk(6, dim=-1)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1))
        if self.cross_attn is not None and self.norm_cross is not None:
            x = x + gate * self.cross_attn(self.norm_cross(x), encoder_hidden_states=tokens, attention_mask=mask)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_features: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada_ln = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, out_features)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada_ln(c)[:, None, :].chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiTNetwork(nn.Module):
    """``forward(x, t, cond) -> velocity`` (see :mod:`miro_core.backbone`)."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        cond_dim: int,
        hidden_size: int,
        depth: int,
        num_heads: int,
        patch_size: int = 2,
        mlp_ratio: float = 4.0,
        cross_attention: bool = True,
        time_scale: float = 1000.0,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.time_scale = time_scale
        self.x_embedder = PatchEmbed(
            height=image_size,
            width=image_size,
            patch_size=patch_size,
            in_channels=in_channels,
            embed_dim=hidden_size,
        )
        # DiT's timestep embedder: 256 sinusoidal frequencies [cos | sin], then Linear-SiLU-Linear.
        self.t_frequencies = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.t_embedder = TimestepEmbedding(256, hidden_size)
        # Pooled reward vector -> added to the timestep embedding (replaces DiT's class embedding).
        self.pooled_embedder = nn.Sequential(
            nn.Linear(cond_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )
        self.blocks = nn.ModuleList(
            [DiTBlock(hidden_size, num_heads, cond_dim, mlp_ratio, cross_attention) for _ in range(depth)]
        )
        self.final_layer = FinalLayer(hidden_size, patch_size * patch_size * in_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT's initialisation: Xavier linears, adaLN modulations and output layer at zero."""

        def basic(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(basic)
        proj = self.x_embedder.proj
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        nn.init.zeros_(proj.bias)
        nn.init.normal_(self.t_embedder.linear_1.weight, std=0.02)
        nn.init.normal_(self.t_embedder.linear_2.weight, std=0.02)
        nn.init.normal_(self.pooled_embedder[0].weight, std=0.02)
        nn.init.normal_(self.pooled_embedder[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.ada_ln[-1].weight)
            nn.init.zeros_(block.ada_ln[-1].bias)
        nn.init.zeros_(self.final_layer.ada_ln[-1].weight)
        nn.init.zeros_(self.final_layer.ada_ln[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def unpatchify(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        p, c = self.patch_size, self.in_channels
        h, w = height // p, width // p
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        height, width = x.shape[-2:]
        h = self.x_embedder(x)
        t_freq = self.t_frequencies(t * self.time_scale).to(h.dtype)
        c = self.t_embedder(t_freq) + self.pooled_embedder(cond.pooled.to(h.dtype))
        mask, gate = key_mask(cond.mask)
        tokens = cond.tokens.to(h.dtype)
        for block in self.blocks:
            h = block(h, c, tokens, mask, gate.to(h.dtype))
        return self.unpatchify(self.final_layer(h, c), height, width)
