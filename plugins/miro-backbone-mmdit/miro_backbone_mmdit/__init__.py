"""MMDiT backbone for MIRO: Stable Diffusion 3's joint-attention transformer (diffusers)."""
