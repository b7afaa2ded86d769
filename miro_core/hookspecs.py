"""The hooks a plugin may implement. Each hook only *registers* classes; the contracts are the ABCs.

A plugin module implements any subset, for example::

    from miro_core.hookspecs import hookimpl

    @hookimpl
    def register_rewards(register):
        register(MyReward)

``register`` takes a component class (a subclass of the contract's ABC, with a ``name``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "miro"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[type[Any]], None]


@hookspec
def register_rewards(register: Register) -> None:
    """Register RewardModel subclasses (scorers used by ``miro annotate`` and ``miro eval``)."""


@hookspec
def register_binners(register: Register) -> None:
    """Register Binner subclasses (score -> level mappings used by ``miro bins fit``)."""


@hookspec
def register_backbones(register: Register) -> None:
    """Register Backbone subclasses (denoising networks used by ``miro train --backbone``)."""


@hookspec
def register_text_encoders(register: Register) -> None:
    """Register TextEncoder subclasses (frozen caption encoders whose output is cached)."""


@hookspec
def register_autoencoders(register: Register) -> None:
    """Register Autoencoder subclasses (pixel space or a VAE's latent space)."""


@hookspec
def register_guidance_strategies(register: Register) -> None:
    """Register GuidanceStrategy subclasses (negative branch and weight used by ``miro sample``)."""


@hookspec
def register_samplers(register: Register) -> None:
    """Register Sampler subclasses (ODE solvers used by ``miro sample --sampler``)."""
