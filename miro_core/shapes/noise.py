"""Noise estimation (Immerkaer 1996), batched, for the detector and the image-quality rewards.

Immerkaer's operator is the difference of two Laplacians, which cancels any locally linear signal
(flat regions and lighting gradients) and leaves mostly noise: for i.i.d. Gaussian noise of standard
deviation sigma its response has standard deviation 6 * sigma. The original estimator averages the
absolute response over the image, so sharp edges inflate it; the *robust* variant used by default takes the
median instead, which ignores edges as long as they cover less than half the pixels (true for the
shapes world), so a crisp clean image reads as noise-free while a noisy one does not.
"""

from __future__ import annotations

import math

import numpy as np

#: Median of |N(0, 1)|, to turn a median absolute response into a standard deviation.
_MAD_TO_SIGMA = 1.0 / 0.6744897501960817


def immerkaer_response(gray: np.ndarray) -> np.ndarray:
    """The operator [[1,-2,1],[-2,4,-2],[1,-2,1]] on the last two axes ('valid' region, no padding)."""
    g = np.asarray(gray, dtype=np.float32)
    tl, tc, tr = g[..., :-2, :-2], g[..., :-2, 1:-1], g[..., :-2, 2:]
    ml, mc, mr = g[..., 1:-1, :-2], g[..., 1:-1, 1:-1], g[..., 1:-1, 2:]
    bl, bc, br = g[..., 2:, :-2], g[..., 2:, 1:-1], g[..., 2:, 2:]
    return (tl + tr + bl + br) - 2.0 * (tc + ml + mr + bc) + 4.0 * mc


def noise_sigma(gray: np.ndarray, robust: bool = True) -> np.ndarray:
    """Estimated noise standard deviation of each image in ``gray`` (..., H, W), in the input's units.

    ``robust=True`` uses the median absolute response (edge-insensitive); ``False`` is Immerkaer's
    original mean absolute response times sqrt(pi / 2).
    """
    response = np.abs(immerkaer_response(gray))
    flat = response.reshape(*response.shape[:-2], -1)
    if robust:
        k = flat.shape[-1] // 2  # upper median via partition: as good here, and several times faster
        return np.partition(flat, k, axis=-1)[..., k] * _MAD_TO_SIGMA / 6.0
    return flat.mean(axis=-1) * math.sqrt(math.pi / 2.0) / 6.0
