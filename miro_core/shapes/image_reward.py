"""Base of the shapes-world rewards that read only the image (aesthetic, sharpness).

They share how a batch is prepared (every image resized to one working size, unreadable images scored
NaN) and differ only in the measurement applied to the stacked float RGB batch.

The work splits the way :class:`~miro_core.rewards.RewardModel` asks: :meth:`prepare` (per image, in a
DataLoader worker during annotation) resizes to the working size and converts to float RGB;
:meth:`score_prepared` measures a whole batch at once. ``score`` is exactly the two in a row.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

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

    def prepare(self, image: Image, caption: str) -> np.ndarray | None:
        """The image as float RGB at the working size (None when it cannot be read: scored NaN)."""
        from miro_core.shapes.pixels import image_array

        return image_array(image, self.options.working_size)

    def score_prepared(self, prepared: Sequence[Any]) -> list[float]:
        import numpy as np

        ready = [i for i, item in enumerate(prepared) if item is not None]
        scores = [float("nan")] * len(prepared)
        if ready:
            values = self.measure(np.stack([prepared[i] for i in ready]).astype(np.float32, copy=False))
            for i, value in zip(ready, values, strict=True):
                scores[i] = float(value)
        return scores

    def score(self, images: Sequence[Image], captions: Sequence[str]) -> list[float]:
        if not images:
            return []
        return self.score_prepared([self.prepare(image, "") for image in images])
