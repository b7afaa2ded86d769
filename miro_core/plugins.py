"""Discovers plugins through the ``miro`` entry point group (and plugin folders) and fills a :class:`Registry`.

Built-in components are registered through the very same hooks as third-party ones. Behaviour,
modelled on llm, tox, hatchling and datasette:

- ``MIRO_LOAD_PLUGINS=a,b`` loads only those third-party plugins (entry point or distribution
  names); an empty value loads none. ``MIRO_BLOCK_PLUGINS=a,b`` skips those.
- ``MIRO_PLUGINS_DIR=DIR[:DIR...]`` (or ``miro --plugins-dir DIR``) loads plugins that are not installed,
  for development: every ``*.py`` module in DIR, or, when DIR holds a ``pyproject.toml``, the modules its
  ``[project.entry-points.miro]`` table names.
- A plugin that fails to import (any exception, ``SystemExit`` included), declares an incompatible
  ``MIRO_API``, implements a misspelled hook (pluggy's ``check_pending``) or registers something invalid is
  reported by name and left out; everything else keeps working. A function that looks like a hook but
  lacks ``@hookimpl`` is reported as a warning. Two plugins registering one name are both kept and
  reported as conflicting; using that name is an error (see :mod:`miro_core.registry`).
- ``MIRO_STRICT_PLUGINS=1`` turns every failure, conflict and warning into an error: :func:`check_strict`.
- Each plugin's load time, and any heavy library it imports, is recorded; a slow plugin is flagged.
- Entry points must name *modules* (pluggy would register a class object as-is otherwise).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import os
import re
import sys
import time
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import pluggy

from miro_core import API_VERSION, __version__, hookspecs
from miro_core.errors import PluginError
from miro_core.registry import HOOK_TABLES, PluginInfo, Registry

ENTRY_POINT_GROUP = "miro"
BUILTIN_DISTRIBUTION = "miro"
BUILTIN_MODULES = (
    "miro_core.builtin.binners",
    "miro_core.builtin.guidance",
    "miro_core.builtin.samplers",
    "miro_core.builtin.autoencoders",
)
#: A plugin slower than this to import and register is flagged by ``miro plugins``.
SLOW_SECONDS = 0.5
#: Libraries a plugin must not import at load time (they make every command slow to start).
HEAVY_MODULES = (
    "torch",
    "torchvision",
    "transformers",
    "diffusers",
    "open_clip",
    "timm",
    "accelerate",
    "tensorflow",
    "jax",
    "cv2",
    "sklearn",
    "gradio",
)
PLUGINS_DIR_ENV = "MIRO_PLUGINS_DIR"


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def strict_mode() -> bool:
    return os.environ.get("MIRO_STRICT_PLUGINS", "").lower() in {"1", "true", "yes"}


def _selected(names: Iterable[str]) -> bool:
    allowed = _env_list("MIRO_LOAD_PLUGINS")
    blocked = _env_list("MIRO_BLOCK_PLUGINS") or []
    names = set(names)
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


def describe_exception(err: BaseException) -> str:
    """``SystemExit(3)`` says what it means; other exceptions are ``Type: message``."""
    if isinstance(err, SystemExit):
        return f"SystemExit({err.code!r}): the plugin called sys.exit()"
    return f"{type(err).__name__}: {err}"


def lookalike_hooks(module: Any) -> list[str]:
    """Warnings for functions named like a hook (or a misspelling of one) that lack ``@hookimpl``.

    pluggy only sees decorated functions, so ``def register_reward(register)`` without the decorator is
    silently never called; this finds it.
    """
    hooks = list(HOOK_TABLES)
    found = []
    for attribute, value in sorted(vars(module).items()):
        if attribute.startswith("_") or not inspect.isfunction(value):
            continue
        if hasattr(value, f"{hookspecs.PROJECT}_impl"):
            continue
        close = difflib.get_close_matches(attribute, hooks, 1, 0.8)
        match = attribute if attribute in hooks else (close[0] if close else None)
        if match is None:
            continue
        fix = "decorate it with @hookimpl (from miro_core.hookspecs import hookimpl)"
        if match != attribute:
            fix += f" and rename it to {match}"
        found.append(f"function {attribute}() looks like the hook {match} but is never called: {fix}")
    return found


def _suggest_hook(name: str) -> str:
    match = difflib.get_close_matches(name, list(HOOK_TABLES), 1, 0.6)
    return f" (did you mean {match[0]}?)" if match else ""


class _Timer:
    """Seconds and newly imported heavy modules while loading one plugin."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.modules_before = set(sys.modules)

    def finish(self, info: PluginInfo) -> None:
        info.load_seconds += time.perf_counter() - self.started
        new = set(sys.modules) - self.modules_before
        info.heavy_imports = sorted({m.split(".")[0] for m in new if m.split(".")[0] in HEAVY_MODULES})
        reasons = []
        if info.heavy_imports:
            reasons.append(f"imports {', '.join(info.heavy_imports)} at load time")
        if info.load_seconds > SLOW_SECONDS:
            reasons.append(f"took {info.load_seconds:.2f} s to load (more than {SLOW_SECONDS} s)")
        if reasons:
            info.slow = (
                "; ".join(reasons) + ": every miro command pays for it; import heavy libraries inside "
                "load/score/build instead"
            )


class PluginLoader:
    """Registers plugin modules one at a time, so one bad plugin is isolated from the rest."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.registry = Registry()

    def load(
        self,
        name: str,
        importer: Callable[[], Any],
        distribution: str,
        version: str,
        *,
        builtin: bool = False,
        source: str = "entry point",
    ) -> PluginInfo:
        """Import a plugin module with ``importer`` and register it; every failure is recorded, not raised."""
        timer = _Timer()
        info = PluginInfo(name=name, distribution=distribution, version=version, module="?", source=source)
        self.registry.plugins.append(info)
        try:
            module = importer()
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # noqa: BLE001 - a broken plugin (even one calling sys.exit) must not break the CLI
            info.error = f"import failed: {describe_exception(err)}"
            timer.finish(info)
            return info
        self._register_into(info, module, builtin=builtin)
        timer.finish(info)
        return info

    def add_module(
        self, name: str, module: Any, distribution: str, version: str, *, builtin: bool = False, source: str = ""
    ) -> PluginInfo:
        """Register an already imported module (built-ins, tests)."""
        return self.load(name, lambda: module, distribution, version, builtin=builtin, source=source or "module")

    def _register_into(self, info: PluginInfo, module: Any, *, builtin: bool) -> None:
        info.module = getattr(module, "__name__", "?")
        try:
            self._register(info, module, builtin=builtin)
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # noqa: BLE001 - any plugin failure is reported, not raised
            info.error = str(err) if isinstance(err, PluginError) else describe_exception(err)
            info.provides = {}
            return
        if isinstance(module, types.ModuleType):
            info.warnings += lookalike_hooks(module)

    def _register(self, info: PluginInfo, module: Any, *, builtin: bool) -> None:
        if not isinstance(module, types.ModuleType):
            raise PluginError(f"entry point {info.name!r} names {module!r}; it must name a module")
        if not builtin:
            problem = _api_problem(module)
            if problem:
                raise PluginError(problem)
        if self.manager.is_registered(module):
            owner = self.manager.get_name(module)
            raise PluginError(f"module {module.__name__} is already loaded as plugin {owner!r}")
        # unique within the manager even when two distributions use the same entry point name
        self.manager.register(module, name=f"{info.distribution}/{info.name}/{len(self.registry.plugins)}")
        try:
            self.manager.check_pending()
        except pluggy.PluginValidationError as err:
            self.manager.unregister(module)
            named = re.search(r"unknown hook '([^']+)'", str(err))
            suggestion = _suggest_hook(named.group(1)) if named else ""
            raise PluginError(f"implements an unknown hook: {err}{suggestion}") from None
        try:
            staged = self._collect(info, module)
        except BaseException:
            self.manager.unregister(module)
            raise
        for hook_name, classes in staged.items():
            table = self.registry.table(hook_name)
            for cls in classes:
                table.add(cls, info.name, info.distribution, info.version, builtin=builtin)
            info.provides[HOOK_TABLES[hook_name][1]] = sorted(cls.name for cls in classes)

    def _collect(self, info: PluginInfo, module: Any) -> dict[str, list[type[Any]]]:
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
                checked = _table.check(cls, info.name)
                if checked.name in _seen:
                    raise PluginError(f"registers {_table.kind} {checked.name!r} twice")
                _seen.add(checked.name)
                _classes.append(checked)

            for impl in impls:
                impl.function(register=register)
            staged[hook_name] = classes
        return staged


def distribution_is_external(distribution: str) -> bool:
    return distribution != BUILTIN_DISTRIBUTION


def _distribution_of(entry_point: EntryPoint) -> tuple[str, str]:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "?", "?"
    return dist.metadata["Name"], dist.version


# -- plugin folders (development, no packaging) ---------------------------------------------------------
@dataclass(frozen=True)
class FolderPlugin:
    """One plugin module found in a plugins folder."""

    name: str
    module: str
    distribution: str
    version: str
    path: Path
    import_root: Path


def plugin_dirs(extra: Sequence[str | Path] = ()) -> list[Path]:
    """Folders named by ``MIRO_PLUGINS_DIR`` (``os.pathsep``-separated), then ``extra``."""
    value = os.environ.get(PLUGINS_DIR_ENV, "")
    named = [part for part in value.split(os.pathsep) if part.strip()] + [str(p) for p in extra]
    return [Path(p).expanduser() for p in dict.fromkeys(named)]


def folder_plugins(directory: Path) -> Iterator[FolderPlugin]:
    """The plugins of one folder: its pyproject's ``miro`` entry points, or else its ``*.py`` modules."""
    pyproject = directory / "pyproject.toml"
    if pyproject.is_file():
        try:
            import tomllib
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ImportError:
                raise PluginError(f"reading {pyproject} needs Python 3.11 or `pip install tomli`") from None
        try:
            project = tomllib.loads(pyproject.read_text()).get("project", {})
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise PluginError(f"{pyproject} is not valid TOML: {err}") from None
        root = directory / "src" if (directory / "src").is_dir() else directory
        group = project.get("entry-points", {}).get(ENTRY_POINT_GROUP, {})
        if not group:
            raise PluginError(f"{pyproject} declares no [project.entry-points.{ENTRY_POINT_GROUP}] table")
        for name, target in group.items():
            module = str(target).partition(":")[0].strip()
            yield FolderPlugin(
                name, module, str(project.get("name", directory.name)), str(project.get("version", "dev")),
                directory, root,
            )
        return
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        yield FolderPlugin(path.stem, path.stem, path.stem, "dev", path, directory)


def _import_from_folder(plugin: FolderPlugin) -> Any:
    root = str(plugin.import_root.resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    module = importlib.import_module(plugin.module)
    origin = Path(getattr(module, "__file__", "") or "").resolve()
    if plugin.import_root.resolve() not in origin.parents:
        raise PluginError(
            f"a module named {plugin.module!r} is already imported from {origin}; rename {plugin.path}"
        )
    return module


def _load_folders(loader: PluginLoader, directories: Sequence[Path]) -> None:
    for directory in directories:
        if not directory.is_dir():
            loader.registry.plugins.append(
                PluginInfo(
                    name=str(directory), distribution="?", version="?", module="?", source=str(directory),
                    error=f"plugins folder {directory} does not exist (MIRO_PLUGINS_DIR / --plugins-dir)",
                )
            )
            continue
        try:
            found = list(folder_plugins(directory))
        except PluginError as err:
            loader.registry.plugins.append(
                PluginInfo(name=str(directory), distribution="?", version="?", module="?", source=str(directory),
                           error=str(err))
            )
            continue
        for plugin in found:
            if not _selected({plugin.name, plugin.distribution}):
                continue
            already = sys.modules.get(plugin.module)
            if already is not None and loader.manager.is_registered(already):
                continue  # also installed (e.g. `pip install -e` of the same folder): loaded once, as installed
            loader.load(
                plugin.name,
                functools.partial(_import_from_folder, plugin),
                plugin.distribution,
                plugin.version,
                source=str(plugin.path),
            )


# -- the registry -----------------------------------------------------------------------------------------
def build_registry(
    *,
    load_entry_points: bool = True,
    extra_plugins: Sequence[tuple[str, Any]] = (),
    entry_point_list: Iterable[EntryPoint] | None = None,
    plugins_dirs: Sequence[str | Path] | None = None,
) -> Registry:
    """Load built-ins, then entry point plugins, then plugin folders, then ``extra_plugins`` (for tests).

    ``plugins_dirs`` defaults to ``MIRO_PLUGINS_DIR`` when entry points are loaded. Never raises for a
    plugin's fault: failures, conflicts and warnings are recorded (see :func:`check_strict`).
    """
    loader = PluginLoader()
    for module_name in BUILTIN_MODULES:
        loader.load(
            module_name.rsplit(".", 1)[-1],
            functools.partial(importlib.import_module, module_name),
            BUILTIN_DISTRIBUTION,
            __version__,
            builtin=True,
            source="built-in",
        )
    if load_entry_points:
        found = entry_point_list if entry_point_list is not None else entry_points(group=ENTRY_POINT_GROUP)
        for entry_point in sorted(found, key=lambda ep: (ep.name, _distribution_of(ep)[0])):
            distribution, version = _distribution_of(entry_point)
            if not _selected({entry_point.name, distribution}):
                continue
            loader.load(entry_point.name, entry_point.load, distribution, version)
    directories = plugin_dirs(plugins_dirs or ()) if plugins_dirs is not None or load_entry_points else []
    _load_folders(loader, directories)
    for name, module in extra_plugins:
        loader.add_module(name, module, getattr(module, "__distribution__", name), "test", source="module")
    loader.registry.note_conflicts()
    return loader.registry


def check_strict(registry: Registry) -> None:
    """Under ``MIRO_STRICT_PLUGINS=1``, raise one PluginError listing every plugin problem."""
    if not strict_mode():
        return
    problems = registry.problems()
    if problems:
        listed = "; ".join(problems)
        raise PluginError(
            f"MIRO_STRICT_PLUGINS=1 and {len(problems)} plugin problem(s): {listed} (see `miro plugins`)"
        )


@functools.lru_cache(maxsize=1)
def loaded_registry() -> Registry:
    """The process-wide registry of installed plugins, loaded once, problems and all (``miro plugins``)."""
    return build_registry()


def get_registry() -> Registry:
    """The process-wide registry of installed plugins; strict mode raises on any plugin problem."""
    registry = loaded_registry()
    check_strict(registry)
    return registry


def reset_registry() -> None:
    """Forget the cached registry (tests change the environment and reload)."""
    loaded_registry.cache_clear()
