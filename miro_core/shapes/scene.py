"""Sampling a scene: what the caption says, which objects exist, and where they stand.

The caption plan is sampled first and the objects are made to satisfy it exactly (the counts, colours and
the relation hold by construction, with a margin), so a clean, non-mismatched sample is a true pair by
definition and the verifier can be tested against it. Objects never overlap and keep a gap, so two
objects of the same colour stay separate blobs; sizes shrink as the object count grows so that up to
four (or six) objects fit a 32x32 image while staying large enough for a generator to learn.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from miro_core.shapes.captions import KINDS, CaptionPlan, NounPhrase, ObjectRef
from miro_core.shapes.geometry import RELATIONS, Box, relations
from miro_core.shapes.palette import COLOUR_NAMES, COLOURS, SHAPES

#: Object side lengths (pixels at 32x32) by number of objects in the scene.
SIZE_RANGES: dict[int, tuple[int, int]] = {1: (10, 16), 2: (9, 14), 3: (8, 12), 4: (8, 11), 5: (7, 9), 6: (7, 8)}
MAX_COUNT = max(SIZE_RANGES)
#: Distance from the image border and between objects (pixels at 32x32).
BORDER_MARGIN = 1.0
OBJECT_GAP = 2.5
#: Relations are generated with this cosine (above the verifier's 0.5) so they survive small jitter.
RELATION_STRENGTH = 0.7
#: Positions snap to a quarter pixel, matching the renderer's 4x supersampling.
SUBPIXEL = 4


@dataclass(frozen=True)
class SceneObject:
    """One drawn object: its shape, palette colour name, exact RGB in [0, 1] and box in pixels."""

    shape: str
    colour: str
    rgb: tuple[float, float, float]
    box: Box

    def as_json(self) -> dict[str, object]:
        cx, cy = self.box.centre
        return {
            "shape": self.shape,
            "colour": self.colour,
            "bbox": self.box.as_list(),
            "centre": [round(cx, 3), round(cy, 3)],
        }


@dataclass(frozen=True)
class Scene:
    """Everything needed to render one image and write its true caption."""

    image_size: int
    plan: CaptionPlan
    objects: tuple[SceneObject, ...]
    background: tuple[float, float, float]
    light: tuple[float, float]
    background_kind: str

    @property
    def caption(self) -> str:
        return self.plan.text()

    @property
    def kind(self) -> str:
        return self.plan.kind


def available_kinds(max_objects: int) -> tuple[str, ...]:
    """Kinds a scene with at most ``max_objects`` objects can show."""
    if max_objects < 1:
        raise ValueError("max_objects must be at least 1")
    if max_objects == 1:
        return ("single_object", "colours")
    return KINDS


def sample_plan(
    rng: random.Random, max_objects: int = 4, kind: str | None = None
) -> tuple[CaptionPlan, list[tuple[str, str]]]:
    """Sample a caption plan and the (shape, colour) of every object the scene must contain.

    Colours the caption leaves unnamed are still drawn (every object has a colour) but chosen freely.
    """
    kinds = available_kinds(max_objects)
    kind = kind or rng.choice(kinds)
    if kind not in kinds:
        raise ValueError(f"kind {kind!r} needs more objects than max_objects={max_objects} or is unknown")
    shape = rng.choice(SHAPES)
    colour = rng.choice(COLOUR_NAMES)
    if kind in ("single_object", "colours"):
        ref = ObjectRef(shape, colour if kind == "colours" else None)
        return CaptionPlan((NounPhrase(1, ref),)), [(shape, colour)]
    if kind == "counting":
        n = rng.randint(2, min(max_objects, MAX_COUNT))
        if rng.random() < 0.5:
            return CaptionPlan((NounPhrase(n, ObjectRef(shape, colour)),)), [(shape, colour)] * n
        objects = [(shape, rng.choice(COLOUR_NAMES)) for _ in range(n)]
        return CaptionPlan((NounPhrase(n, ObjectRef(shape)),)), objects
    if kind == "two_objects":
        a, b = rng.sample(SHAPES, 2)
        objects = [(a, colour), (b, rng.choice(COLOUR_NAMES))]
        return CaptionPlan((NounPhrase(1, ObjectRef(a)), NounPhrase(1, ObjectRef(b)))), objects
    if kind == "colour_attribution":
        ca, cb = rng.sample(COLOUR_NAMES, 2)
        objects = [(shape, ca), (rng.choice(SHAPES), cb)]
        refs = [ObjectRef(s, c) for s, c in objects]
        return CaptionPlan((NounPhrase(1, refs[0]), NounPhrase(1, refs[1]))), objects
    if kind == "position":
        a, b = shape, rng.choice(SHAPES)
        ca, cb = rng.sample(COLOUR_NAMES, 2)
        named = a == b or rng.random() < 0.5  # same shapes need colours to tell them apart
        refs = [ObjectRef(a, ca if named else None), ObjectRef(b, cb if named else None)]
        plan = CaptionPlan((NounPhrase(1, refs[0]), NounPhrase(1, refs[1])), relation=rng.choice(RELATIONS))
        return plan, [(a, ca), (b, cb)]
    raise ValueError(f"unknown kind {kind!r}")


def _snap(value: float) -> float:
    return round(value * SUBPIXEL) / SUBPIXEL


def _place(
    rng: random.Random, sizes: list[float], image_size: int, relation: str | None, scale: float
) -> list[Box] | None:
    """Rejection-sample non-overlapping boxes (and the relation, if any); None when it does not fit."""
    margin = BORDER_MARGIN * scale
    gap = OBJECT_GAP * scale
    for _ in range(40):
        boxes: list[Box] = []
        for size in sizes:
            high = image_size - margin - size
            if high < margin:
                return None
            for _ in range(30):
                x0 = _snap(rng.uniform(margin, high))
                y0 = _snap(rng.uniform(margin, high))
                box = Box(x0, y0, x0 + size, y0 + size)
                if not any(box.expanded(gap).intersects(other) for other in boxes):
                    boxes.append(box)
                    break
            else:
                break
        if len(boxes) == len(sizes) and (
            relation is None or relations(boxes[0], boxes[1])[relation] >= RELATION_STRENGTH
        ):
            return boxes
    return None


def sample_scene(rng: random.Random, image_size: int = 32, max_objects: int = 4, kind: str | None = None) -> Scene:
    """Sample a full scene: caption plan, objects with exact colours and non-overlapping boxes, background."""
    if image_size < 16:
        raise ValueError("image_size must be at least 16 pixels")
    plan, specs = sample_plan(rng, max_objects, kind)
    scale = image_size / 32.0
    low, high = SIZE_RANGES[min(len(specs), MAX_COUNT)]
    sizes = [rng.randint(low, high) for _ in specs]
    while True:
        boxes = _place(rng, [s * scale for s in sizes], image_size, plan.relation, scale)
        if boxes is not None:
            break
        if max(sizes) <= 5:
            raise RuntimeError(f"cannot place {len(specs)} objects in a {image_size}px image")
        sizes = [max(5, s - 1) for s in sizes]
    objects = []
    for (shape, colour), box in zip(specs, boxes, strict=True):
        base = COLOURS[colour].rgb01
        rgb = tuple(float(min(1.0, max(0.0, v + rng.uniform(-0.04, 0.04)))) for v in base)
        objects.append(SceneObject(shape, colour, rgb, box))  # type: ignore[arg-type]
    light_bg = rng.random() < 0.5
    grey = rng.uniform(0.74, 0.93) if light_bg else rng.uniform(0.06, 0.24)
    background = tuple(min(1.0, max(0.0, grey + rng.uniform(-0.015, 0.015))) for _ in range(3))
    light = (rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05))
    return Scene(
        image_size=image_size,
        plan=plan,
        objects=tuple(objects),
        background=background,  # type: ignore[arg-type]
        light=light,
        background_kind="light" if light_bg else "dark",
    )
