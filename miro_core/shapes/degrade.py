"""Image degradations that make the world uneven, like web data: blur, noise, low contrast, washed-out colour.

Each degradation attacks one image property, so each reward can be checked against the one it should
see (sharpness against blur and noise, aesthetic against low contrast and washed-out colour) and checked
*not* to respond to the others. Strength is drawn uniformly in [0, 1] and mapped linearly to a
parameter range chosen so the weakest setting is visible and the strongest still leaves the scene
recognisable; ranges are in pixels at 32x32 and scale with the image size.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from miro_core.shapes.palette import luminance


@dataclass(frozen=True)
class Degradation:
    """One applied degradation: its name, strength in [0, 1] and the resulting parameter value."""

    name: str
    strength: float
    param: float


def _blur(x: np.ndarray, param: float, rng: np.random.Generator) -> np.ndarray:
    return ndimage.gaussian_filter(x, sigma=(param, param, 0.0), mode="nearest")


def _noise(x: np.ndarray, param: float, rng: np.random.Generator) -> np.ndarray:
    return x + rng.normal(0.0, param, size=x.shape).astype(np.float32)


def _low_contrast(x: np.ndarray, param: float, rng: np.random.Generator) -> np.ndarray:
    grey = float(luminance(x).mean())
    return grey + param * (x - grey)


def _washed_out(x: np.ndarray, param: float, rng: np.random.Generator) -> np.ndarray:
    lum = luminance(x)[..., None]
    desaturated = lum + param * (x - lum)
    haze = 0.2 * (1.0 - param)  # fading lifts the dark end as the colour drains
    return desaturated + haze * (1.0 - desaturated)


#: name -> (function, parameter at strength 0, parameter at strength 1, scales with image size)
DEGRADATIONS: dict[str, tuple[Callable[[np.ndarray, float, np.random.Generator], np.ndarray], float, float, bool]] = {
    "blur": (_blur, 0.6, 1.6, True),  # Gaussian sigma in pixels
    "noise": (_noise, 0.03, 0.14, False),  # Gaussian sigma in [0, 1] intensity units
    "low_contrast": (_low_contrast, 0.6, 0.2, False),  # contrast kept around the mean grey
    "washed_out": (_washed_out, 0.5, 0.15, False),  # chroma kept, plus a haze that grows as it drops
}
NAMES: tuple[str, ...] = tuple(DEGRADATIONS)


def sample_degradation(rng: random.Random, image_size: int = 32) -> Degradation:
    """Pick a degradation uniformly and a strength uniformly in [0, 1]."""
    name = rng.choice(NAMES)
    strength = rng.random()
    return make_degradation(name, strength, image_size)


def make_degradation(name: str, strength: float, image_size: int = 32) -> Degradation:
    """The degradation ``name`` at ``strength`` in [0, 1], with its parameter scaled to ``image_size``."""
    if name not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {name!r}; known: {', '.join(NAMES)}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError("strength must be in [0, 1]")
    _, low, high, scales = DEGRADATIONS[name]
    param = low + strength * (high - low)
    if scales:
        param *= image_size / 32.0
    return Degradation(name, float(strength), float(param))


def apply_degradation(x: np.ndarray, degradation: Degradation, rng: np.random.Generator) -> np.ndarray:
    """Apply ``degradation`` to a float image (H, W, 3) in [0, 1]; returns a new clipped array."""
    function = DEGRADATIONS[degradation.name][0]
    return np.clip(function(x.astype(np.float32), degradation.param, rng), 0.0, 1.0).astype(np.float32)
