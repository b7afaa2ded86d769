"""The autoencoder contract: where the generator works (pixels, or a VAE's latent space)."""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, ClassVar

from miro_core.component import Component, ComponentOptions

if TYPE_CHECKING:
    import torch


class AutoencoderOptions(ComponentOptions):
    checkpoint: str | None = None


class Autoencoder(Component):
    """Maps images in [-1, 1] to the (normalised) space the backbone denoises, and back."""

    Options: ClassVar[type[ComponentOptions]] = AutoencoderOptions

    @classmethod
    def kind(cls) -> str:
        return "autoencoder"

    def load(self, device: str = "cpu", dtype: str = "float32") -> None:  # noqa: B027 - optional hook
        """Load weights; identity codecs need nothing."""

    @abstractmethod
    def latent_shape(self, image_size: int, channels: int = 3) -> tuple[int, int]:
        """Return ``(latent_channels, latent_size)`` for square images of ``image_size``."""

    @abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [-1, 1] -> normalised latents."""

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> ``(B, 3, H, W)`` in [-1, 1]."""
