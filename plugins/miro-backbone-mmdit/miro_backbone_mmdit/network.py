"""MMDiT network: diffusers' ``SD3Transformer2DModel`` behind MIRO's backbone forward contract.

- ``cond.tokens`` (``cond_dim`` wide) are SD3's ``encoder_hidden_states``; ``joint_attention_dim = cond_dim``,
  so SD3's own ``context_embedder`` projects them to the model width.
- ``cond.pooled`` is SD3's ``pooled_projections`` (``pooled_projection_dim = cond_dim``), added to the
  timestep embedding that drives every block's adaLN.
- ``t`` in [0, 1] is scaled to SD3's [0, 1000] timestep range. SD3 is itself a rectified-flow model with
  ``x_t = (1 - t) x0 + t eps`` and velocity target ``eps - x0``, the same convention as MIRO.
- Masking: SD3's stock joint attention has no mask. :class:`MaskedJointAttnProcessor` replaces it and adds
  a key-padding mask over ``[image tokens (always kept) | context tokens (cond.mask)]``, so padded context
  tokens are never attended to by any query; they still flow through their own (discarded) stream.
"""

from __future__ import annotations

import torch
from diffusers import SD3Transformer2DModel
from diffusers.models.attention_processor import Attention
from torch import nn

from miro_core.conditioning import Conditioning
from miro_core.low_precision import attention


class MaskedJointAttnProcessor:
    """SD3 joint attention (image and context streams attend jointly) with a key mask on the context stream.

    Mirrors diffusers' ``JointAttnProcessor2_0`` computation; ``attention_mask`` is the ``(B, L)`` bool mask
    of the context tokens (True = real). Without context (SD3.5's extra image-only attention) the mask is
    not used.
    """

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        batch, image_len, _ = hidden_states.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)

        query = heads(attn.to_q(hidden_states))
        key = heads(attn.to_k(hidden_states))
        value = heads(attn.to_v(hidden_states))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        sdpa_mask = None
        if encoder_hidden_states is not None:
            ctx_query = heads(attn.add_q_proj(encoder_hidden_states))
            ctx_key = heads(attn.add_k_proj(encoder_hidden_states))
            ctx_value = heads(attn.add_v_proj(encoder_hidden_states))
            if attn.norm_added_q is not None:
                ctx_query = attn.norm_added_q(ctx_query)
            if attn.norm_added_k is not None:
                ctx_key = attn.norm_added_k(ctx_key)
            query = torch.cat([query, ctx_query], dim=2)
            key = torch.cat([key, ctx_key], dim=2)
            value = torch.cat([value, ctx_value], dim=2)
            if attention_mask is not None:
                keep_image = torch.ones(batch, image_len, dtype=torch.bool, device=attention_mask.device)
                sdpa_mask = torch.cat([keep_image, attention_mask.bool()], dim=1)[:, None, None, :]

        out = attention(query, key, value, sdpa_mask)  # float32 under CPU bf16 (miro_core.low_precision)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * out.shape[-1]).to(query.dtype)

        if encoder_hidden_states is None:
            return attn.to_out[1](attn.to_out[0](out))
        image_out, ctx_out = out[:, :image_len], out[:, image_len:]
        if not attn.context_pre_only:
            ctx_out = attn.to_add_out(ctx_out)
        image_out = attn.to_out[1](attn.to_out[0](image_out))
        return image_out, ctx_out


class MMDiTNetwork(nn.Module):
    """``forward(x, t, cond) -> velocity`` (see :mod:`miro_core.backbone`)."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        cond_dim: int,
        num_layers: int,
        num_heads: int,
        head_dim: int = 64,
        patch_size: int = 2,
        dual_attention_layers: tuple[int, ...] | list[int] = (),
        qk_norm: str | None = None,
        time_scale: float = 1000.0,
    ) -> None:
        super().__init__()
        self.time_scale = time_scale
        width = num_heads * head_dim
        self.transformer = SD3Transformer2DModel(
            sample_size=image_size,
            patch_size=patch_size,
            in_channels=in_channels,
            num_layers=num_layers,
            attention_head_dim=head_dim,
            num_attention_heads=num_heads,
            joint_attention_dim=cond_dim,
            caption_projection_dim=width,
            pooled_projection_dim=cond_dim,
            out_channels=in_channels,
            pos_embed_max_size=image_size // patch_size,
            dual_attention_layers=tuple(dual_attention_layers),
            qk_norm=qk_norm,
        )
        self.transformer.set_attn_processor(MaskedJointAttnProcessor())

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        dtype = self.transformer.pos_embed.proj.weight.dtype
        (out,) = self.transformer(
            hidden_states=x,
            encoder_hidden_states=cond.tokens.to(dtype),
            pooled_projections=cond.pooled.to(dtype),
            timestep=t * self.time_scale,
            joint_attention_kwargs={"attention_mask": cond.mask},
            return_dict=False,
        )
        return out
