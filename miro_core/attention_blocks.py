"""Transformer blocks of the released MIRO network (miro-t2i 0.1.4), shared by its backbone and its mixer.

The released blocks differ from textbook ones in ways that change the function, so each is explicit here:
RMSNorm computed in float32 without bias; attention with an optional per-head LayerNorm on queries and
keys, no normalisation on the key/value side of cross-attention, cross-attention width ``min(dim_q,
dim_kv)``; a SwiGLU feed-forward whose hidden width is ``2/3 * mult * dim`` rounded up to a multiple of
256 (2816 at width 1024, 1536 at width 512), or a GELU MLP; optional layer scale; stochastic depth.

Parameter names (``initial_ln``, ``sa.qkv``, ``ca.kv``, ``ffn.linear_packed``, ...) follow the released
checkpoints, so their tensors load without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from miro_core.low_precision import attention


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * weight``, normalised in float32 and returned in ``x``'s dtype."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.type_as(x) * self.weight


def make_norm(kind: str, dim: int) -> nn.Module:
    """``rms`` (the backbone's) or ``layer`` (the conditioning mixer's), both with eps 1e-6."""
    if kind == "rms":
        return RMSNorm(dim, eps=1e-6)
    if kind == "layer":
        return nn.LayerNorm(dim, eps=1e-6)
    raise ValueError(f"unknown norm {kind!r}; use rms or layer")


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch of a sample with probability ``p`` in training."""
    if not training or p <= 0.0:
        return x
    keep = 1.0 - p
    mask = torch.empty(x.shape[0], *([1] * (x.dim() - 1)), device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * mask / keep


class SwiGLU(nn.Module):
    """``linear_out(a * silu(b))`` with ``[a, b] = linear_packed(x)``."""

    def __init__(self, dim: int, multiplier: int = 4, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        hidden = int(multiplier * dim * 2 / 3)
        hidden = hidden if hidden % 256 == 0 else hidden + 256 - hidden % 256
        self.linear_packed = nn.Linear(dim, 2 * hidden, bias=bias)
        self.linear_out = nn.Linear(hidden, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.linear_packed(x).chunk(2, dim=-1)
        return self.linear_out(self.dropout(a * F.silu(b)))


class GeluMLP(nn.Module):
    """``linear_2(gelu(linear_1(x)))`` (exact GELU)."""

    def __init__(self, dim: int, multiplier: int = 4, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(dim, dim * multiplier, bias=bias)
        self.linear_2 = nn.Linear(dim * multiplier, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.dropout(F.gelu(self.linear_1(x))))


class AttentionOp(nn.Module):
    """Multi-head attention at ``attention_dim``; ``packed`` projects q, k, v from one input (self-attention)."""

    def __init__(
        self,
        attention_dim: int,
        heads: int,
        dim_q: int,
        dim_kv: int,
        packed: bool,
        qkv_bias: bool = False,
        out_bias: bool = True,
        qk_norm: bool = True,
    ) -> None:
        super().__init__()
        if attention_dim % heads:
            raise ValueError(f"attention width {attention_dim} is not divisible by {heads} heads")
        self.heads = heads
        self.packed = packed
        if packed:
            self.qkv = nn.Linear(dim_q, 3 * attention_dim, bias=qkv_bias)
        else:
            self.q = nn.Linear(dim_q, attention_dim, bias=qkv_bias)
            self.kv = nn.Linear(dim_kv, 2 * attention_dim, bias=qkv_bias)
        self.out = nn.Linear(attention_dim, dim_q, bias=out_bias)
        self.q_norm: nn.Module | None = None
        self.k_norm: nn.Module | None = None
        if qk_norm:
            head_dim = attention_dim // heads
            self.q_norm = nn.LayerNorm(head_dim, eps=1e-6)
            self.k_norm = nn.LayerNorm(head_dim, eps=1e-6)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(
        self, x_to: torch.Tensor, x_from: torch.Tensor | None = None, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``key_mask``: ``(B, N_from)`` bool, True where a key may be attended to."""
        if self.packed:
            q, k, v = self.qkv(x_to).chunk(3, dim=-1)
        else:
            q = self.q(x_to)
            k, v = self.kv(x_to if x_from is None else x_from).chunk(2, dim=-1)
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        mask = None if key_mask is None else key_mask.bool()[:, None, None, :]
        y = attention(q, k, v, mask)
        b, h, n, d = y.shape
        return self.out(y.transpose(1, 2).reshape(b, n, h * d))


class SelfAttentionBlock(nn.Module):
    """Pre-norm self-attention and feed-forward with residuals (and optional layer scale)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_multiplier: int = 4,
        norm: str = "rms",
        qkv_bias: bool = False,
        qk_norm: bool = True,
        swiglu: bool = True,
        layer_scale: float | None = None,
        dropout: float = 0.0,
        stochastic_depth: float = 0.0,
    ) -> None:
        super().__init__()
        self.stochastic_depth = stochastic_depth
        self.initial_ln = make_norm(norm, dim)
        self.sa = AttentionOp(dim, heads, dim, dim, packed=True, qkv_bias=qkv_bias, qk_norm=qk_norm)
        self.middle_ln = make_norm(norm, dim)
        self.ffn = (SwiGLU if swiglu else GeluMLP)(dim, mlp_multiplier, dropout)
        self.layer_scale_1: nn.Parameter | None = None
        self.layer_scale_2: nn.Parameter | None = None
        if layer_scale is not None:
            self.layer_scale_1 = nn.Parameter(torch.full((dim,), float(layer_scale)))
            self.layer_scale_2 = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, tokens: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        update = self.sa(self.initial_ln(tokens), key_mask=token_mask)
        if self.layer_scale_1 is not None:
            update = self.layer_scale_1 * update
        tokens = tokens + drop_path(update, self.stochastic_depth, self.training)
        update = self.ffn(self.middle_ln(tokens))
        if self.layer_scale_2 is not None:
            update = self.layer_scale_2 * update
        return tokens + drop_path(update, self.stochastic_depth, self.training)


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention (only the query side is normalised) and feed-forward with residuals."""

    def __init__(
        self,
        dim_q: int,
        dim_kv: int,
        heads: int,
        mlp_multiplier: int = 4,
        dropout: float = 0.0,
        stochastic_depth: float = 0.0,
    ) -> None:
        super().__init__()
        self.stochastic_depth = stochastic_depth
        self.initial_to_ln = RMSNorm(dim_q)
        self.ca = AttentionOp(min(dim_q, dim_kv), heads, dim_q, dim_kv, packed=False)
        self.middle_ln = RMSNorm(dim_q)
        self.ffn = SwiGLU(dim_q, mlp_multiplier, dropout)

    def forward(
        self, to_tokens: torch.Tensor, from_tokens: torch.Tensor, from_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        update = self.ca(self.initial_to_ln(to_tokens), from_tokens, key_mask=from_mask)
        to_tokens = to_tokens + drop_path(update, self.stochastic_depth, self.training)
        return to_tokens + drop_path(self.ffn(self.middle_ln(to_tokens)), self.stochastic_depth, self.training)
