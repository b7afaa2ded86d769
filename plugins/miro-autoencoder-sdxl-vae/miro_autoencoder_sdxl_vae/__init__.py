"""SDXL VAE autoencoder for MIRO (diffusers AutoencoderKL), with channel-wise latent statistics."""
