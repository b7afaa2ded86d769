"""Turning whatever image a caller has (any PIL mode, uint8 or float array) into float RGB in [0, 1].

Rewards receive images exactly as decoded, in any mode and size, and must never modify them; every
measurement in this package starts from the copy this function returns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image


def as_rgb_float(image: Image.Image | np.ndarray) -> np.ndarray:
    """A new float32 (H, W, 3) array in [0, 1]; alpha is dropped, grey is replicated to three channels."""
    if isinstance(image, Image.Image):
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        return np.asarray(rgb, dtype=np.float32) / 255.0
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W[, C]) image array, got shape {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    array = array[..., :3]
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.float32) / 255.0
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def resize_rgb(image: Image.Image, size: int) -> Image.Image:
    """``image`` as RGB at ``size`` x ``size``: area averaging when shrinking, bilinear when enlarging."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if rgb.size == (size, size):
        return rgb
    shrinking = rgb.width >= size and rgb.height >= size
    return rgb.resize((size, size), Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR)


def batch_rgb(images: Sequence[Image.Image], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack images as float RGB (N, size, size, 3) in [0, 1], plus a mask of those that could be read.

    An image that cannot be converted (zero-sized, unreadable) becomes a black placeholder with
    ``ok=False`` so the caller can return NaN for it and still score the rest of the batch at once.
    """
    batch = np.zeros((len(images), size, size, 3), dtype=np.float32)
    ok = np.zeros(len(images), dtype=bool)
    for i, image in enumerate(images):
        try:
            if image.width == 0 or image.height == 0:
                continue
            batch[i] = as_rgb_float(resize_rgb(image, size))
            ok[i] = True
        except (OSError, ValueError, AttributeError):
            continue
    return batch, ok
