"""``shapes-sharpness``: how crisply edges are drawn, in [0, 1], not fooled by noise.

Definition, per image (resized to ``working_size``, default 32x32, area-averaged when shrinking):

1. **Edge acuity.** On a 3x3-median-filtered copy (the median keeps step edges but removes most
   noise), each pixel's *step* is the largest colour difference to its right or lower neighbour, and its
   *edge height* is the colour range in its 5x5 neighbourhood. At edge pixels (steps that are local
   maxima, with a height of at least 0.08 and at least 30% of the image's tallest edge) the ratio
   step / height is the share of the edge crossed in one pixel: 1 for a perfect step, about 0.75 for an
   anti-aliased edge, about 0.4 for a Gaussian blur of sigma 1 pixel. Acuity is the median ratio. Being a
   ratio, it does not change with contrast; an image with no edges has acuity 0.
2. **Noise penalty.** ``1 / (1 + (sigma / 0.04) ** 2)`` with sigma the robust Immerkaer noise estimate
   of the unfiltered luminance (edge-insensitive, so crisp clean images read as noise-free).

Score = acuity x penalty. Plain Laplacian variance is deliberately not used: it rises with noise and
with blocky patch artefacts (MIRO-NOTES section 9). Blocky patches *do* have crisp edges and score high
here; that is correct for a measure of edge acuity, and the aesthetic and alignment rewards do not
reward them.
"""

from __future__ import annotations

import numpy as np

from miro_core.shapes.image_reward import ImageOnlyReward
from miro_core.shapes.palette import luminance

#: Noise level (intensity units) at which the penalty halves the score.
NOISE_SIGMA0 = 0.04
#: Edges lower than this colour range (Euclidean over RGB in [0, 1]) are not judged.
MIN_EDGE_HEIGHT = 0.08
#: ... nor edges lower than this share of the image's tallest edge (faint texture next to real edges).
RELATIVE_EDGE_HEIGHT = 0.3


def edge_acuity(batch: np.ndarray) -> np.ndarray:
    """Median step / edge-height ratio at the edge pixels of each image in (N, H, W, 3); 0 without edges."""
    from scipy import ndimage

    n = batch.shape[0]
    x = ndimage.median_filter(batch, size=(1, 3, 3, 1), mode="nearest")
    window = (1, 5, 5, 1)
    span = ndimage.maximum_filter(x, window, mode="nearest") - ndimage.minimum_filter(x, window, mode="nearest")
    height = np.sqrt((span**2).sum(axis=-1))
    step = np.zeros(x.shape[:3], dtype=np.float32)
    step[:, :, :-1] = np.sqrt(((x[:, :, 1:] - x[:, :, :-1]) ** 2).sum(axis=-1))
    step[:, :-1, :] = np.maximum(step[:, :-1, :], np.sqrt(((x[:, 1:] - x[:, :-1]) ** 2).sum(axis=-1)))
    tallest = height.reshape(n, -1).max(axis=1)
    min_height = np.maximum(MIN_EDGE_HEIGHT, RELATIVE_EDGE_HEIGHT * tallest)[:, None, None]
    is_peak = step >= ndimage.maximum_filter(step, (1, 3, 3), mode="nearest")
    edges = is_peak & (height >= min_height) & (step > 0.01)
    ratio = np.where(edges, step / np.maximum(height, 1e-6), np.nan).reshape(n, -1)
    has_edges = edges.reshape(n, -1).any(axis=1)
    acuity = np.zeros(n, dtype=np.float64)
    if has_edges.any():
        acuity[has_edges] = np.nanmedian(ratio[has_edges], axis=1)
    return np.clip(acuity, 0.0, 1.0)


def noise_penalty(batch: np.ndarray) -> np.ndarray:
    """``1 / (1 + (sigma / NOISE_SIGMA0)^2)`` from the robust Immerkaer noise estimate of each image."""
    from miro_core.shapes.noise import noise_sigma

    sigma = noise_sigma(luminance(batch))
    return 1.0 / (1.0 + (sigma / NOISE_SIGMA0) ** 2)


def sharpness(batch: np.ndarray) -> np.ndarray:
    """Sharpness in [0, 1] of each float RGB image in (N, H, W, 3)."""
    return edge_acuity(batch) * noise_penalty(batch)


class ShapesSharpness(ImageOnlyReward):
    """Edge acuity times a noise penalty, in [0, 1]; reads only the image."""

    name = "shapes-sharpness"
    version = "1"
    description = "shapes world: edge acuity on a denoised image x Immerkaer noise penalty, in [0, 1]"

    def measure(self, batch: np.ndarray) -> np.ndarray:
        return sharpness(batch)
