"""Discovers plugins through the ``miro`` entry point group and fills a :class:`Registry`.

Built-in components are registered through the very same hooks as third-party ones. Behaviour,
modelled on llm, tox and hatchling:

- ``MIRO_LOAD_PLUGINS=a,b`` loads only those third-party plugins (entry point or distribution
  names); an empty value loads none. ``MIRO_BLOCK_PLUGINS=a,b`` skips those.
- A plugin that fails to import, declares an incompatible ``MIRO_API``, implements a misspelled hook
  (caught by pluggy's ``check_pending``) or registers a duplicate name is reported by name and left
  out; everything else keeps working. ``MIRO_STRICT_PLUGINS=1`` turns any such failure into an error.
- Entry points must name *modules* (pluggy would register a class object as-is otherwise).
"""

from __future__ import annotations

import functools
import importlib
import os
import types
from collections.abc import Iterable, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from miro_core import API_VERSION, __version__, hookspecs
from miro_core.errors import PluginError
from miro_core.registry import HOOK_TABLES, PluginInfo, Registry

ENTRY_POINT_GROUP = "miro"
BUILTIN_MODULES = (
    "miro_core.builtin.binners",
    "miro_core.builtin.guidance",
    "miro_core.builtin.samplers",
    "miro_core.builtin.autoencoders",
)


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def strict_mode() -> bool:
    return os.environ.get("MIRO_STRICT_PLUGINS", "").lower() in {"1", "true", "yes"}


def _selected(entry_point: EntryPoint, distribution: str) -> bool:
    allowed = _env_list("MIRO_LOAD_PLUGINS")
    blocked = _env_list("MIRO_BLOCK_PLUGINS") or []
    names = {entry_point.name, distribution}
    if names & set(blocked):
        return False
    return allowed is None or bool(names & set(allowed))


def _api_problem(module: types.ModuleType) -> str | None:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    declared = getattr(module, "MIRO_API", None)
    if declared is None:
        return f"declares no MIRO_API (add MIRO_API = \">=1,<2\" to {module.__name__})"
    try:
        spec = SpecifierSet(str(declared))
    except InvalidSpecifier:
        return f"MIRO_API {declared!r} is not a valid version specifier"
    if API_VERSION not in spec:
        return f"needs miro plugin API {declared}, but this miro provides API {API_VERSION}"
    return None


class PluginLoader:
    """Registers plugin modules one at a time, so one bad plugin is isolated from the rest."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.registry = Registry()

    def add_module(self, name: str, module: Any, distribution: str, version: str) -> PluginInfo:
        info = PluginInfo(
            name=name, distribution=distribution, version=version, module=getattr(module, "__name__", "?")
        )
        self.registry.plugins.append(info)
        try:
            self._register(name, module, info)
        except Exception as err:  # noqa: BLE001 - any plugin failure is reported, not raised
            info.error = str(err) if isinstance(err, PluginError) else f"{type(err).__name__}: {err}"
            if strict_mode():
                raise PluginError(f"plugin {name!r} ({distribution}): {info.error}") from err
        return info

    def add_failure(self, name: str, distribution: str, version: str, error: str) -> None:
        self.registry.plugins.append(
            PluginInfo(name=name, distribution=distribution, version=version, module="?", error=error)
        )
        if strict_mode():
            raise PluginError(f"plugin {name!r} ({distribution}): {error}")

    def _register(self, name: str, module: Any, info: PluginInfo) -> None:
        if not isinstance(module, types.ModuleType):
            raise PluginError(f"entry point {name!r} names {module!r}; it must name a module")
        if distribution_is_external(info.distribution):
            problem = _api_problem(module)
            if problem:
                raise PluginError(problem)
        self.manager.register(module, name=name)
        try:
            self.manager.check_pending()
        except pluggy.PluginValidationError as err:
            self.manager.unregister(module)
            raise PluginError(f"implements an unknown hook: {err}") from None
        staged = self._collect(name, module, info)
        for hook_name, classes in staged.items():
            table = self.registry.table(hook_name)
            for cls in classes:
                table.add(cls, name)
            info.provides[HOOK_TABLES[hook_name][1]] = sorted(cls.name for cls in classes)

    def _collect(self, name: str, module: Any, info: PluginInfo) -> dict[str, list[type[Any]]]:
        """Call this plugin's hooks alone and validate everything before committing any of it."""
        staged: dict[str, list[type[Any]]] = {}
        for hook_name in HOOK_TABLES:
            impls = [i for i in getattr(self.manager.hook, hook_name).get_hookimpls() if i.plugin is module]
            if not impls:
                continue
            info.hooks.append(hook_name)
            classes: list[type[Any]] = []
            table = self.registry.table(hook_name)
            seen: set[str] = set()

            def register(
                cls: Any, _classes: list[type[Any]] = classes, _seen: set[str] = seen, _table: Any = table
            ) -> None:
                checked = _table.check(cls, name)
                if checked.name in _seen:
                    raise PluginError(f"registers {_table.kind} {checked.name!r} twice")
                _seen.add(checked.name)
                _classes.append(checked)

            for impl in impls:
                impl.function(register=register)
            staged[hook_name] = classes
        return staged


def distribution_is_external(distribution: str) -> bool:
    return distribution != "miro"


def _distribution_of(entry_point: EntryPoint) -> tuple[str, str]:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "?", "?"
    return dist.metadata["Name"], dist.version


def build_registry(
    *,
    load_entry_points: bool = True,
    extra_plugins: Sequence[tuple[str, Any]] = (),
    entry_point_list: Iterable[EntryPoint] | None = None,
) -> Registry:
    """Load built-ins, then entry point plugins, then ``extra_plugins`` (name, module) for tests."""
    loader = PluginLoader()
    for module_name in BUILTIN_MODULES:
        loader.add_module(module_name.rsplit(".", 1)[-1], importlib.import_module(module_name), "miro", __version__)
    if load_entry_points:
        found = entry_point_list if entry_point_list is not None else entry_points(group=ENTRY_POINT_GROUP)
        for entry_point in sorted(found, key=lambda ep: ep.name):
            distribution, version = _distribution_of(entry_point)
            if not _selected(entry_point, distribution):
                continue
            try:
                module = entry_point.load()
            except Exception as err:  # noqa: BLE001 - a broken plugin must not break the CLI
                loader.add_failure(
                    entry_point.name, distribution, version, f"import failed: {type(err).__name__}: {err}"
                )
                continue
            loader.add_module(entry_point.name, module, distribution, version)
    for name, module in extra_plugins:
        loader.add_module(name, module, getattr(module, "__distribution__", name), "test")
    return loader.registry


@functools.lru_cache(maxsize=1)
def get_registry() -> Registry:
    """The process-wide registry of installed plugins (loaded once)."""
    return build_registry()


def reset_registry() -> None:
    """Forget the cached registry (tests change the environment and reload)."""
    get_registry.cache_clear()
