"""The colours and shapes of the shapes world, and the colour space the detector classifies in.

Colours are told apart by *hue* in an opponent colour space (luminance removed), not by RGB distance:
the world's degradations (low contrast, washed-out colour, additive noise) move a colour towards grey but
keep its hue, so a hue classifier keeps working where an RGB nearest-neighbour would not. The six palette
colours are therefore chosen about 60 degrees apart in that hue circle, and backgrounds are near-neutral
grey so that "foreground" simply means "has chroma relative to the background".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Shape names, in a fixed order (used for vocabulary, sampling and classification).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")


@dataclass(frozen=True)
class Colour:
    """One palette colour: its caption word and its nominal sRGB value (0-255)."""

    name: str
    rgb: tuple[int, int, int]

    @property
    def rgb01(self) -> np.ndarray:
        return np.asarray(self.rgb, dtype=np.float32) / 255.0

    @property
    def hue(self) -> float:
        """Hue angle in degrees in the opponent space of :func:`opponent`."""
        o1, o2 = opponent(self.rgb01[None, :])[0]
        return math.degrees(math.atan2(float(o2), float(o1))) % 360.0


#: Hues (opponent space): red 26, yellow 83, green 150, cyan 216, blue 264, purple 323 degrees.
PALETTE: tuple[Colour, ...] = (
    Colour("red", (220, 40, 55)),
    Colour("yellow", (235, 210, 35)),
    Colour("green", (52, 172, 52)),
    Colour("cyan", (35, 190, 210)),
    Colour("blue", (55, 75, 230)),
    Colour("purple", (180, 50, 200)),
)

COLOUR_NAMES: tuple[str, ...] = tuple(c.name for c in PALETTE)
COLOURS: dict[str, Colour] = {c.name: c for c in PALETTE}

_SQRT2 = math.sqrt(2.0)
_SQRT6 = math.sqrt(6.0)


def opponent(rgb: np.ndarray) -> np.ndarray:
    """Map RGB in [0, 1] (last axis) to the two chromatic opponent axes (red-green, yellow-blue).

    Grey maps to (0, 0) whatever its lightness, so chroma = the vector's length and hue = its angle.
    """
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.stack(((r - g) / _SQRT2, (r + g - 2.0 * b) / _SQRT6), axis=-1)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of RGB in [0, 1] (last axis)."""
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


#: Palette hues as unit vectors, shape (len(PALETTE), 2), for a dot-product nearest-hue lookup.
_HUE_VECTORS = np.stack(
    [np.array([math.cos(math.radians(c.hue)), math.sin(math.radians(c.hue))]) for c in PALETTE]
).astype(np.float32)


def nearest_hue(chroma_vectors: np.ndarray) -> np.ndarray:
    """Index into :data:`PALETTE` of the nearest hue for each chroma vector (last axis of length 2)."""
    return np.argmax(chroma_vectors @ _HUE_VECTORS.T, axis=-1)
