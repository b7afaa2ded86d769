"""The MIRO generator: reward encoder + conditioning mixer + a backbone plugin's network.

Released model layout (MIRO-NOTES section 4): the sequence [reward tokens | learned registers |
projected text tokens] goes through a few self-attention blocks; the backbone cross-attends to the
result and may also take a pooled vector through its timestep embedding.

Two designs of everything around the backbone (``ModelSpec.design``):

- ``framework`` (this project's first design, kept so existing run folders and every backbone keep
  working): a shared Fourier reward embedding with a pooled vector, LayerNorm on the projected text, ReLU
  mixer layers with a final LayerNorm, input preconditioning only.
- ``released`` (the released miro-t2i 0.1.4 model): per-reward random-phase Fourier embedders, the mixer of
  :class:`ReleasedConditionMixer` (no pooled vector), output preconditioning ``c_out = sqrt(1 + sigma^2)``
  and the released loss-weighting features. With the ``rin-release`` backbone it is the released network,
  and the authors' checkpoints load into it (:mod:`miro_core.authors_layout`).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from miro_core.attention_blocks import SelfAttentionBlock
from miro_core.conditioning import Conditioning
from miro_core.flow import input_scale
from miro_core.fourier import RandomFourierFeatures
from miro_core.mixer_layer import MixerStack
from miro_core.network_contract import checked_backbone_output
from miro_core.reward_encoder import FourierFeatures, ReleasedRewardEncoder, RewardEncoder

Design = Literal["framework", "released"]


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
    #: ``framework`` or ``released`` (see the module docstring).
    design: Design = "framework"
    #: Released design only: Fourier channels and hidden layers of the learned loss weighting u(t).
    logvar_channels: int = 128
    logvar_mlp_layers: int = 0

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


class ReleasedConditionMixer(nn.Module):
    """The released mixer: ``[reward tokens | registers | Linear(text)]`` through layer-scaled blocks.

    Each block: LayerNorm (eps 1e-6), self-attention with q/k/v biases and no q/k norm, layer scale 0.1, a
    GELU MLP (4x); no final norm and no pooled vector. The mask is True for reward tokens and registers.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        dim = spec.cond_dim
        self.text_proj = nn.Linear(spec.text_dim, dim)
        self.registers = nn.Parameter(torch.empty(spec.registers, dim))
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(
                dim, spec.cond_heads, norm="layer", qkv_bias=True, qk_norm=False, swiglu=False, layer_scale=0.1
            )
            for _ in range(spec.mixer_layers)
        )
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.registers, std=0.02, a=-0.04, b=0.04)

    def forward(
        self,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        reward_tokens: torch.Tensor | None,
        reward_pooled: torch.Tensor | None = None,
    ) -> Conditioning:
        b = text_tokens.shape[0]
        text = self.text_proj(text_tokens.float())
        parts = [self.registers[None].expand(b, -1, -1), text]
        if reward_tokens is not None:
            parts.insert(0, reward_tokens)
        # Concatenated with type promotion, as released: under autocast the bf16 text and reward tokens join the
        # float32 registers (and positions) in float32, not the other way round.
        tokens = torch.cat(parts, dim=1)
        always = torch.ones(b, tokens.shape[1] - text.shape[1], dtype=torch.bool, device=text.device)
        mask = torch.cat([always, text_mask.bool()], dim=1)
        for block in self.blocks:
            tokens = block(tokens, mask)
        return Conditioning(tokens=tokens, mask=mask, pooled=None)


class ReleasedLossWeighting(nn.Module):
    """The released u(t): random-phase Fourier features of ``gamma = 1 - t`` (not standardised), optional
    ``Linear -> SiLU`` layers, then ``Linear -> 1``; ``proj`` indices match the released ``logvar_proj``."""

    def __init__(self, channels: int = 128, mlp_layers: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = [RandomFourierFeatures(channels)]
        for _ in range(mlp_layers):
            layers += [nn.Linear(channels, channels), nn.SiLU()]
        layers.append(nn.Linear(channels, 1))
        self.proj = nn.Sequential(*layers)
        for module in self.proj:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        gamma = (1.0 - t.float()).clamp(min=1e-9)
        return self.proj(gamma).squeeze(-1)


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
        released = spec.design == "released"
        self.reward_encoder: nn.Module | None = None
        if spec.reward_keys and released:
            self.reward_encoder = ReleasedRewardEncoder(
                len(spec.reward_keys), spec.cond_dim, spec.fourier_channels, dropout=spec.reward_dropout
            )
        elif spec.reward_keys:
            self.reward_encoder = RewardEncoder(
                len(spec.reward_keys),
                spec.cond_dim,
                spec.fourier_channels,
                missing=spec.missing_reward,
                dropout=spec.reward_dropout,
            )
        self.mixer: nn.Module = ReleasedConditionMixer(spec) if released else ConditionMixer(spec)
        self.network = network
        #: How errors name the backbone plugin (with its distribution when built by :func:`build_model`).
        self.backbone_label = f"backbone {spec.backbone!r}"
        self.loss_weighting: nn.Module | None = None
        if spec.loss_weighting == "learned":
            self.loss_weighting = (
                ReleasedLossWeighting(spec.logvar_channels, spec.logvar_mlp_layers) if released else LossWeighting()
            )
        #: The released design scales the network's output by c_out = sqrt(1 + sigma_data^2).
        self.output_scale = math.sqrt(1.0 + spec.sigma_data**2) if released and spec.precondition else 1.0

    @property
    def stateful(self) -> bool:
        """Whether the network carries state between sampler steps (see :mod:`miro_core.backbone`)."""
        return bool(getattr(self.network, "stateful", False))

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

    def velocity(
        self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning, state: Any = None
    ) -> tuple[torch.Tensor, Any]:
        """Preconditioned network call on ready conditioning: ``(velocity, state)`` (state None if stateless)."""
        if self.spec.precondition:
            x = x * input_scale(t, self.spec.sigma_data).view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
        output = self.network(x, t, cond, state) if self.stateful else self.network(x, t, cond)
        v, state = checked_backbone_output(self.backbone_label, output, x, self.stateful)
        if self.spec.design == "released":
            # As released, F(x) times a float32 c_out tensor (ones without preconditioning): the velocity, and the
            # guidance arithmetic on it, are float32 even when the network ran under autocast.
            v = v.float() * self.output_scale
        elif self.output_scale != 1.0:
            v = v * self.output_scale
        return v, state

    def step(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        levels: torch.Tensor | None = None,
        state: Any = None,
    ) -> tuple[torch.Tensor, Any]:
        """One sampler evaluation: ``(velocity, state for the next evaluation)``."""
        return self.velocity(x, t, self.condition(text_tokens, text_mask, levels), state)

    def self_condition_state(
        self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning, generator: torch.Generator | None
    ) -> Any:
        """Training-time self-conditioning (released recipe): a gradient-free first pass from zero state; its
        final state is kept for each sample with probability ``network.self_condition_rate`` (else zeros)."""
        rate = float(getattr(self.network, "self_condition_rate", 0.0))
        if not (self.training and self.stateful and rate > 0.0):
            return None
        with torch.no_grad():
            _, state = self.velocity(x, t, cond, None)
        if state is None:
            return None
        draw = torch.rand(x.shape[0], generator=generator, device="cpu").to(state.device)
        keep = (draw > 1.0 - rate).to(state.dtype).view(-1, *([1] * (state.dim() - 1)))
        return state.detach() * keep

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
        """The velocity; in training also the learned log-weight u(t) (inside forward, so DDP sees it).

        A stateful network gets zero state here, or in training the state of :meth:`self_condition_state`.
        """
        cond = self.condition(text_tokens, text_mask, levels, generator)
        v, _ = self.velocity(x, t, cond, self.self_condition_state(x, t, cond, generator))
        if not with_loss_weight:
            return v
        return v, (self.loss_weighting(t) if self.loss_weighting is not None else None)


def build_model(spec: ModelSpec, registry: Any) -> MiroModel:
    """Build the backbone plugin's network for this spec and wrap it."""
    from miro_core.backbone import BackboneSpec
    from miro_core.errors import ConfigError
    from miro_core.plugin_blame import broken, describe

    backbone = registry.backbones.create(spec.backbone, spec.backbone_options)
    designs = getattr(backbone, "designs", frozenset({"framework"}))
    if spec.design not in designs:
        raise ConfigError(
            f"backbone {spec.backbone!r} works with design {' or '.join(sorted(designs))}, not {spec.design!r}; "
            f"set `design: {sorted(designs)[0]}` in the training config"
        )
    network = backbone.build(BackboneSpec(spec.in_channels, spec.image_size, spec.cond_dim))
    label = describe(backbone, "backbones", registry)
    if not isinstance(network, nn.Module):
        raise broken(label, "backbone", f"build() returned {type(network).__name__}, not a torch.nn.Module")
    arguments = ("x", "t", "cond", "state") if getattr(network, "stateful", False) else ("x", "t", "cond")
    try:
        inspect.signature(network.forward).bind(*arguments)
    except (TypeError, ValueError):
        raise broken(label, "backbone", f"the network's forward does not accept ({', '.join(arguments)})") from None
    if not any(p.requires_grad for p in network.parameters()):
        raise broken(label, "backbone", "build() returned a network without trainable parameters")
    model = MiroModel(spec, network)
    model.backbone_label = label
    return model
