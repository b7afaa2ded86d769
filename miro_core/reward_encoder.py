"""Reward conditioning (MIRO-NOTES section 4): binned levels -> one token per reward.

Each reward has its own embedder (random Fourier features -> Linear -> SiLU -> Linear) and a learned
position vector. A missing (NaN) or dropped reward becomes a zero value embedding (the released
code) or a learned per-reward null embedding (option); its position vector is still added, so the
network knows which reward is unknown.

:class:`ReleasedRewardEncoder` is the released model's variant (``ModelSpec.design = "released"``): every
reward has its own random-phase Fourier features (standardised, :class:`miro_core.fourier.FourierEmbedder`),
and there is no pooled vector.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from miro_core.fourier import FourierEmbedder


class FourierFeatures(nn.Module):
    """Fixed random Fourier features of a scalar in [0, 1]: [cos(2 pi f v), sin(2 pi f v)]."""

    def __init__(self, channels: int = 256, scale: float = 16.0, seed: int = 0) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError("Fourier channels must be even")
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", torch.randn(channels // 2, generator=generator) * scale)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        args = 2 * math.pi * values[..., None].float() * self.freqs
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class RewardEncoder(nn.Module):
    """(B, R) levels in [0, 1] (NaN = missing) -> (B, R, D) tokens and a (B, D) pooled vector."""

    def __init__(
        self,
        num_rewards: int,
        dim: int,
        fourier_channels: int = 256,
        missing: Literal["zero", "learned"] = "zero",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_rewards = num_rewards
        self.dropout = dropout
        self.missing = missing
        self.fourier = FourierFeatures(fourier_channels)
        self.embedders = nn.ModuleList(
            nn.Sequential(nn.Linear(fourier_channels, dim), nn.SiLU(), nn.Linear(dim, dim)) for _ in range(num_rewards)
        )
        self.position = nn.Parameter(torch.randn(num_rewards, dim) * 0.02)
        self.null = nn.Parameter(torch.zeros(num_rewards, dim)) if missing == "learned" else None
        self.pool = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def keep_mask(self, levels: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Which rewards are present: not NaN, and not dropped (training dropout keeps at least one)."""
        present = ~torch.isnan(levels)
        if self.training and self.dropout > 0:
            draw = torch.rand(levels.shape, generator=generator, device="cpu").to(levels.device)
            keep = draw >= self.dropout
            none_kept = ~keep.any(dim=1)
            if none_kept.any():
                forced = torch.randint(0, levels.shape[1], (levels.shape[0],), generator=generator).to(levels.device)
                keep[none_kept, forced[none_kept]] = True
            present = present & keep
        return present

    def forward(
        self, levels: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if levels.shape[1] != self.num_rewards:
            raise ValueError(f"expected {self.num_rewards} reward levels, got {levels.shape[1]}")
        present = self.keep_mask(levels, generator)
        values = torch.nan_to_num(levels, nan=0.0)
        features = self.fourier(values)
        embedded = torch.stack([embed(features[:, i]) for i, embed in enumerate(self.embedders)], dim=1)
        fill = self.null[None].to(embedded.dtype) if self.null is not None else torch.zeros_like(embedded)
        embedded = torch.where(present[..., None], embedded, fill.expand_as(embedded))
        tokens = embedded + self.position[None]
        return tokens, self.pool(tokens.mean(dim=1))


class ReleasedRewardEncoder(nn.Module):
    """(B, R) levels -> (B, R, D) tokens as the released model embeds them; the pooled vector is None.

    Per reward: its own :class:`FourierEmbedder` (``fourier_channels`` random-phase features, standardised,
    ``Linear -> SiLU -> Linear`` at width ``dim``), plus a learned position vector. A missing (NaN) or dropped
    reward gets a zero value embedding before the position is added, as the released sampler does.
    """

    def __init__(self, num_rewards: int, dim: int, fourier_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_rewards = num_rewards
        self.dropout = dropout
        self.embedders = nn.ModuleList(FourierEmbedder(fourier_channels, dim) for _ in range(num_rewards))
        self.position = nn.Parameter(torch.empty(num_rewards, dim))
        for embedder in self.embedders:
            for layer in (embedder.map_time_input, embedder.map_time_output):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        nn.init.trunc_normal_(self.position, std=0.02, a=-0.04, b=0.04)

    keep_mask = RewardEncoder.keep_mask

    def forward(self, levels: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, None]:
        if levels.shape[1] != self.num_rewards:
            raise ValueError(f"expected {self.num_rewards} reward levels, got {levels.shape[1]}")
        present = self.keep_mask(levels, generator)
        # As released, a level enters its embedder in the dtype the text projection outputs: rounded to the
        # autocast dtype under autocast (bf16 on CUDA), and its features are standardised in that dtype.
        device = levels.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else self.position.dtype
        values = torch.nan_to_num(levels.float(), nan=0.0).to(dtype)
        embedded = torch.stack([embed(values[:, i]) for i, embed in enumerate(self.embedders)], dim=1)
        embedded = torch.where(present[..., None], embedded, torch.zeros_like(embedded))
        return embedded + self.position[None], None  # type promotion as released (float32 under autocast)
