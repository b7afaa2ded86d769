"""The shapes-world dataset: deterministic image-caption samples, uneven like web data.

Every sample is a pure function of ``(seed, index)`` and the generation options: its random streams are
seeded from that pair alone, so any index can be regenerated without the ones before it (shards can be
written in parallel, and a test can look at sample 12345 directly). A ``degraded_fraction`` of images get
one degradation and a ``mismatched_fraction`` of captions are swapped for the caption of a different
random scene; ``meta`` records the truth (objects, true caption, degradation) so every reward can be
checked against it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from miro_core.shapes.degrade import apply_degradation, sample_degradation
from miro_core.shapes.render import render_array, to_image
from miro_core.shapes.scene import sample_plan, sample_scene


@dataclass
class ShapesSample:
    """One image-caption pair and the ground truth behind it (``meta`` is JSON-serialisable)."""

    key: str
    image: Image.Image
    caption: str
    meta: dict[str, Any] = field(default_factory=dict)


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def make_sample(
    index: int,
    seed: int = 0,
    image_size: int = 32,
    degraded_fraction: float = 0.5,
    mismatched_fraction: float = 0.2,
    max_objects: int = 4,
) -> ShapesSample:
    """Generate sample ``index`` of the world ``seed`` (the same call always gives the same sample)."""
    _check_fraction("degraded_fraction", degraded_fraction)
    _check_fraction("mismatched_fraction", mismatched_fraction)
    rng = random.Random(f"shapes-world:{seed}:{index}")
    degraded = rng.random() < degraded_fraction
    mismatched = rng.random() < mismatched_fraction
    scene = sample_scene(rng, image_size=image_size, max_objects=max_objects)
    pixels = render_array(scene)
    degradation = None
    if degraded:
        degradation = sample_degradation(rng, image_size)
        noise_rng = np.random.default_rng([seed & 0xFFFFFFFF, index, 1])
        pixels = apply_degradation(pixels, degradation, noise_rng)
    caption = scene.caption
    kind = scene.kind
    if mismatched:
        other = random.Random(f"shapes-world:{seed}:{index}:mismatch")
        for _ in range(20):
            plan, _ = sample_plan(other, max_objects)
            if plan.text() != scene.caption:
                caption, kind = plan.text(), plan.kind
                break
    meta: dict[str, Any] = {
        "seed": seed,
        "index": index,
        "image_size": image_size,
        "kind": kind,
        "mismatched": mismatched,
        "true_caption": scene.caption,
        "true_kind": scene.kind,
        "objects": [obj.as_json() for obj in scene.objects],
        "relation": scene.plan.relation,
        "background": scene.background_kind,
        "degradation": degradation.name if degradation else None,
        "degradation_strength": round(degradation.strength, 4) if degradation else None,
        "degradation_param": round(degradation.param, 4) if degradation else None,
    }
    return ShapesSample(key=f"{index:08d}", image=to_image(pixels), caption=caption, meta=meta)


def generate(
    n: int,
    seed: int = 0,
    image_size: int = 32,
    degraded_fraction: float = 0.5,
    mismatched_fraction: float = 0.2,
    max_objects: int = 4,
    start: int = 0,
) -> Iterator[ShapesSample]:
    """Yield samples ``start`` .. ``start + n - 1`` of the world ``seed`` (see :func:`make_sample`).

    ``max_objects`` caps the number of objects (counting captions go up to it; at most 6 fit a 32x32
    image, so larger values act as 6); ``max_objects=1`` leaves only single-object captions.
    """
    if n < 0:
        raise ValueError("n must be non-negative")
    _check_fraction("degraded_fraction", degraded_fraction)
    _check_fraction("mismatched_fraction", mismatched_fraction)
    for index in range(start, start + n):
        yield make_sample(
            index,
            seed=seed,
            image_size=image_size,
            degraded_fraction=degraded_fraction,
            mismatched_fraction=mismatched_fraction,
            max_objects=max_objects,
        )
