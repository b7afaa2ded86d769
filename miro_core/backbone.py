"""The backbone contract: the denoising network, built on demand from a named size.

A backbone plugin registers a light :class:`Backbone` descriptor; ``build`` imports torch and returns
an ``nn.Module`` whose forward is ``forward(x, t, cond) -> velocity`` with

- ``x``: ``(B, C, H, W)`` noisy input (pixels or latents), ``C = spec.in_channels``, ``H = W = spec.image_size``;
- ``t``: ``(B,)`` flow time in [0, 1] (1 is pure noise);
- ``cond``: :class:`miro_core.conditioning.Conditioning` with ``tokens (B, L, D)``, ``mask (B, L)``
  (True = attend) and ``pooled (B, D)``, where ``D = spec.cond_dim``. The tokens are
  [reward tokens | registers | text tokens] after the conditioning mixer; ``pooled`` is the pooled
  reward vector for adaLN-style backbones, to be added to the timestep embedding.

and returns a tensor shaped like ``x``.

A network may instead be *stateful* (class attribute ``stateful = True``): its forward is
``forward(x, t, cond, state) -> (velocity, state)``, where ``state`` is a tensor with the batch first (or
None) that the sampler hands back at the next evaluation, kept separately for the positive and negative
guidance branch; ``state`` is None at the first step. The released MIRO RIN uses it for latent
self-conditioning (its final latents feed the next step). Training calls it with ``state=None``, or with the
state of a first, gradient-free pass when the network sets ``self_condition_rate`` (see
:class:`miro_core.model.MiroModel`).

``Backbone.designs`` names the conditioning stacks (``ModelSpec.design``) the network works with:
``framework`` (reward encoder with a pooled vector, this project's mixer) or ``released`` (the released
model's reward embedders and mixer, no pooled vector: ``cond.pooled`` is None).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from miro_core.component import Component, ComponentOptions
from miro_core.errors import ConfigError, PluginError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class BackboneSpec:
    """What the framework tells a backbone about its inputs."""

    in_channels: int
    image_size: int
    cond_dim: int


class BackboneOptions(ComponentOptions):
    #: A key of the backbone's ``sizes``.
    size: str = "tiny"
    #: Patch size for patch-based backbones (``dit-xl/2``); ``None`` uses the size's default.
    patch_size: int | None = None
    #: Extra keyword arguments that override the named size (for experiments).
    overrides: dict[str, Any] = {}


class Backbone(Component):
    """A family of denoising networks with named sizes."""

    Options: ClassVar[type[ComponentOptions]] = BackboneOptions
    #: Named sizes: size name -> keyword arguments of the network.
    sizes: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: How the network takes rewards: "tokens" (cross-attends to the sequence), "pooled" (timestep embedding).
    reward_conditioning: ClassVar[frozenset[str]] = frozenset({"tokens"})
    #: Keyword arguments the network accepts; when set, ``size_config`` rejects any other key by name.
    network_options: ClassVar[frozenset[str] | None] = None
    #: Conditioning stacks (``ModelSpec.design``) the network works with.
    designs: ClassVar[frozenset[str]] = frozenset({"framework"})

    @classmethod
    def kind(cls) -> str:
        return "backbone"

    def size_config(self) -> dict[str, Any]:
        """The keyword arguments of the chosen size, with overrides and patch size applied."""
        if not isinstance(self.options, BackboneOptions):
            raise PluginError(
                f"backbone {self.name!r}: its Options ({type(self.options).__name__}) must extend "
                "miro_core.backbone.BackboneOptions (size, patch_size, overrides)"
            )
        size = self.options.size
        if size not in self.sizes:
            raise ConfigError(f"backbone {self.name!r} has no size {size!r}; choose one of: {', '.join(self.sizes)}")
        config = dict(self.sizes[size])
        if self.options.patch_size is not None:
            config["patch_size"] = self.options.patch_size
        config.update(self.options.overrides)
        if self.network_options is not None:
            unknown = sorted(set(config) - self.network_options)
            if unknown:
                raise ConfigError(
                    f"backbone {self.name!r}: unknown override(s) {', '.join(unknown)}; "
                    f"allowed: {', '.join(sorted(self.network_options))}"
                )
        return config

    def check_patch_size(self, config: Mapping[str, Any], spec: BackboneSpec) -> None:
        """Reject a patch size that does not divide the input's side."""
        patch = int(config["patch_size"])
        if patch < 1 or spec.image_size % patch:
            raise ConfigError(
                f"backbone {self.name!r}: image size {spec.image_size} is not a multiple of patch size {patch}"
            )

    @abstractmethod
    def build(self, spec: BackboneSpec) -> torch.nn.Module:
        """Create the network (random weights) for the given input and conditioning shapes."""


def parse_backbone_name(text: str, known: Mapping[str, type[Backbone]]) -> tuple[str, dict[str, Any]]:
    """Split ``dit-xl/2`` into the registered name ``dit`` and options ``{size: xl, patch_size: 2}``.

    A distribution qualifier is kept: ``miro-backbone-dit:dit-xl/2`` -> ``miro-backbone-dit:dit``.
    """
    qualifier, colon, unqualified = text.rpartition(":")
    scope = f"{qualifier}:" if colon else ""
    base, _, patch = unqualified.partition("/")
    options: dict[str, Any] = {}
    if patch:
        if not patch.isdigit():
            raise ConfigError(f"backbone {text!r}: the part after '/' must be a patch size, e.g. dit-xl/2")
        options["patch_size"] = int(patch)
    if scope + base in known:
        return scope + base, options
    for name in sorted(known, key=len, reverse=True):
        prefix = name + "-"
        if base.startswith(prefix) and scope + name in known:
            size = base[len(prefix) :]
            sizes = known[scope + name].sizes
            if size not in sizes:
                raise ConfigError(f"backbone {name!r} has no size {size!r}; choose one of: {', '.join(sizes)}")
            options["size"] = size
            return scope + name, options
    raise ConfigError(f"unknown backbone {text!r}; installed: {', '.join(sorted(known)) or 'none'}")
