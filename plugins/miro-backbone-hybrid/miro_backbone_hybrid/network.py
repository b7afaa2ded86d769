"""A U-shaped hybrid for small images: convolutions at high resolution, a transformer at the bottom.

Why this shape: on a 2-core CPU a pure patch transformer at 32x32 learns colours fast but draws
blocky patches (MIRO-NOTES section 9), while a full convolutional UNet spends most of its FLOPs at
32x32. Here the convolutions only see 32x32 and 16x16 with few channels, and the global reasoning
(which shapes, where, what the rewards ask for) happens in a small transformer over 8x8 tokens that
cross-attends to the conditioning sequence. Time and the pooled reward vector modulate every block
(FiLM / adaLN), so rewards reach the network both as tokens and as a pooled vector.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from miro_core.conditioning import Conditioning
from miro_core.low_precision import GroupNorm32, attention


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of flow time in [0, 1] (scaled to the usual 0..1000 range)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the conditioning vector as a per-channel scale and shift."""

    def __init__(self, channels: int, emb_dim: int, groups: int = 8) -> None:
        super().__init__()
        self.norm1 = GroupNorm32(groups, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = GroupNorm32(groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * channels)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return x + self.conv2(F.silu(h))


class Attention(nn.Module):
    """Multi-head attention on :func:`miro_core.low_precision.attention` (SDPA, fast under CPU bf16).

    Written out instead of ``nn.MultiheadAttention`` because the latter's packed projections and
    layout copies cost a third of a training step at this size on CPU.
    """

    def __init__(self, width: int, heads: int, context_width: int | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(context_width or width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        h = self.heads
        q = self.q(x).view(b, n, h, c // h).transpose(1, 2)
        k, v = self.kv(context).view(b, context.shape[1], 2, h, c // h).permute(2, 0, 3, 1, 4)
        attn_mask = mask[:, None, None, :] if mask is not None else None
        y = attention(q, k, v, attn_mask)
        return self.out(y.transpose(1, 2).reshape(b, n, c))


class TransformerBlock(nn.Module):
    """Pre-norm self-attention, cross-attention to the conditioning tokens, MLP; adaLN from the embedding."""

    def __init__(self, width: int, heads: int, emb_dim: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False)
        self.self_attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.cross_attn = Attention(width, heads)
        self.norm3 = nn.LayerNorm(width, elementwise_affine=False)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.ada = nn.Linear(emb_dim, 6 * width)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s1, b1, g1, s2, b2, g2 = self.ada(emb)[:, None].chunk(6, dim=-1)
        h = self.norm1(x) * (1 + s1) + b1
        x = x + (1 + g1) * self.self_attn(h, h)
        x = x + self.cross_attn(self.norm2(x), context, mask)
        h = self.norm3(x) * (1 + s2) + b2
        return x + (1 + g2) * self.mlp(h)


class HybridUNet(nn.Module):
    """Two convolutional levels (full and half resolution) around a transformer at 1/4 resolution."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        cond_dim: int,
        channels: tuple[int, int] = (32, 64),
        width: int = 128,
        depth: int = 4,
        heads: int = 4,
        emb_dim: int = 128,
        res_blocks: int = 1,
        transformer_stride: int = 4,
    ) -> None:
        super().__init__()
        if transformer_stride not in (2, 4):
            raise ValueError(f"transformer_stride must be 2 or 4, got {transformer_stride}")
        if image_size % 4:
            raise ValueError(f"image size {image_size} must be divisible by 4")
        c1, c2 = channels
        self.emb_dim = emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.pooled_proj = nn.Sequential(nn.Linear(cond_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.context_proj = nn.Linear(cond_dim, width)
        self.stem = nn.Conv2d(in_channels, c1, 3, padding=1)
        self.enc1 = nn.ModuleList(ResBlock(c1, emb_dim) for _ in range(res_blocks))
        self.down1 = nn.Conv2d(c1, c2, 4, stride=2, padding=1)
        self.enc2 = nn.ModuleList(ResBlock(c2, emb_dim) for _ in range(res_blocks))
        # The transformer runs at 1/4 resolution (stride 4) or, for finer shapes, at 1/2 (stride 2).
        if transformer_stride == 4:
            self.down2 = nn.Conv2d(c2, width, 4, stride=2, padding=1)
            self.up2 = nn.ConvTranspose2d(width, c2, 4, stride=2, padding=1)
        else:
            self.down2 = nn.Conv2d(c2, width, 3, padding=1)
            self.up2 = nn.Conv2d(width, c2, 3, padding=1)
        tokens = (image_size // transformer_stride) ** 2
        self.pos = nn.Parameter(torch.randn(1, tokens, width) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(width, heads, emb_dim) for _ in range(depth))
        self.mid_norm = nn.LayerNorm(width)
        self.merge2 = nn.Conv2d(2 * c2, c2, 1)
        self.dec2 = nn.ModuleList(ResBlock(c2, emb_dim) for _ in range(res_blocks))
        self.up1 = nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1)
        self.merge1 = nn.Conv2d(2 * c1, c1, 1)
        self.dec1 = nn.ModuleList(ResBlock(c1, emb_dim) for _ in range(res_blocks))
        self.out_norm = GroupNorm32(8, c1)
        self.out = nn.Conv2d(c1, in_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.emb_dim)) + self.pooled_proj(cond.pooled)
        context = self.context_proj(cond.tokens)
        h1 = self.stem(x.contiguous(memory_format=torch.channels_last))
        for block in self.enc1:
            h1 = block(h1, emb)
        h2 = self.down1(h1)
        for block in self.enc2:
            h2 = block(h2, emb)
        h = self.down2(h2)
        b, c, hh, ww = h.shape
        tokens = h.flatten(2).transpose(1, 2) + self.pos
        for block in self.blocks:
            tokens = block(tokens, emb, context, cond.mask)
        h = self.mid_norm(tokens).transpose(1, 2).reshape(b, c, hh, ww)
        h = self.merge2(torch.cat([self.up2(h), h2], dim=1))
        for block in self.dec2:
            h = block(h, emb)
        h = self.merge1(torch.cat([self.up1(h), h1], dim=1))
        for block in self.dec1:
            h = block(h, emb)
        return self.out(F.silu(self.out_norm(h)))
