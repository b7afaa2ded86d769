"""Turning whatever image a caller has (any PIL mode and size, uint8 or float array) into float RGB in [0, 1].

Rewards receive images exactly as decoded, in any mode and size, and must never modify them; every
measurement in this package starts from the copy these functions return. Two rules:

- **modes**: 16-bit, 32-bit and float images, CMYK, palettes and transparency go through the framework's
  one conversion, :func:`miro_core.image_modes.to_rgb8` (high bit depth *rescaled*, transparency composited
  on white), so a 16-bit PNG is scored as the picture it shows, not as a white or black square;
- **size**: a large image is shrunk *before* any full-resolution work. An integer ``reduce`` (box
  averaging inside the decoded image, in its own mode) first brings it near the working size, so a legal
  9000x9000 image costs a fraction of a second instead of minutes and gigabytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

#: ``reduce`` is only used when the shorter side is at least this many times the target: images of
#: ordinary size take exactly the path they always took (one area-averaging resize), so their scores stay.
REDUCE_FROM = 8


def pre_shrink(image: Image.Image, target_side: int) -> Image.Image:
    """``image`` box-reduced by an integer factor when it is far larger than ``target_side`` (else itself)."""
    factor = min(image.size) // (2 * target_side)
    if min(image.size) < REDUCE_FROM * target_side or factor < 2:
        return image
    try:
        return image.reduce(factor)
    except (ValueError, NotImplementedError):  # modes reduce() does not support (P, 1, I;16 in some Pillows)
        return image


def rgb8(image: Image.Image) -> Image.Image:
    """8-bit RGB through the framework's one conversion (rescaled high bit depth, transparency on white)."""
    from miro_core.image_modes import to_rgb8

    return image if image.mode == "RGB" and "transparency" not in image.info else to_rgb8(image)


def as_rgb_float(image: Image.Image | np.ndarray) -> np.ndarray:
    """A new float32 (H, W, 3) array in [0, 1]; grey is replicated to three channels.

    PIL images go through :func:`rgb8`; for arrays, alpha is dropped and integers are read as 8-bit.
    """
    if isinstance(image, Image.Image):
        return np.asarray(rgb8(image), dtype=np.float32) / 255.0
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
    rgb = rgb8(pre_shrink(image, size))
    if rgb.size == (size, size):
        return rgb
    shrinking = rgb.width >= size and rgb.height >= size
    return rgb.resize((size, size), Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR)


def fit_within(image: Image.Image, max_side: int) -> Image.Image:
    """RGB ``image`` with its longer side at most ``max_side`` (area averaging; aspect kept; small ones as they are)."""
    if max(image.size) <= max_side:
        return rgb8(image)
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    rgb = rgb8(pre_shrink(image, min(size)))
    return rgb.resize(size, Image.Resampling.BOX)


def image_array(image: Image.Image, size: int) -> np.ndarray | None:
    """One image as float RGB (size, size, 3) in [0, 1], or None when it cannot be read (zero-sized, bad mode)."""
    try:
        if image.width == 0 or image.height == 0:
            return None
        return as_rgb_float(resize_rgb(image, size))
    except (OSError, ValueError, AttributeError):
        return None


def batch_rgb(images: Sequence[Image.Image], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack images as float RGB (N, size, size, 3) in [0, 1], plus a mask of those that could be read.

    An image that cannot be converted (zero-sized, unreadable) becomes a black placeholder with
    ``ok=False`` so the caller can return NaN for it and still score the rest of the batch at once.
    """
    batch = np.zeros((len(images), size, size, 3), dtype=np.float32)
    ok = np.zeros(len(images), dtype=bool)
    for i, image in enumerate(images):
        array = image_array(image, size)
        if array is not None:
            batch[i] = array
            ok[i] = True
    return batch, ok
