"""The U-Net network: diffusers' ``UNet2DConditionModel`` behind MIRO's ``forward(x, t, cond)`` contract.

- ``cond.tokens`` -> ``encoder_hidden_states`` (``cross_attention_dim = cond_dim``): every transformer in a
  ``CrossAttn*Block2D`` and in the mid block cross-attends to them.
- ``cond.mask`` -> ``encoder_attention_mask``. diffusers turns it into an additive bias of -10000 on padded
  keys (a soft mask). To make padding have *exactly* no effect whatever it contains, padded tokens are also
  zeroed here: their keys are then 0 (diffusers' key/value projections have no bias), their scores 0 - 10000,
  and ``exp(-10000)`` is 0 in float32 and bfloat16. A sample with no real token at all attends uniformly to
  zero values: its cross-attention adds only the output projection's bias, the same for every such sample.
- ``cond.pooled`` -> ``class_labels`` with ``class_embed_type="projection"``: a ``Linear-SiLU-Linear``
  (``cond_dim`` -> time embedding width) whose output is added to the timestep embedding.
- ``t`` in [0, 1] -> ``timestep = t * time_scale`` (1000), SD's sinusoidal timestep embedding.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from miro_core.conditioning import Conditioning


class UNetNetwork(nn.Module):
    """``forward(x, t, cond) -> velocity`` (see :mod:`miro_core.backbone`)."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        cond_dim: int,
        block_out_channels: list[int],
        attention_levels: list[int],
        head_dim: int,
        layers_per_block: int = 2,
        transformer_layers: int = 1,
        norm_num_groups: int = 32,
        use_linear_projection: bool = False,
        time_scale: float = 1000.0,
    ) -> None:
        super().__init__()
        self.time_scale = time_scale
        levels = len(block_out_channels)
        attention = set(attention_levels)
        down = tuple("CrossAttnDownBlock2D" if i in attention else "DownBlock2D" for i in range(levels))
        up = tuple("CrossAttnUpBlock2D" if i in attention else "UpBlock2D" for i in reversed(range(levels)))
        # diffusers' ``attention_head_dim`` is (for historical reasons) the number of heads per level.
        heads = tuple(max(1, c // head_dim) for c in block_out_channels)
        self.unet = UNet2DConditionModel(
            sample_size=image_size,
            in_channels=in_channels,
            out_channels=in_channels,
            down_block_types=down,
            up_block_types=up,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            transformer_layers_per_block=transformer_layers,
            norm_num_groups=norm_num_groups,
            cross_attention_dim=cond_dim,
            attention_head_dim=heads,
            use_linear_projection=use_linear_projection,
            class_embed_type="projection",
            projection_class_embeddings_input_dim=cond_dim,
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        mask = cond.mask
        tokens = cond.tokens.to(x.dtype) * mask[..., None].to(x.dtype)
        out = self.unet(
            x,
            t * self.time_scale,
            encoder_hidden_states=tokens,
            class_labels=cond.pooled.to(x.dtype),
            encoder_attention_mask=mask,
            return_dict=False,
        )[0]
        return out.to(x.dtype)
