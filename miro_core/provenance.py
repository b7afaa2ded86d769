"""Which installed code produced an output: the ``components`` block of every config.json a stage writes.

Each entry is :meth:`miro_core.registry.Registry.provenance`: the component's name and version, the plugin
that registered it, and that plugin's distribution and distribution version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from miro_core.errors import MiroError


def component(registry: Any, table: str, name: str) -> dict[str, str]:
    """One component's provenance; a name that no longer resolves is recorded with the reason."""
    try:
        return registry.provenance(table, name)
    except MiroError as err:
        return {"name": name, "error": str(err)}


def of_instance(registry: Any, table: str, instance: Any) -> dict[str, str] | None:
    """The provenance of the registration whose class an already created component is (exact, even when its
    bare name is provided by two distributions)."""
    components = getattr(registry, table)
    cls = type(instance)
    for entry in components.registrations(getattr(cls, "name", "")):
        if entry.cls is cls:
            return entry.record()
    return None




def rewards(registry: Any, names: Iterable[str] | Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Provenance per reward: of the given instances (a name -> reward mapping), else by name."""
    if isinstance(names, Mapping):
        return {
            name: of_instance(registry, "rewards", reward) or component(registry, "rewards", name)
            for name, reward in names.items()
        }
    return {name: component(registry, "rewards", name) for name in names}


def pipeline_components(pipe: Any, *, strategy: str | None = None, sampler: str | None = None) -> dict[str, Any]:
    """The run's backbone, text encoder and autoencoder, plus the guidance strategy and sampler used."""
    config, registry = pipe.config, pipe.registry
    found: dict[str, Any] = {
        "backbone": component(registry, "backbones", config["model"]["backbone"]),
        "text_encoder": component(registry, "text_encoders", config["text_encoder"]["name"]),
        "autoencoder": component(registry, "autoencoders", (config.get("autoencoder") or {}).get("name", "pixels")),
    }
    if strategy is not None:
        found["guidance"] = component(registry, "guidance", strategy)
    if sampler is not None:
        found["sampler"] = component(registry, "samplers", sampler)
    return found


def run_components(
    registry: Any, *, backbone: str, text_encoder: str, autoencoder: str, data: str, bins: Any = None
) -> dict[str, Any]:
    """What a training run records: its backbone, text encoder and autoencoder, the binner of its bins file, and
    the rewards that scored its data (as the annotation folder recorded them)."""
    from miro_core.run_rewards import annotation_config

    found: dict[str, Any] = {
        "backbone": component(registry, "backbones", backbone),
        "text_encoder": component(registry, "text_encoders", text_encoder),
        "autoencoder": component(registry, "autoencoders", autoencoder),
    }
    binner = getattr(bins, "meta", {}).get("binner") if bins is not None else None
    if isinstance(binner, Mapping):
        found["binner"] = dict(binner)
    rewards = (annotation_config({"train": {"data": data}}).get("components") or {}).get("rewards")
    if isinstance(rewards, Mapping):
        found["rewards"] = dict(rewards)
    return found
