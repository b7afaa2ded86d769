"""The text encoder contract: captions to a sequence of token embeddings (frozen, cached)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from miro_core.component import Component, ComponentOptions

if TYPE_CHECKING:
    import torch


class TextEncoderOptions(ComponentOptions):
    #: Local folder of the weights and tokenizer, or a Hugging Face repo id resolved in the local cache only.
    checkpoint: str | None = None
    #: Tokens per caption after padding/truncation.
    max_length: int = Field(32, ge=1, le=65536)


class TextEncoder(Component):
    """Encodes captions once; the framework caches the result, so it never runs in the training loop."""

    Options: ClassVar[type[ComponentOptions]] = TextEncoderOptions

    @classmethod
    def kind(cls) -> str:
        return "text encoder"

    @abstractmethod
    def load(self, device: str = "cpu", dtype: str = "float32") -> None:
        """Load weights and tokenizer from a local path; raise MissingWeightsError if absent."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Width of each token embedding."""

    @abstractmethod
    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``tokens (B, max_length, dim)`` float and ``mask (B, max_length)`` bool (True = real)."""
