"""Check every component a plugin module registers, through the public registry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from miro_core.conformance.binners import check_binner
from miro_core.conformance.networks import check_autoencoder, check_backbone, check_text_encoder
from miro_core.conformance.rewards import check_reward
from miro_core.conformance.runner import ConformanceError, Report
from miro_core.conformance.sampling import check_guidance, check_sampler

# -- a whole plugin module ------------------------------------------------------------------------------------------
CHECKS: dict[str, Callable[..., Report]] = {
    "rewards": check_reward,
    "binners": check_binner,
    "guidance": check_guidance,
    "samplers": check_sampler,
    "backbones": check_backbone,
    "text_encoders": check_text_encoder,
    "autoencoders": check_autoencoder,
}


def check_plugin(
    module: Any, options: Mapping[str, Mapping[str, Any]] | None = None, *, raise_on_failure: bool = True
) -> list[Report]:
    """Load a plugin module through the public registry and check every component it registers.

    The module must load cleanly (MIRO_API, hooks decorated, nothing broken); ``options`` maps a component
    name to the options it is checked with.
    """
    from miro_core.plugins import build_registry

    name = getattr(module, "__name__", "plugin")
    registry = build_registry(load_entry_points=False, extra_plugins=[(name, module)])
    info = next(p for p in registry.plugins if p.name == name)
    problems = ([info.error] if info.error else []) + info.warnings
    if problems:
        raise ConformanceError(f"plugin module {name} does not load cleanly: {'; '.join(problems)}")
    if not info.provides:
        raise ConformanceError(f"plugin module {name} registers nothing (no @hookimpl register_* function)")
    reports = []
    for attribute, table in registry.tables().items():
        for component in table.names():
            for entry in table.registrations(component):
                if entry.plugin == name:
                    check = CHECKS[attribute]
                    reports.append(check(entry.cls, (options or {}).get(component), raise_on_failure=False))
    if raise_on_failure:
        for report in reports:
            report.raise_for_failures()
    return reports
