"""Finding the coloured shapes in an image: chroma segmentation, hue classes, blobs, shape fit.

Steps, each chosen to survive the world's degradations rather than only clean renders:

1. If the image is noisy (robust Immerkaer estimate), a 3x3 median filter removes most of the noise while
   keeping edges; clean images are left untouched so small shapes keep their corners.
2. The background colour is the median of the border pixels; a pixel's *chroma* is its opponent-space
   colour minus the background's. Low contrast and washed-out colour shrink chroma but keep its hue.
3. Pixels with chroma above a threshold (absolute floor, four times the residual chroma noise, and 15% of
   the image's strongest chroma, so faint tints beside real objects do not count) get the nearest palette
   hue; each hue is split into connected components, and a component is split again where it holds
   several half-peak cores (two same-coloured shapes joined by blur tails). Tiny blobs are ignored.
4. Each blob becomes a coverage map (chroma / peak chroma), which is contrast-free, and is compared with
   a circle, a square and a triangle of the blob's own area and centroid (sub-pixel), by soft IoU. When no
   sharp shape fits well the hypotheses are also tried blurred, so a blurred square is still a square:
   the alignment reward judges *what* is drawn and leaves *how sharply* to the sharpness reward. A blob
   that fits no shape, or is clearly elongated, is "unknown" — blocky patches and smears are not forced
   into a class the way a fill-ratio test would force them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from miro_core.shapes.geometry import Box, shape_coverage
from miro_core.shapes.noise import noise_sigma
from miro_core.shapes.palette import PALETTE, SHAPES, luminance, nearest_hue, opponent
from miro_core.shapes.pixels import as_rgb_float

UNKNOWN = "unknown"
#: Above this robust noise estimate (intensity units) the image is median-filtered before segmenting.
DENOISE_ABOVE = 0.012
#: Minimum chroma (opponent units; a palette colour on grey has about 0.4-0.6) to call a pixel coloured.
MIN_CHROMA = 0.035
#: ... and at least this share of the image's strongest chroma, so faint tints beside real objects are not.
RELATIVE_CHROMA = 0.15
#: Blobs smaller than this fraction of the image are ignored (a 32x32 image: 18 pixels, more than one
#: 4x4 patch of a patch-grid artefact; the world's smallest shape, a 7-pixel triangle, covers about 24).
MIN_AREA_FRACTION = 0.018
#: A blob is classified as a shape only if its soft IoU with that shape reaches this.
MIN_FIT = 0.75
#: Sharp fits at least this good are accepted without trying blurred hypotheses.
GOOD_FIT = 0.9
#: Blur levels tried (Gaussian sigma in pixels at a 32-pixel image; scaled with the image size).
BLUR_STEPS: tuple[float, ...] = (0.5, 0.9, 1.3, 1.8)
#: Shapes in this world are as wide as tall; blobs beyond this aspect ratio are "unknown".
MAX_ASPECT = 1.6
#: Pixels of context kept around each blob so that fitted shapes and their blur fit inside the window.
PAD = 3


@dataclass(frozen=True)
class Detection:
    """One detected object: shape (or "unknown"), palette colour, box, half-coverage area and fit."""

    shape: str
    colour: str
    box: Box
    area: int
    fit: float
    chroma: float

    @property
    def centre(self) -> tuple[float, float]:
        return self.box.centre

    def as_json(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "colour": self.colour,
            "bbox": self.box.as_list(),
            "area": self.area,
            "fit": round(self.fit, 4),
            "chroma": round(self.chroma, 4),
        }


def fit_box(shape: str, area: float, cx: float, cy: float) -> Box:
    """The box of ``shape`` with the given area whose centroid is (cx, cy) (all shapes are as wide as tall)."""
    if shape in ("square", "circle"):
        side = math.sqrt(area) if shape == "square" else math.sqrt(4.0 * area / math.pi)
        return Box(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    if shape == "triangle":  # base = height = side; the centroid is two thirds of the way down
        side = math.sqrt(2.0 * area)
        return Box(cx - side / 2, cy - 2 * side / 3, cx + side / 2, cy + side / 3)
    raise ValueError(f"unknown shape {shape!r}")


def _quantile(values: np.ndarray, q: float) -> float:
    """The ``q`` quantile (lower value) of a 1-D array; ``np.partition`` is much cheaper than np.percentile."""
    k = min(int(q * (values.size - 1)), values.size - 1)
    return float(np.partition(values, k)[k])


def _soft_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.minimum(a, b).sum() / max(float(np.maximum(a, b).sum()), 1e-9))


def classify_coverage(alpha: np.ndarray, blur_scale: float = 1.0) -> tuple[str, float, Box]:
    """Best-fitting shape for a coverage map (values in [0, 1]), its soft IoU and its fitted box.

    Each hypothesis gets the blob's own area and centroid, so a shape's exact sub-pixel position does not
    matter. ``blur_scale`` scales :data:`BLUR_STEPS` (image size / 32).
    """
    height, width = alpha.shape
    area = float(alpha.sum())
    if area <= 0:
        return UNKNOWN, 0.0, Box(0.0, 0.0, float(width), float(height))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    cx, cy = float((alpha * xs).sum() / area), float((alpha * ys).sum() / area)
    hypotheses = []
    for shape in SHAPES:
        box = fit_box(shape, area, cx, cy)
        hypotheses.append((shape, box, shape_coverage(shape, box, height, width)))
    fits = [(_soft_iou(alpha, cover), shape, box) for shape, box, cover in hypotheses]
    best_fit, best_shape, best_box = max(fits, key=lambda f: f[0])
    for sigma in BLUR_STEPS:  # from light to heavy blur, stopping at the first level that fits well
        if best_fit >= GOOD_FIT:
            break
        for shape, box, cover in hypotheses:
            fit = _soft_iou(alpha, ndimage.gaussian_filter(cover, sigma * blur_scale, mode="constant"))
            if fit > best_fit:
                best_fit, best_shape, best_box = fit, shape, box
    half = alpha >= 0.5
    rows, cols = np.flatnonzero(half.any(axis=1)), np.flatnonzero(half.any(axis=0))
    if not rows.size:
        return UNKNOWN, best_fit, Box(0.0, 0.0, float(width), float(height))
    aspect = (cols[-1] - cols[0] + 1) / (rows[-1] - rows[0] + 1)
    if best_fit < MIN_FIT or not (1.0 / MAX_ASPECT <= aspect <= MAX_ASPECT):
        return UNKNOWN, best_fit, Box(float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
    return best_shape, best_fit, best_box


def _background(rgb: np.ndarray) -> np.ndarray:
    border = np.concatenate([rgb[0], rgb[-1], rgb[1:-1, 0], rgb[1:-1, -1]], axis=0)
    return np.median(border, axis=0)


def _blobs(component: np.ndarray, alpha: np.ndarray, min_area: int) -> list[np.ndarray]:
    """Coverage maps of the separate objects in one component (split at its half-coverage cores)."""
    cores, count = ndimage.label(alpha >= 0.5)
    if count <= 1:
        return [alpha] if count == 1 and np.count_nonzero(cores) >= min_area else []
    # give every pixel of the component to its nearest core, so blur tails are shared out, not duplicated
    _, (iy, ix) = ndimage.distance_transform_edt(cores == 0, return_indices=True)
    owner = cores[iy, ix]
    sizes = np.bincount(cores.ravel(), minlength=count + 1)
    return [np.where(component & (owner == j), alpha, 0.0) for j in range(1, count + 1) if sizes[j] >= min_area]


def detect_array(rgb: np.ndarray) -> list[Detection]:
    """Detect shapes in a float RGB array (H, W, 3) in [0, 1]; see the module docstring."""
    height, width = rgb.shape[:2]
    if height < 4 or width < 4:
        return []
    if float(noise_sigma(luminance(rgb))) > DENOISE_ABOVE:
        rgb = ndimage.median_filter(rgb, size=(3, 3, 1), mode="nearest")
    chroma = opponent(rgb) - opponent(_background(rgb))
    magnitude = np.hypot(chroma[..., 0], chroma[..., 1])
    residual = float(np.mean(noise_sigma(np.moveaxis(chroma, -1, 0))))
    strongest = _quantile(magnitude.ravel(), 0.99)
    coloured = magnitude > max(MIN_CHROMA, 4.0 * residual, RELATIVE_CHROMA * strongest)
    if not coloured.any():
        return []
    hue = nearest_hue(chroma)
    min_area = max(4, int(round(MIN_AREA_FRACTION * height * width)))
    blur_scale = min(height, width) / 32.0
    detections: list[Detection] = []
    for k in np.unique(hue[coloured]):
        labels, _ = ndimage.label(coloured & (hue == k))
        for index, region in enumerate(ndimage.find_objects(labels), start=1):
            if region is None:
                continue
            y0, x0 = max(region[0].start - PAD, 0), max(region[1].start - PAD, 0)
            window = (slice(y0, min(region[0].stop + PAD, height)), slice(x0, min(region[1].stop + PAD, width)))
            component = labels[window] == index
            if np.count_nonzero(component) < min_area:
                continue
            strength = magnitude[window]
            peak = _quantile(strength[component], 0.9)
            alpha = np.where(component, np.clip(strength / peak, 0.0, 1.0), 0.0).astype(np.float32)
            for blob in _blobs(component, alpha, min_area):
                shape, fit, box = classify_coverage(blob, blur_scale)
                box = Box(box.x0 + x0, box.y0 + y0, box.x1 + x0, box.y1 + y0)
                area = int(np.count_nonzero(blob >= 0.5))
                detections.append(Detection(shape, PALETTE[int(k)].name, box, area, fit, peak))
    detections.sort(key=lambda d: (d.box.y0, d.box.x0))
    return detections


def detect_shapes(image: Image.Image | np.ndarray) -> list[Detection]:
    """Detect the coloured shapes in ``image`` (any PIL mode or array; the input is not modified)."""
    return detect_array(as_rgb_float(image))
