"""What the conditioning stack hands a backbone: a token sequence, its mask and (optionally) a pooled vector.

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
    - ``pooled``: ``(B, D)`` pooled reward (and text) vector for timestep-embedding conditioning, or None
      (the released design has none).
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor | None = None

    def __post_init__(self) -> None:
        b, length, dim = self.tokens.shape
        if self.mask.shape != (b, length):
            raise ValueError(f"mask shape {tuple(self.mask.shape)} does not match tokens {(b, length)}")
        if self.pooled is not None and self.pooled.shape != (b, dim):
            raise ValueError(f"pooled shape {tuple(self.pooled.shape)} does not match {(b, dim)}")

    def repeat(self, times: int) -> Conditioning:
        """Stack ``times`` copies along the batch (for batched guidance branches)."""
        pooled = None if self.pooled is None else self.pooled.repeat(times, 1)
        return Conditioning(self.tokens.repeat(times, 1, 1), self.mask.repeat(times, 1), pooled)

    @staticmethod
    def cat(parts: list[Conditioning]) -> Conditioning:
        pooled = [p.pooled for p in parts]
        return Conditioning(
            torch.cat([p.tokens for p in parts]),
            torch.cat([p.mask for p in parts]),
            None if any(p is None for p in pooled) else torch.cat(pooled),  # type: ignore[misc]
        )
