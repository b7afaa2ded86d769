"""Shape geometry and spatial relations, shared by the renderer, the scene sampler and the detector.

One definition of "what a circle/square/triangle occupies inside its box" is used both to draw shapes and
to build the ideal masks the detector compares blobs against, so the two can never drift apart. The
relation rule is the GenEval one (centre offset, shrunk by a tenth of the objects' sizes, must point
within about 60 degrees of the named direction), so the compositional benchmark built on this world
judges positions the way that benchmark does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
#: Fraction of the two objects' summed sizes removed from the centre offset before judging a relation.
POSITION_SLACK = 0.1
#: A relation holds when the (shrunk) offset's component along its axis exceeds this share of its length.
POSITION_COSINE = 0.5


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixel coordinates; ``x1``/``y1`` are exclusive edges (floats allowed)."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0

    def expanded(self, margin: float) -> Box:
        return Box(self.x0 - margin, self.y0 - margin, self.x1 + margin, self.y1 + margin)

    def intersects(self, other: Box) -> bool:
        return self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1

    def as_list(self) -> list[float]:
        return [round(self.x0, 3), round(self.y0, 3), round(self.x1, 3), round(self.y1, 3)]


def shape_vertices(shape: str, box: Box) -> list[tuple[float, float]]:
    """Polygon vertices of a polygonal shape inside ``box`` (the triangle points up, base at the bottom)."""
    if shape == "square":
        return [(box.x0, box.y0), (box.x1, box.y0), (box.x1, box.y1), (box.x0, box.y1)]
    if shape == "triangle":
        return [((box.x0 + box.x1) / 2.0, box.y0), (box.x1, box.y1), (box.x0, box.y1)]
    raise ValueError(f"{shape!r} is not a polygon")


def inside(shape: str, x: np.ndarray, y: np.ndarray, width: float, height: float) -> np.ndarray:
    """Whether points (x, y), relative to a ``width`` x ``height`` box's top-left corner, lie in ``shape``."""
    u = x / width
    v = y / height
    if shape == "square":
        return (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    if shape == "circle":
        return (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
    if shape == "triangle":
        # apex (0.5, 0), base from (0, 1) to (1, 1): |u - 0.5| <= v / 2
        return (v >= 0) & (v <= 1) & (np.abs(u - 0.5) <= v / 2.0)
    raise ValueError(f"unknown shape {shape!r}")


def shape_coverage(shape: str, box: Box, height: int, width: int, supersample: int = 4) -> np.ndarray:
    """Fraction of each pixel of a ``height`` x ``width`` grid that ``shape`` in ``box`` covers.

    Computed on a ``supersample``-times finer grid, which mimics how the renderer anti-aliases, so a
    rendered shape's coverage and this prediction agree to within the supersampling error.
    """
    s = supersample
    ys = (np.arange(height * s, dtype=np.float32) + 0.5) / s - box.y0
    xs = (np.arange(width * s, dtype=np.float32) + 0.5) / s - box.x0
    fine = inside(shape, xs[None, :], ys[:, None], box.width, box.height)
    return fine.reshape(height, s, width, s).mean(axis=(1, 3), dtype=np.float32)


def relations(box_a: Box, box_b: Box) -> dict[str, float]:
    """How strongly each relation "A <relation> B" holds, as the cosine along its axis (GenEval's rule).

    The centre offset is first shrunk by :data:`POSITION_SLACK` times the objects' summed sizes, so two
    objects side by side but barely apart are not called "left of" on a fraction of a pixel. A relation
    holds when its value exceeds :data:`POSITION_COSINE`. Image y grows downwards, so "above" means a
    smaller y.
    """
    (ax, ay), (bx, by) = box_a.centre, box_b.centre
    dx, dy = ax - bx, ay - by
    norm = math.hypot(dx, dy)
    if norm < 1e-9:
        return dict.fromkeys(RELATIONS, 0.0)
    rx = max(abs(dx) - POSITION_SLACK * (box_a.width + box_b.width), 0.0) * math.copysign(1.0, dx)
    ry = max(abs(dy) - POSITION_SLACK * (box_a.height + box_b.height), 0.0) * math.copysign(1.0, dy)
    cx, cy = rx / norm, ry / norm
    return {"left of": -cx, "right of": cx, "above": -cy, "below": cy}


def relation_holds(box_a: Box, box_b: Box, relation: str) -> bool:
    """Whether "A <relation> B" holds for boxes A and B under :func:`relations`."""
    if relation not in RELATIONS:
        raise ValueError(f"unknown relation {relation!r}; known: {', '.join(RELATIONS)}")
    return relations(box_a, box_b)[relation] > POSITION_COSINE
