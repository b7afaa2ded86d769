"""Life cycle shared by the paper rewards: load / unload, batching, paper scaling.

Importing this module imports no heavy library; torch is imported inside the methods that need it.
"""

from __future__ import annotations

import gc
from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

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
    #: 16-bit and float images: ``clip`` is what every reference does (PIL's ``convert("RGB")`` clips the
    #: values to 0..255 unscaled: a 16-bit image comes out nearly white, a float image in [0, 1] nearly
    #: black), so the scores equal the reference's; ``rescale`` scales them to 8 bits first (what the image
    #: depicts). See miro_core.image_modes.
    high_bit_depth: Literal["clip", "rescale"] = "clip"
    #: Transparency (RGBA, LA, palette or grey with a transparent entry): ``drop`` keeps the hidden colours,
    #: as every reference does (PIL's ``convert("RGB")``, transformers 4.x's ``convert_to_rgb``);
    #: ``white`` composites onto white first (transformers 5, most viewers).
    alpha: Literal["drop", "white"] = "drop"

    def image_choices(self) -> dict[str, str]:
        """The mode-conversion choices as keyword arguments of the preprocessing functions."""
        return {"high_bit_depth": self.high_bit_depth, "alpha": self.alpha}


def torch_dtype(name: str) -> Any:
    """``"bf16"`` -> ``torch.bfloat16`` (and the other usual spellings), with a clear error otherwise."""
    import torch

    try:
        return getattr(torch, _DTYPES[str(name).lower()])
    except KeyError:
        raise ConfigError(f"unknown dtype {name!r}; use float32, float16 or bfloat16") from None


class PaperReward(RewardModel):
    """A reward backed by torch weights: ``load`` builds ``self.model``, ``unload`` drops it.

    Scoring is split in two, as :class:`~miro_core.rewards.RewardModel` allows, so that the CPU work can
    run in DataLoader workers:

    - :meth:`prepare` (per sample, CPU, no weights): mode conversion, resizing, cropping, normalising,
      tokenising, from the light *preprocessing state* (:meth:`_build_preprocessing`: tokenizer, image
      settings), which is built lazily from the options and files alone;
    - :meth:`score_prepared` (per batch, on the loaded model): :meth:`_score_batch`, then the paper's
      scaling (:meth:`scale`) unless ``raw``.

    ``score`` is exactly ``score_prepared([prepare(i, c) ...])``.
    """

    Options: ClassVar[type[PaperRewardOptions]] = PaperRewardOptions

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.model: Any = None
        self.device: str = "cpu"
        self.dtype: Any = None
        self._preprocessing: Any = None

    def __getstate__(self) -> dict[str, Any]:
        """A pickled reward (a DataLoader worker's copy) never carries the weights."""
        state = dict(self.__dict__)
        state["model"] = None
        return state

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

    @property
    def preprocessing(self) -> Any:
        """The light state :meth:`prepare` needs (tokenizer, image settings), built once from the options."""
        if self._preprocessing is None:
            self._preprocessing = self._build_preprocessing()
        return self._preprocessing

    # -- scoring ----------------------------------------------------------------------------------
    def score(self, images: Sequence[Image], captions: Sequence[str]) -> list[float]:
        if len(images) != len(captions):
            raise ValueError(f"{self.name}: {len(images)} images but {len(captions)} captions")
        self._check_loaded()
        return self.score_prepared([self.prepare(image, caption) for image, caption in zip(images, captions)])

    def prepare(self, image: Image, caption: str) -> Any:
        return self._prepare(self.preprocessing, image, caption)

    def score_prepared(self, prepared: Sequence[Any]) -> list[float]:
        import torch

        self._check_loaded()
        if not prepared:
            return []
        step = self.options.batch_size or len(prepared)
        out: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(prepared), step):
                out.extend(float(v) for v in self._score_batch(list(prepared[start : start + step])))
        return out if self.options.raw else [self.scale(v) for v in out]

    def scale(self, raw: float) -> float:
        """The paper's scaling of a raw score (identity unless a subclass says otherwise)."""
        return raw

    def _check_loaded(self) -> None:
        if self.model is None:
            raise RuntimeError(f"reward {self.name!r}: call load() before score()")

    # -- for subclasses ---------------------------------------------------------------------------
    @abstractmethod
    def _build_preprocessing(self) -> Any:
        """The light, picklable state :meth:`_prepare` reads (no weights); may read small files."""

    @abstractmethod
    def _load(self, device: str, dtype: Any) -> Any:
        """Build the weights object on ``device`` in ``dtype`` and return it (stored as ``self.model``)."""

    @abstractmethod
    def _prepare(self, state: Any, image: Image, caption: str) -> Any:
        """One sample's model inputs (CPU tensors, token id lists); must not modify ``image``."""

    @abstractmethod
    def _score_batch(self, prepared: list[Any]) -> Sequence[float]:
        """Raw reference scores for one batch of :meth:`_prepare` outputs."""
