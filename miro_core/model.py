"""The MIRO generator: reward encoder + conditioning mixer + a backbone plugin's network.

Released model layout (MIRO-NOTES section 4): the sequence [reward tokens | learned registers |
projected text tokens] goes through a few self-attention blocks; the backbone cross-attends to the
result and may also take a pooled vector through its timestep embedding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from miro_core.conditioning import Conditioning
from miro_core.flow import input_scale
from miro_core.mixer_layer import MixerStack
from miro_core.reward_encoder import FourierFeatures, RewardEncoder


@dataclass
class ModelSpec:
    """Everything needed to rebuild the network from a run folder (saved in config.json)."""

    backbone: str
    backbone_options: dict[str, Any]
    in_channels: int
    image_size: int
    text_dim: int
    reward_keys: list[str] = field(default_factory=list)
    cond_dim: int = 128
    cond_heads: int = 4
    mixer_layers: int = 2
    registers: int = 16
    fourier_channels: int = 256
    missing_reward: Literal["zero", "learned"] = "zero"
    reward_dropout: float = 0.0
    precondition: bool = True
    sigma_data: float = 0.5
    loss_weighting: Literal["learned", "none"] = "learned"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class ConditionMixer(nn.Module):
    """Mixes reward tokens, registers and text tokens with a few self-attention blocks."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        dim = spec.cond_dim
        self.text_proj = nn.Sequential(nn.LayerNorm(spec.text_dim), nn.Linear(spec.text_dim, dim))
        self.registers = nn.Parameter(torch.randn(spec.registers, dim) * 0.02)
        self.blocks = MixerStack(dim, spec.cond_heads, spec.mixer_layers)
        self.norm = nn.LayerNorm(dim)
        self.text_pool = nn.Linear(dim, dim)

    def forward(
        self,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        reward_tokens: torch.Tensor | None,
        reward_pooled: torch.Tensor | None,
    ) -> Conditioning:
        b = text_tokens.shape[0]
        text = self.text_proj(text_tokens.to(self.registers.dtype))
        parts = [self.registers[None].expand(b, -1, -1), text]
        masks = [torch.ones(b, self.registers.shape[0], dtype=torch.bool, device=text.device), text_mask]
        if reward_tokens is not None:
            parts.insert(0, reward_tokens)
            masks.insert(0, torch.ones(b, reward_tokens.shape[1], dtype=torch.bool, device=text.device))
        tokens = torch.cat(parts, dim=1)
        mask = torch.cat(masks, dim=1)
        tokens = self.norm(self.blocks(tokens, mask))
        weights = text_mask.to(text.dtype)[..., None]
        text_mean = (text * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        pooled = self.text_pool(text_mean)
        if reward_pooled is not None:
            pooled = pooled + reward_pooled
        return Conditioning(tokens=tokens, mask=mask, pooled=pooled)


class LossWeighting(nn.Module):
    """EDM2's learned per-time uncertainty u(t): the loss becomes loss / exp(u(t)) + u(t)."""

    def __init__(self, channels: int = 128) -> None:
        super().__init__()
        self.fourier = FourierFeatures(channels, scale=1.0, seed=1)
        self.linear = nn.Linear(channels, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.linear(self.fourier(t)).squeeze(-1)


class MiroModel(nn.Module):
    """Velocity model v(x_t, t, text, reward levels)."""

    def __init__(self, spec: ModelSpec, network: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.reward_encoder = (
            RewardEncoder(
                len(spec.reward_keys),
                spec.cond_dim,
                spec.fourier_channels,
                missing=spec.missing_reward,
                dropout=spec.reward_dropout,
            )
            if spec.reward_keys
            else None
        )
        self.mixer = ConditionMixer(spec)
        self.network = network
        self.loss_weighting = LossWeighting() if spec.loss_weighting == "learned" else None

    def condition(
        self,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        levels: torch.Tensor | None,
        generator: torch.Generator | None = None,
    ) -> Conditioning:
        reward_tokens = reward_pooled = None
        if self.reward_encoder is not None:
            if levels is None:
                raise ValueError("this model is reward-conditioned: pass reward levels")
            reward_tokens, reward_pooled = self.reward_encoder(levels, generator)
        return self.mixer(text_tokens, text_mask, reward_tokens, reward_pooled)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        levels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        with_loss_weight: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """The velocity; in training also the learned log-weight u(t) (inside forward, so DDP sees it)."""
        cond = self.condition(text_tokens, text_mask, levels, generator)
        if self.spec.precondition:
            x = x * input_scale(t, self.spec.sigma_data).view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
        v = self.network(x, t, cond)
        if not with_loss_weight:
            return v
        return v, (self.loss_weighting(t) if self.loss_weighting is not None else None)


def build_model(spec: ModelSpec, registry: Any) -> MiroModel:
    """Build the backbone plugin's network for this spec and wrap it."""
    from miro_core.backbone import BackboneSpec

    backbone = registry.backbones.create(spec.backbone, spec.backbone_options)
    network = backbone.build(BackboneSpec(spec.in_channels, spec.image_size, spec.cond_dim))
    return MiroModel(spec, network)
