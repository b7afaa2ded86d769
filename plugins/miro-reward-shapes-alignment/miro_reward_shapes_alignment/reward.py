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
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from miro_core.component import ComponentOptions
from miro_core.rewards import RewardModel, RewardOptions

if TYPE_CHECKING:
    from PIL.Image import Image


class AlignmentOptions(RewardOptions):
    #: Images whose longer side exceeds this are shrunk to it (area averaging) before shapes are detected,
    #: so a huge image costs about what a normal one does. Shapes-world images (32-128 px) are untouched.
    max_side: int = Field(256, ge=16, le=4096)


class ShapesAlignment(RewardModel):
    """Fraction of the caption's claims that the detected shapes satisfy, in [0, 1].

    ``prepare`` (run in the annotation workers) finds the shapes in the image; ``score_prepared`` checks the
    caption's claims against them. ``score`` is the two in a row.
    """

    name = "shapes-alignment"
    version = "1"
    description = "shapes world: fraction of caption claims (objects, counts, positions) that hold, in [0, 1]"
    Options: ClassVar[type[ComponentOptions]] = AlignmentOptions
    inputs: ClassVar[frozenset[str]] = frozenset({"image", "caption"})
    peak_memory_mib: ClassVar[float | None] = 16.0

    def prepare(self, image: Image, caption: str) -> tuple[str, Any] | None:
        """(caption, detected shapes), or None when the image cannot be read (scored NaN)."""
        from miro_core.shapes.captions import CaptionParseError, parse_plan
        from miro_core.shapes.detect import detect_array
        from miro_core.shapes.pixels import as_rgb_float, fit_within

        try:
            parse_plan(caption)
        except CaptionParseError:
            return caption, ()  # scored NaN by score_prepared, without looking at the image
        try:
            pixels = as_rgb_float(fit_within(image, self.options.max_side))  # a copy; the image is never touched
        except (OSError, ValueError):  # an image mode PIL cannot turn into RGB
            return None
        if pixels.size == 0:  # a zero-sized image shows nothing that could be judged
            return None
        return caption, tuple(detect_array(pixels))

    def score_prepared(self, prepared: Sequence[Any]) -> list[float]:
        from miro_core.shapes.captions import CaptionParseError
        from miro_core.shapes.verify import verify

        scores: list[float] = []
        for item in prepared:
            if item is None:
                scores.append(float("nan"))
                continue
            caption, detections = item
            try:
                scores.append(float(verify(None, caption, detections=detections).score))
            except CaptionParseError:  # a caption outside the shapes-world grammar
                scores.append(float("nan"))
        return scores

    def score(self, images: Sequence[Image], captions: Sequence[str]) -> list[float]:
        if len(images) != len(captions):
            raise ValueError(f"got {len(images)} images but {len(captions)} captions")
        return self.score_prepared([self.prepare(i, c) for i, c in zip(images, captions, strict=True)])
