"""Probe images that look generated: what an undertrained generator draws instead of clean shapes.

Rewards tuned only on clean and degraded renders can be fooled by the artefacts real models produce
(MIRO-NOTES section 9: Laplacian variance rewarded blocky patches; a fill-ratio test misread blurry
blobs). These seeded probes let tests and reports check every reward on such images:

- ``blocky``: a patch-grid image (4x4-pixel patches at 32x32) of a near-flat background with a few
  saturated palette-coloured patch clusters, like a patch-4 transformer early in training;
- ``blobs``: soft Gaussian colour blobs on a plain background, like an undertrained diffusion model;
- ``noise``: uniform i.i.d. RGB noise, like sampling from a model that learned nothing.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from miro_core.shapes.palette import PALETTE
from miro_core.shapes.render import to_image

PROBES: tuple[str, ...] = ("blocky", "blobs", "noise")


def _background(rng: np.random.Generator) -> np.ndarray:
    grey = rng.uniform(0.75, 0.92) if rng.random() < 0.5 else rng.uniform(0.08, 0.24)
    return np.full(3, grey, dtype=np.float32)


def blocky(rng: np.random.Generator, size: int = 32, patch: int = 4) -> np.ndarray:
    """Patch-grid image: jittered background patches plus one to three clusters of coloured patches."""
    grid = size // patch
    low = np.tile(_background(rng), (grid, grid, 1)) + rng.normal(0, 0.04, (grid, grid, 3)).astype(np.float32)
    for _ in range(rng.integers(1, 4)):
        colour = PALETTE[rng.integers(len(PALETTE))].rgb01
        y, x = rng.integers(0, grid - 1, size=2)
        h, w = rng.integers(1, 4, size=2)
        cluster = low[y : y + h, x : x + w]
        cluster[...] = colour + rng.normal(0, 0.06, cluster.shape).astype(np.float32)
    pixels = np.repeat(np.repeat(low, patch, axis=0), patch, axis=1)
    return np.clip(pixels[:size, :size], 0.0, 1.0)


def blobs(rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One to three Gaussian colour blobs (sigma 2-4 pixels at 32x32) on a plain background."""
    image = np.tile(_background(rng), (size, size, 1))
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    scale = size / 32.0
    for _ in range(rng.integers(1, 4)):
        colour = PALETTE[rng.integers(len(PALETTE))].rgb01
        cy, cx = rng.uniform(6 * scale, size - 6 * scale, size=2)
        sigma = rng.uniform(2.0, 4.0) * scale
        weight = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))[..., None]
        image = image * (1 - weight) + colour * weight
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def noise(rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """Uniform i.i.d. RGB noise."""
    return rng.random((size, size, 3), dtype=np.float32)


def probe_images(kind: str, n: int, seed: int = 0, size: int = 32) -> list[Image.Image]:
    """``n`` seeded probe images of ``kind`` (one of :data:`PROBES`) as 8-bit RGB PIL images."""
    makers = {"blocky": blocky, "blobs": blobs, "noise": noise}
    if kind not in makers:
        raise ValueError(f"unknown probe {kind!r}; known: {', '.join(PROBES)}")
    rng = np.random.default_rng([seed, PROBES.index(kind)])
    return [to_image(makers[kind](rng, size=size)) for _ in range(n)]
