"""The conditioning mixer's self-attention layer.

It computes exactly what ``nn.TransformerEncoderLayer(norm_first=True, dropout=0.0)`` computes, with the
same parameter names (``self_attn.in_proj_weight``, ``self_attn.out_proj``, ``linear1``, ``linear2``,
``norm1``, ``norm2``), so run folders saved before it load unchanged. It exists because
``nn.MultiheadAttention`` calls ``F.scaled_dot_product_attention`` directly, which under CPU bf16 autocast
runs the slow bf16 flash-attention backward; this layer goes through
:func:`miro_core.low_precision.attention` instead (about 6 ms of a 120 ms demo training step, measured
with the torch profiler).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from miro_core.low_precision import attention


class PackedSelfAttention(nn.Module):
    """Query, key and value from one packed projection, as ``nn.MultiheadAttention`` stores them."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"conditioning width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``mask``: (B, L) with True where a token may be attended to."""
        b, n, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        y = attention(q, k, v, mask[:, None, None, :])
        return self.out_proj(y.transpose(1, 2).reshape(b, n, d))


class MixerLayer(nn.Module):
    """Pre-norm self-attention and ReLU MLP with residuals."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.self_attn = PackedSelfAttention(dim, heads)
        self.linear1 = nn.Linear(dim, mlp_ratio * dim)
        self.linear2 = nn.Linear(mlp_ratio * dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x), mask)
        return x + self.linear2(F.relu(self.linear1(self.norm2(x))))


class MixerStack(nn.Module):
    """``layers`` in sequence (the ``blocks.layers.N`` keys of ``nn.TransformerEncoder``)."""

    def __init__(self, dim: int, heads: int, depth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(MixerLayer(dim, heads) for _ in range(depth))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x
