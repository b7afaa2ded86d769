"""Random-phase Fourier embeddings of a scalar, as the released MIRO network embeds time and rewards.

The released model (miro-t2i 0.1.4) embeds the flow time ``gamma = 1 - t`` and every reward level the same
way: ``sqrt(2) cos(2 pi f x + phi)`` with frequencies ``f ~ N(0, bandwidth^2)`` and phases ``phi ~ U(0, 1)``
(both kept as buffers, so checkpoints carry them), standardised over the channels, then
``Linear -> SiLU -> Linear``. Submodule names (``encode_time``, ``map_time_input``, ``map_time_output``)
follow the released checkpoints so their tensors load one to one.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class RandomFourierFeatures(nn.Module):
    """``sqrt(2) cos(x f + phase)`` per channel; ``freqs`` already include the factor ``2 pi``."""

    def __init__(self, channels: int, bandwidth: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("freqs", 2 * math.pi * torch.randn(channels) * bandwidth)
        self.register_buffer("phases", 2 * math.pi * torch.rand(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,)`` -> ``(B, channels)``, computed in float32 and returned in ``x``'s dtype."""
        y = torch.outer(x.float().reshape(-1), self.freqs.float()) + self.phases.float()
        return (y.cos() * math.sqrt(2)).to(x.dtype)


class FourierEmbedder(nn.Module):
    """Random Fourier features standardised over channels (mean 0, unbiased std 1), then an MLP.

    ``hidden`` is the width of both linear layers (the released model uses ``4 * channels``).
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.encode_time = RandomFourierFeatures(channels)
        self.map_time_input = nn.Linear(channels, hidden)
        self.map_time_output = nn.Linear(hidden, hidden)
        self.activation = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encode_time(x)
        features = (features - features.mean(dim=-1, keepdim=True)) / features.std(dim=-1, keepdim=True)
        return self.map_time_output(self.activation(self.map_time_input(features)))
