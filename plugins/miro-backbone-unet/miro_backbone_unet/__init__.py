"""U-Net backbone for MIRO: diffusers' UNet2DConditionModel with cross-attention to the conditioning tokens."""
