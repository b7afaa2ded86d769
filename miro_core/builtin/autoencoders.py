"""The built-in pixel-space "autoencoder": the generator works directly on pixels in [-1, 1]."""

from __future__ import annotations

from typing import TYPE_CHECKING

from miro_core.autoencoder import Autoencoder
from miro_core.hookspecs import Register, hookimpl

if TYPE_CHECKING:
    import torch


class PixelSpace(Autoencoder):
    """Identity codec, for small images such as the 32x32 shapes world."""

    name = "pixels"
    description = "pixel space (identity), for small images"

    def latent_shape(self, image_size: int, channels: int = 3) -> tuple[int, int]:
        return channels, image_size

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.clamp(-1.0, 1.0)


@hookimpl
def register_autoencoders(register: Register) -> None:
    register(PixelSpace)
