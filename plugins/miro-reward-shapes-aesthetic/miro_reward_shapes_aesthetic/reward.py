"""``shapes-aesthetic``: contrast and colourfulness of the image's coherent regions, in [0, 1].

Definition, per image (resized to ``working_size``, default 32x32, area-averaged when shrinking):

1. A 3x3 median filter removes most noise. Each pixel then gets a *coherence* weight
   ``clip(1 - s / 0.2, 0, 1)``, where ``s`` is the colour standard deviation of its 3x3 neighbourhood:
   flat regions (background, shape interiors) weigh 1; edges and leftover noise weigh less.
2. *Contrast* K of a pixel: its colour distance to the background (median border colour), divided by
   sqrt(3) so that black vs white is 1. *Colourfulness* C: its chroma (length of the opponent-colour
   vector; the palette's saturated colours have about 0.4-0.6).
3. Each is summarised by the 99th percentile over the image of weight x value (the best-shown ~10 pixels
   at 32x32), so a single small shape counts as much as several large ones.
4. Score = 0.5 min(K / 0.6, 1) + 0.5 min(C / 0.6, 1).

Why this shape: measuring on flat, coherent regions is what keeps noise from being rewarded (noise
raises every spread-based contrast or colourfulness statistic, and pure noise is both "contrasty" and
"colourful" pixel by pixel). Noisy images therefore score a little *below* their clean versions and pure
noise scores low. Blur barely matters (shape interiors stay flat); low contrast and washed-out colour
lower the score in proportion to how much contrast and chroma they remove.
"""

from __future__ import annotations

import math

import numpy as np

from miro_core.shapes.image_reward import ImageOnlyReward
from miro_core.shapes.palette import opponent

#: Local colour standard deviation at which a pixel stops counting as part of a coherent region.
COHERENCE_TAU = 0.2
#: Percentile of weight x value that summarises each image (the best-shown few pixels).
PERCENTILE = 0.99
#: Contrast and chroma that count as full marks (the palette on a light or dark grey reaches about this).
FULL_CONTRAST = 0.6
FULL_CHROMA = 0.6


def contrast_colourfulness(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, C): coherent-region contrast to the background and chroma of each image in (N, H, W, 3)."""
    from scipy import ndimage

    n = batch.shape[0]
    x = ndimage.median_filter(batch, size=(1, 3, 3, 1), mode="nearest")
    mean = ndimage.uniform_filter(x, size=(1, 3, 3, 1), mode="nearest")
    variance = ndimage.uniform_filter(x * x, size=(1, 3, 3, 1), mode="nearest") - mean * mean
    spread = np.sqrt(np.clip(variance, 0.0, None).sum(axis=-1))
    weight = np.clip(1.0 - spread / COHERENCE_TAU, 0.0, 1.0)
    border = np.concatenate([x[:, 0], x[:, -1], x[:, 1:-1, 0], x[:, 1:-1, -1]], axis=1)
    background = np.median(border, axis=1)
    contrast = np.sqrt(((x - background[:, None, None, :]) ** 2).sum(axis=-1)) / math.sqrt(3.0)
    o = opponent(x)
    chroma = np.hypot(o[..., 0], o[..., 1])
    k = np.quantile((weight * contrast).reshape(n, -1), PERCENTILE, axis=1)
    c = np.quantile((weight * chroma).reshape(n, -1), PERCENTILE, axis=1)
    return k, c


def aesthetic(batch: np.ndarray) -> np.ndarray:
    """Aesthetic score in [0, 1] of each float RGB image in (N, H, W, 3)."""
    k, c = contrast_colourfulness(batch)
    return 0.5 * np.minimum(k / FULL_CONTRAST, 1.0) + 0.5 * np.minimum(c / FULL_CHROMA, 1.0)


class ShapesAesthetic(ImageOnlyReward):
    """Contrast and colourfulness of coherent regions, in [0, 1]; reads only the image."""

    name = "shapes-aesthetic"
    version = "1"
    description = "shapes world: contrast + colourfulness of flat regions (noise not rewarded), in [0, 1]"

    def measure(self, batch: np.ndarray) -> np.ndarray:
        return aesthetic(batch)
