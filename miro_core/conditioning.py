"""What the conditioning stack hands a backbone: a token sequence, its mask and a pooled vector.

This module imports torch; it is imported only when a model is built.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Conditioning:
    """Conditioning for one batch.

    - ``tokens``: ``(B, L, D)`` the sequence [reward tokens | registers | text tokens] after the mixer;
    - ``mask``: ``(B, L)`` bool, True where a token is real (padding of the text is False);
    - ``pooled``: ``(B, D)`` pooled reward (and text) vector for timestep-embedding conditioning.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def __post_init__(self) -> None:
        b, length, dim = self.tokens.shape
        if self.mask.shape != (b, length):
            raise ValueError(f"mask shape {tuple(self.mask.shape)} does not match tokens {(b, length)}")
        if self.pooled.shape != (b, dim):
            raise ValueError(f"pooled shape {tuple(self.pooled.shape)} does not match {(b, dim)}")

    def repeat(self, times: int) -> Conditioning:
        """Stack ``times`` copies along the batch (for batched guidance branches)."""
        return Conditioning(
            self.tokens.repeat(times, 1, 1), self.mask.repeat(times, 1), self.pooled.repeat(times, 1)
        )

    @staticmethod
    def cat(parts: list[Conditioning]) -> Conditioning:
        return Conditioning(
            torch.cat([p.tokens for p in parts]),
            torch.cat([p.mask for p in parts]),
            torch.cat([p.pooled for p in parts]),
        )
