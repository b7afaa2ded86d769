"""``shapes-alignment``: does the image show what the caption says? Fraction of claims that hold, in [0, 1].

The caption is parsed into claims (objects with colour and shape, exact counts, relative positions) and
the image's shapes are detected by colour segmentation and shape fitting
(:mod:`miro_core.shapes.verify`). The score is the fraction of claims that hold; NaN when the caption is
outside the shapes-world grammar (the annotation engine records that as a row-level error).

The detector classifies colour by hue and fits blurred as well as sharp shape hypotheses, so this reward
measures *what* is drawn and stays nearly unchanged under blur, noise, low contrast and washed-out
colour; image quality is left to ``shapes-sharpness`` and ``shapes-aesthetic``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from miro_core.rewards import RewardModel

if TYPE_CHECKING:
    from PIL.Image import Image


class ShapesAlignment(RewardModel):
    """Fraction of the caption's claims that the detected shapes satisfy, in [0, 1]."""

    name = "shapes-alignment"
    version = "1"
    description = "shapes world: fraction of caption claims (objects, counts, positions) that hold, in [0, 1]"
    inputs: ClassVar[frozenset[str]] = frozenset({"image", "caption"})
    peak_memory_mib: ClassVar[float | None] = 16.0

    def score(self, images: Sequence[Image], captions: Sequence[str]) -> list[float]:
        from miro_core.shapes.captions import CaptionParseError
        from miro_core.shapes.pixels import as_rgb_float
        from miro_core.shapes.verify import verify

        if len(images) != len(captions):
            raise ValueError(f"got {len(images)} images but {len(captions)} captions")
        scores: list[float] = []
        for image, caption in zip(images, captions, strict=True):
            try:
                pixels = as_rgb_float(image)  # a copy; the caller's image is never touched
            except (OSError, ValueError):  # an image mode PIL cannot turn into RGB
                scores.append(float("nan"))
                continue
            if pixels.size == 0:  # a zero-sized image shows nothing that could be judged
                scores.append(float("nan"))
                continue
            try:
                scores.append(float(verify(pixels, caption).score))
            except CaptionParseError:
                scores.append(float("nan"))
        return scores
