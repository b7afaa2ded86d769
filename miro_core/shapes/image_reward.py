"""Base of the shapes-world rewards that read only the image (aesthetic, sharpness).

They share how a batch is prepared (every image resized to one working size, unreadable images scored
NaN) and differ only in the measurement applied to the stacked float RGB batch.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from miro_core.component import ComponentOptions
from miro_core.rewards import RewardModel, RewardOptions

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image


class ImageRewardOptions(RewardOptions):
    #: Images are resized to this square size first, so the score means the same at any resolution.
    working_size: int = Field(32, ge=8, le=1024)


class ImageOnlyReward(RewardModel):
    """A reward computed from pixels alone, vectorised over a batch."""

    Options: ClassVar[type[ComponentOptions]] = ImageRewardOptions
    inputs: ClassVar[frozenset[str]] = frozenset({"image"})
    peak_memory_mib: ClassVar[float | None] = 64.0

    @abstractmethod
    def measure(self, batch: np.ndarray) -> np.ndarray:
        """Scores in [0, 1] of a float RGB batch (N, H, W, 3) in [0, 1]."""

    def score(self, images: Sequence[Image], captions: Sequence[str]) -> list[float]:
        from miro_core.shapes.pixels import batch_rgb

        if not images:
            return []
        batch, ok = batch_rgb(images, self.options.working_size)
        values = self.measure(batch)
        return [float(v) if good else float("nan") for v, good in zip(values, ok, strict=True)]
