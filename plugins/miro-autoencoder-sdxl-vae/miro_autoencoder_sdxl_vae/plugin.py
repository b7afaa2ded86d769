"""Entry point module of the ``sdxl-vae`` autoencoder plugin."""

from __future__ import annotations

from miro_autoencoder_sdxl_vae.autoencoder import SDXLVAE
from miro_core.hookspecs import Register, hookimpl

MIRO_API = ">=1,<2"


@hookimpl
def register_autoencoders(register: Register) -> None:
    register(SDXLVAE)
