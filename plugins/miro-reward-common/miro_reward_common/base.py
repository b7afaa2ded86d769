"""Life cycle shared by the paper rewards: load / unload, batching, paper scaling.

Importing this module imports no heavy library; torch is imported inside the methods that need it.
"""

from __future__ import annotations

import gc
from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from miro_core.errors import ConfigError
from miro_core.rewards import RewardModel, RewardOptions

if TYPE_CHECKING:
    from PIL.Image import Image

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


class PaperRewardOptions(RewardOptions):
    """Options every paper reward accepts."""

    #: Return the reference model's raw score instead of the value MIRO bins (the paper's scaling).
    raw: bool = False


def torch_dtype(name: str) -> Any:
    """``"bf16"`` -> ``torch.bfloat16`` (and the other usual spellings), with a clear error otherwise."""
    import torch

    try:
        return getattr(torch, _DTYPES[str(name).lower()])
    except KeyError:
        raise ConfigError(f"unknown dtype {name!r}; use float32, float16 or bfloat16") from None


class PaperReward(RewardModel):
    """A reward backed by torch weights: ``load`` builds ``self.model``, ``unload`` drops it.

    Subclasses implement :meth:`_load` (build and return the weights object) and :meth:`_raw_scores`
    (one float per pair for one batch, the reference's raw score); :meth:`scale` maps a raw score to
    the value MIRO bins.
    """

    Options: ClassVar[type[PaperRewardOptions]] = PaperRewardOptions

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.model: Any = None
        self.device: str = "cpu"
        self.dtype: Any = None

    # -- life cycle -------------------------------------------------------------------------------
    def load(self, device: str = "cpu", dtype: str = "float32") -> None:
        if self.model is not None:
            self.unload()
        self.device = str(device)
        self.dtype = torch_dtype(dtype)
        self.model = self._load(self.device, self.dtype)

    def unload(self) -> None:
        self.model = None
        gc.collect()
        try:
            import torch
        except ImportError:  # pragma: no cover - torch is a dependency
            return
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @property
    def loaded(self) -> bool:
        return self.model is not None

    # -- scoring ----------------------------------------------------------------------------------
    def score(self, images: Sequence[Image], captions: Sequence[str]) -> list[float]:
        import torch

        if len(images) != len(captions):
            raise ValueError(f"{self.name}: {len(images)} images but {len(captions)} captions")
        if self.model is None:
            raise RuntimeError(f"reward {self.name!r}: call load() before score()")
        if not images:
            return []
        step = self.options.batch_size or len(images)
        out: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(images), step):
                raw = self._raw_scores(list(images[start : start + step]), list(captions[start : start + step]))
                out.extend(float(v) for v in raw)
        return out if self.options.raw else [self.scale(v) for v in out]

    def scale(self, raw: float) -> float:
        """The paper's scaling of a raw score (identity unless a subclass says otherwise)."""
        return raw

    # -- for subclasses ---------------------------------------------------------------------------
    @abstractmethod
    def _load(self, device: str, dtype: Any) -> Any:
        """Build the weights object on ``device`` in ``dtype`` and return it (stored as ``self.model``)."""

    @abstractmethod
    def _raw_scores(self, images: list[Image], captions: list[str]) -> Sequence[float]:
        """Raw reference scores for one batch."""
