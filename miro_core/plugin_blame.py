"""Naming the plugin that broke a contract: the component, its distribution (or its class, when no installed
distribution registered it) and the conformance check that would have caught it.

The engine's boundary checks (:mod:`miro_core.guidance_contract`, :mod:`miro_core.network_contract`) all word
their errors through these two functions, so a user reads every violation the same way.
"""

from __future__ import annotations

from typing import Any

from miro_core.errors import PluginError


def describe(component: Any, table: str, registry: Any = None, kind: str | None = None) -> str:
    """``sampler 'x' (distribution 1.2)``, or with the class when the registry does not know it.

    ``kind`` names the contract when the component's class does not (``Component.kind()``); ``table`` otherwise.
    """
    cls = type(component)
    name = getattr(component, "name", "") or cls.__name__
    kind = kind or (cls.kind() if hasattr(cls, "kind") else table)
    if registry is not None:
        from miro_core.provenance import of_instance

        record = of_instance(registry, table, component)
        if record and record.get("distribution") not in (None, "?"):
            return f"{kind} {name!r} ({record['distribution']} {record['distribution_version']})"
    return f"{kind} {name!r} ({cls.__module__}.{cls.__qualname__})"


def broken(who: str, contract: str, problem: str) -> PluginError:
    """The error for ``who`` (from :func:`describe`) breaking ``contract``, pointing at its conformance check."""
    return PluginError(f"{who} broke the {contract} contract: {problem}. Check it with "
                       f"miro_core.conformance.check_{contract.replace(' ', '_')}")
