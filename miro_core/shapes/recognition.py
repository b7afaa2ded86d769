"""How recognisable the drawn shapes are: the share of detected objects that fit a known shape.

"The shapes must be recognisable" needs a number, not a look at a grid. The shape detector already
decides, per coloured blob, whether it is a circle, a square or a triangle (soft IoU with that shape of
the blob's own size >= ``detect.MIN_FIT``) or ``unknown`` (merged blobs, smears, lumps). The share of
recognised blobs is therefore a caption-free measure of drawing quality: clean training images score
close to 1, blob-like generations much lower. It says nothing about whether the *right* shapes were
drawn; that is the alignment reward's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from miro_core.shapes.detect import UNKNOWN, Detection, detect_shapes


@dataclass(frozen=True)
class Recognition:
    """Counts over a set of images: images, detected objects, and objects that fit a known shape."""

    images: int
    objects: int
    recognised: int

    @property
    def share(self) -> float:
        """Recognised objects / detected objects (NaN when nothing was detected)."""
        return self.recognised / self.objects if self.objects else float("nan")

    def as_json(self) -> dict[str, Any]:
        share = self.share
        return {
            "images": self.images,
            "objects": self.objects,
            "recognised": self.recognised,
            "share": round(share, 4) if share == share else None,
        }


def count_recognised(detections_per_image: Iterable[Sequence[Detection]]) -> Recognition:
    """Count the objects, and those that fit a known shape, over each image's detections."""
    images = objects = recognised = 0
    for detections in detections_per_image:
        images += 1
        objects += len(detections)
        recognised += sum(1 for d in detections if d.shape != UNKNOWN)
    return Recognition(images, objects, recognised)


def recognise(images: Iterable[Any]) -> Recognition:
    """Detect the shapes in every image (PIL or array) and count how many fit a known shape."""
    return count_recognised(detect_shapes(image) for image in images)
