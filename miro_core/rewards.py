"""The reward model contract: score a batch of images against their captions.

A reward plugin subclasses :class:`RewardModel`. The annotation engine decodes every image once per
batch and hands the same decoded images to every reward, so a reward must not modify them.

On an accelerator the CPU work before a reward's forward pass (decoding, resizing, cropping,
normalising, tokenising) must overlap the device's work on the previous batch. A reward that splits
itself into ``prepare`` (per sample, CPU only, run in DataLoader worker processes on an unloaded copy
of the reward) and ``score_prepared`` (per batch, on the loaded model in the main process) gets that
overlap; a reward that only implements ``score`` keeps working, with its preprocessing in the main
process.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from miro_core.component import Component, ComponentOptions

if TYPE_CHECKING:
    from PIL.Image import Image


class RewardOptions(ComponentOptions):
    """Options every reward accepts; plugins extend this model with their own keys."""

    #: Local folder or file of the weights, or a Hugging Face repo id resolved in the local cache only.
    checkpoint: str | None = None
    #: Images per forward pass; ``None`` lets ``miro annotate --batch-size`` decide.
    batch_size: int | None = None


class RewardModel(Component):
    """Scores (image, caption) pairs; higher is better.

    ``score`` returns the value MIRO bins: the reference score *after* the paper's scaling (for
    example PickScore / 100). Return ``float('nan')`` for a sample the reward cannot score; the
    annotation engine records it as a row-level error and keeps going.
    """

    Options: ClassVar[type[ComponentOptions]] = RewardOptions
    #: Which inputs the reward reads: a subset of {"image", "caption"}.
    inputs: ClassVar[frozenset[str]] = frozenset({"image", "caption"})
    #: Peak memory in MiB at real size, used to plan which rewards fit on a device at once.
    peak_memory_mib: ClassVar[float | None] = None

    @classmethod
    def kind(cls) -> str:
        return "reward"

    def load(self, device: str = "cpu", dtype: str = "float32") -> None:  # noqa: B027 - optional hook
        """Load weights onto ``device``. Rewards with no weights need not override this."""

    def unload(self) -> None:  # noqa: B027 - optional hook
        """Release weights and device memory; ``load`` may be called again later."""

    @abstractmethod
    def score(self, images: Sequence[Image], captions: Sequence[str]) -> Sequence[float]:
        """Score a batch: one float per (image, caption) pair, NaN where it cannot."""

    def prepare(self, image: Image, caption: str) -> Any:
        """Optional: the CPU preprocessing of one sample, run in a DataLoader worker.

        Called on a copy of the reward that has NOT been loaded (no weights; only ``options``), in another
        process, so it must read only its options and light files, and return something picklable (numpy
        arrays, tensors, token id lists). Must not modify ``image``. Implement it together with
        :meth:`score_prepared`; ``score(images, captions)`` must equal
        ``score_prepared([prepare(i, c) for i, c in zip(images, captions)])``.
        """
        raise NotImplementedError

    def score_prepared(self, prepared: Sequence[Any]) -> Sequence[float]:
        """Optional: score a batch of :meth:`prepare` outputs on the loaded model, one float per item."""
        raise NotImplementedError

    @classmethod
    def prepares_in_workers(cls) -> bool:
        """Whether this reward implements :meth:`prepare` and :meth:`score_prepared` (both are needed)."""
        return cls.prepare is not RewardModel.prepare and cls.score_prepared is not RewardModel.score_prepared
