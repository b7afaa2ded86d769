"""Name -> class tables for each contract, filled by the plugin hooks.

Keyed by the class's ``name`` attribute (like hatchling). Two distributions may register the same
name: nothing is replaced, both are kept, ``miro plugins`` shows them as conflicting, and *using* the
bare name is an error naming both distributions. A qualified name, ``DISTRIBUTION:NAME`` (or
``PLUGIN:NAME``, the entry point's name), picks one of them wherever a component name is accepted.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from miro_core.autoencoder import Autoencoder
from miro_core.backbone import Backbone
from miro_core.binning import Binner
from miro_core.component import Component
from miro_core.errors import DuplicateNameError, MiroError, PluginError, UnknownComponentError
from miro_core.guidance import GuidanceStrategy
from miro_core.rewards import RewardModel
from miro_core.sampler import Sampler
from miro_core.text_encoder import TextEncoder

C = TypeVar("C", bound=Component)

#: Separates a distribution (or plugin) from a component name: ``miro-reward-foo:colorfulness``.
QUALIFIER = ":"


def split_qualified(name: str) -> tuple[str | None, str]:
    """``"dist:name"`` -> ``("dist", "name")``; ``"name"`` -> ``(None, "name")``."""
    qualifier, sep, bare = name.rpartition(QUALIFIER)
    return (qualifier, bare) if sep else (None, name)


@dataclass(frozen=True)
class Registration:
    """One class registered under a name, and which installed code registered it."""

    cls: type[Any]
    plugin: str
    distribution: str = "?"
    distribution_version: str = "?"
    #: Registered by the core itself (``MIRO_BLOCK_PLUGINS`` cannot block it).
    builtin: bool = False

    def describe(self) -> str:
        return (
            f"{self.distribution} {self.distribution_version} "
            f"(plugin {self.plugin!r}, {self.cls.__module__}.{self.cls.__qualname__})"
        )

    def matches(self, qualifier: str) -> bool:
        return qualifier in (self.distribution, self.plugin)

    def record(self) -> dict[str, str]:
        """What output folders record of a component: name, version, plugin, distribution and its version."""
        return {
            "name": self.cls.name,
            "version": str(self.cls.version),
            "plugin": self.plugin,
            "distribution": self.distribution,
            "distribution_version": self.distribution_version,
        }


class ComponentTable(Generic[C]):
    """All registered implementations of one contract."""

    def __init__(self, kind: str, base: type[C]) -> None:
        self.kind = kind
        self.base = base
        self._entries: dict[str, list[Registration]] = {}

    def check(self, cls: Any, provider: str) -> type[C]:
        """Validate a class before registration, with a message naming the plugin."""
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise PluginError(
                f"plugin {provider!r} registered {cls!r} as a {self.kind}, "
                f"but it is not a subclass of {self.base.__module__}.{self.base.__name__}"
            )
        name = cls.name
        if not name or not isinstance(name, str):
            raise PluginError(f"plugin {provider!r} registered {cls.__name__} without a `name`")
        if QUALIFIER in name or "," in name or name != name.strip() or any(c.isspace() for c in name):
            raise PluginError(
                f"plugin {provider!r} registered {self.kind} {name!r}: a name may not contain spaces, "
                f"',' or {QUALIFIER!r} (they separate lists and qualified names on the command line)"
            )
        return cls

    def add(
        self, cls: type[C], provider: str, distribution: str = "?", distribution_version: str = "?",
        builtin: bool = False,
    ) -> None:
        """Register ``cls``; a name another plugin already has is kept beside it, never replaced."""
        self.check(cls, provider)
        entries = self._entries.setdefault(cls.name, [])
        if any(entry.plugin == provider and entry.distribution == distribution for entry in entries):
            raise DuplicateNameError(f"plugin {provider!r} registers {self.kind} {cls.name!r} twice")
        entries.append(Registration(cls, provider, distribution, distribution_version, builtin))

    # -- lookups ----------------------------------------------------------------------------------
    def registrations(self, name: str) -> list[Registration]:
        """Every registration of a bare name (two or more means a conflict)."""
        return list(self._entries.get(split_qualified(name)[1], []))

    def resolve(self, name: str) -> Registration:
        """The one registration ``name`` (bare or ``DIST:NAME``) denotes, or a clear error."""
        qualifier, bare = split_qualified(name)
        entries = self._entries.get(bare, [])
        if not entries:
            known = ", ".join(self.names()) or "none"
            raise UnknownComponentError(f"unknown {self.kind} {bare!r}; installed: {known} (see `miro plugins`)")
        if qualifier is not None:
            chosen = [e for e in entries if e.matches(qualifier)]
            if not chosen:
                offered = ", ".join(f"{e.distribution}{QUALIFIER}{bare}" for e in entries)
                raise UnknownComponentError(
                    f"no {self.kind} {bare!r} from {qualifier!r}; it is provided by: {offered}"
                )
            if len(chosen) > 1:  # two entry points of one distribution: the plugin name tells them apart
                offered = " or ".join(f"{e.plugin}{QUALIFIER}{bare}" for e in chosen)
                raise DuplicateNameError(
                    f"{self.kind} {bare!r} is registered by several plugins of {qualifier!r}; use {offered}"
                )
            return chosen[0]
        if len(entries) > 1:
            raise DuplicateNameError(self.conflict_message(bare))
        return entries[0]

    def conflict_message(self, name: str) -> str:
        entries = self._entries[name]
        providers = " and ".join(e.describe() for e in entries)
        qualified = " or ".join(f"{self.qualified_name(e)!r}" for e in entries)
        blockable = [e for e in entries if not e.builtin]  # built-ins always load
        block = " or ".join(f"MIRO_BLOCK_PLUGINS={self.qualified_name(e).rpartition(QUALIFIER)[0]}" for e in blockable)
        if len(blockable) == len(entries):
            way_out = f"block the other ({block}), or uninstall one"
        else:
            way_out = f"block or uninstall the plugin ({block}; built-in components cannot be blocked)"
        return (
            f"{self.kind} name {name!r} is provided by more than one distribution: {providers}; "
            f"pick one with a qualified name ({qualified}), or {way_out}"
        )

    def qualified_name(self, entry: Registration) -> str:
        """``DIST:NAME``, or ``PLUGIN:NAME`` when the distribution alone does not tell it apart."""
        same_dist = [e for e in self._entries[entry.cls.name] if e.distribution == entry.distribution]
        qualifier = entry.distribution if len(same_dist) == 1 else entry.plugin
        return f"{qualifier}{QUALIFIER}{entry.cls.name}"

    def conflicts(self) -> dict[str, list[Registration]]:
        """Names registered by more than one plugin."""
        return {name: list(entries) for name, entries in sorted(self._entries.items()) if len(entries) > 1}

    def get(self, name: str) -> type[C]:
        return self.resolve(name).cls

    def create(self, name: str, options: dict[str, Any] | None = None) -> C:
        """An instance of ``name``; a plugin whose constructor raises is named, not reported as a core bug."""
        entry = self.resolve(name)
        try:
            return entry.cls(options)
        except MiroError:
            raise
        except Exception as err:
            raise PluginError(
                f"{self.kind} {entry.cls.name!r} from {entry.describe()} failed to initialise: "
                f"{type(err).__name__}: {err}"
            ) from err

    def provider(self, name: str) -> str:
        """The plugin (entry point name) that registered ``name``."""
        return self.resolve(name).plugin

    def names(self) -> list[str]:
        """Every bare name, once (conflicting names included)."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        qualifier, bare = split_qualified(name)
        entries = self._entries.get(bare, [])
        return bool(entries) if qualifier is None else any(e.matches(qualifier) for e in entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def as_dict(self) -> Mapping[str, type[C]]:
        """A read-only name -> class view; looking up a conflicting name raises the conflict error."""
        return TableView(self)


class TableView(Mapping[str, Any]):
    """``as_dict()`` of a table: iterates bare names, resolves bare or qualified names on lookup."""

    def __init__(self, table: ComponentTable[Any]) -> None:
        self._table = table

    def __getitem__(self, name: str) -> Any:
        if name not in self._table:
            raise KeyError(name)
        return self._table.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._table

    def __iter__(self) -> Iterator[str]:
        return iter(self._table.names())

    def __len__(self) -> int:
        return len(self._table.names())


@dataclass
class PluginInfo:
    """One plugin as ``miro plugins`` shows it."""

    name: str
    distribution: str
    version: str
    module: str
    hooks: list[str] = field(default_factory=list)
    provides: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None
    #: Names this plugin shares with another plugin: "reward 'x' also provided by dist-b 1.0 (plugin 'b')".
    conflicts: list[str] = field(default_factory=list)
    #: Problems that do not stop the plugin from loading (e.g. a hook function without @hookimpl).
    warnings: list[str] = field(default_factory=list)
    #: Seconds spent importing the module and calling its hooks.
    load_seconds: float = 0.0
    #: Heavy libraries (torch, transformers, ...) that were first imported while loading this plugin.
    heavy_imports: list[str] = field(default_factory=list)
    #: Why this plugin slows down every command, or None.
    slow: str | None = None
    #: Where the plugin came from: "entry point", "built-in", or the --plugins-dir path.
    source: str = "entry point"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "hooks": self.hooks,
            "provides": self.provides,
            "error": self.error,
            "conflicts": self.conflicts,
            "warnings": self.warnings,
            "load_seconds": round(self.load_seconds, 4),
            "heavy_imports": self.heavy_imports,
            "slow": self.slow,
            "source": self.source,
        }


#: hook name -> (attribute of Registry, kind shown to users, base class)
HOOK_TABLES: dict[str, tuple[str, str, type[Component]]] = {
    "register_rewards": ("rewards", "reward", RewardModel),
    "register_binners": ("binners", "binner", Binner),
    "register_backbones": ("backbones", "backbone", Backbone),
    "register_text_encoders": ("text_encoders", "text encoder", TextEncoder),
    "register_autoencoders": ("autoencoders", "autoencoder", Autoencoder),
    "register_guidance_strategies": ("guidance", "guidance strategy", GuidanceStrategy),
    "register_samplers": ("samplers", "sampler", Sampler),
}


class Registry:
    """Every component the loaded plugins provide, plus what failed to load and why."""

    def __init__(self) -> None:
        self.rewards: ComponentTable[RewardModel] = ComponentTable("reward", RewardModel)
        self.binners: ComponentTable[Binner] = ComponentTable("binner", Binner)
        self.backbones: ComponentTable[Backbone] = ComponentTable("backbone", Backbone)
        self.text_encoders: ComponentTable[TextEncoder] = ComponentTable("text encoder", TextEncoder)
        self.autoencoders: ComponentTable[Autoencoder] = ComponentTable("autoencoder", Autoencoder)
        self.guidance: ComponentTable[GuidanceStrategy] = ComponentTable("guidance strategy", GuidanceStrategy)
        self.samplers: ComponentTable[Sampler] = ComponentTable("sampler", Sampler)
        self.plugins: list[PluginInfo] = []

    def table(self, hook_name: str) -> ComponentTable[Any]:
        return getattr(self, HOOK_TABLES[hook_name][0])

    def tables(self) -> dict[str, ComponentTable[Any]]:
        """Registry attribute -> table, for every contract."""
        return {attribute: getattr(self, attribute) for attribute, _, _ in HOOK_TABLES.values()}

    @property
    def failures(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.error]

    def problems(self) -> list[str]:
        """Everything strict mode (MIRO_STRICT_PLUGINS=1) refuses: failures, conflicts, hook warnings."""
        found = [f"plugin {p.name!r} ({p.distribution}) not loaded: {p.error}" for p in self.failures]
        for table in self.tables().values():
            found += [table.conflict_message(name) for name in table.conflicts()]
        found += [f"plugin {p.name!r} ({p.distribution}): {w}" for p in self.plugins for w in p.warnings]
        return found

    def note_conflicts(self) -> None:
        """Tell each plugin involved in a name conflict which other plugin shares the name."""
        by_plugin = {(p.name, p.distribution): p for p in self.plugins if not p.error}
        for table in self.tables().values():
            for name, entries in table.conflicts().items():
                for entry in entries:
                    info = by_plugin.get((entry.plugin, entry.distribution))
                    if info is None:
                        continue
                    others = ", ".join(
                        f"{o.distribution} {o.distribution_version} (plugin {o.plugin!r})"
                        for o in entries
                        if o is not entry
                    )
                    info.conflicts.append(
                        f"{table.kind} {name!r} also provided by {others}; use {table.qualified_name(entry)!r}"
                    )

    def provenance(self, table: str, name: str) -> dict[str, str]:
        """Which code a component is: recorded next to every output it contributes to.

        ``table`` is a Registry attribute (``"rewards"``, ``"binners"``, ...) and ``name`` a bare or
        qualified (``DIST:NAME``) component name. Returns the component's name and version, the plugin
        (entry point) that registered it, and that plugin's distribution and distribution version, so an
        output folder shows exactly which installed code produced it. A conflicting bare name raises the
        same error as using it.
        """
        components: ComponentTable[Any] = getattr(self, table)
        return components.resolve(name).record()
