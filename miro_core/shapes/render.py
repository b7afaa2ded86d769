"""Rendering a scene to pixels: anti-aliased shapes on a gently lit plain background.

Shapes are drawn with PIL at 4x and box-downsampled, which gives true area-coverage anti-aliasing (edges
look like a camera's, not like nearest-neighbour stairs) at a cost of a few tens of microseconds. A small
linear "lighting" gradient is added over the whole image so backgrounds are not perfectly flat, as in
photographs, while staying neutral enough that any chroma marks an object.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from miro_core.shapes.geometry import Box, shape_vertices
from miro_core.shapes.palette import COLOURS
from miro_core.shapes.scene import Scene, SceneObject

SUPERSAMPLE = 4


def _to_uint8(rgb: tuple[float, float, float]) -> tuple[int, int, int]:
    return tuple(int(round(v * 255.0)) for v in rgb)  # type: ignore[return-value]


def draw_objects(
    objects: Sequence[SceneObject],
    image_size: int,
    background: tuple[float, float, float],
    light: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Draw ``objects`` on a plain ``background`` with a linear ``light`` gradient; float32 (H, W, 3) in [0, 1].

    Used for sampled scenes and for hand-made scenes in tests and benchmarks alike.
    """
    s = SUPERSAMPLE
    canvas = Image.new("RGB", (image_size * s, image_size * s), _to_uint8(background))
    draw = ImageDraw.Draw(canvas)
    for obj in objects:
        fill = _to_uint8(obj.rgb)
        b = obj.box
        # PIL boxes include their last pixel, so the far edge is one fine pixel short of x1 * s.
        if obj.shape == "circle":
            draw.ellipse([b.x0 * s, b.y0 * s, b.x1 * s - 1, b.y1 * s - 1], fill=fill)
        elif obj.shape == "square":
            draw.rectangle([b.x0 * s, b.y0 * s, b.x1 * s - 1, b.y1 * s - 1], fill=fill)
        else:
            points = [(x * s - 0.5, y * s - 0.5) for x, y in shape_vertices(obj.shape, b)]
            draw.polygon(points, fill=fill)
    small = np.asarray(canvas.reduce(s), dtype=np.float32) / 255.0
    gx, gy = light
    if gx or gy:
        ramp = np.linspace(-0.5, 0.5, image_size, dtype=np.float32)
        small = small + (gx * ramp[None, :, None] + gy * ramp[:, None, None])
    return np.clip(small, 0.0, 1.0)


def render_array(scene: Scene) -> np.ndarray:
    """Render ``scene`` to a float32 array (H, W, 3) in [0, 1], before any degradation."""
    return draw_objects(scene.objects, scene.image_size, scene.background, scene.light)


def place(shape: str, colour: str, x0: float, y0: float, size: float) -> SceneObject:
    """A hand-placed object with its palette colour's exact RGB (for tests and benchmark fixtures)."""
    rgb = tuple(float(v) for v in COLOURS[colour].rgb01)
    return SceneObject(shape, colour, rgb, Box(x0, y0, x0 + size, y0 + size))  # type: ignore[arg-type]


def to_image(array: np.ndarray) -> Image.Image:
    """Quantise a float array in [0, 1] to an 8-bit RGB PIL image."""
    return Image.fromarray(np.clip(array * 255.0 + 0.5, 0, 255).astype(np.uint8))
