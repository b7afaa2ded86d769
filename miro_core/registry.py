"""Name -> class tables for each contract, filled by the plugin hooks.

Keyed by the class's ``name`` attribute (like hatchling); a second registration of a name is an error
that names both providers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from miro_core.autoencoder import Autoencoder
from miro_core.backbone import Backbone
from miro_core.binning import Binner
from miro_core.component import Component
from miro_core.errors import DuplicateNameError, PluginError, UnknownComponentError
from miro_core.guidance import GuidanceStrategy
from miro_core.rewards import RewardModel
from miro_core.sampler import Sampler
from miro_core.text_encoder import TextEncoder

C = TypeVar("C", bound=Component)


class ComponentTable(Generic[C]):
    """All registered implementations of one contract."""

    def __init__(self, kind: str, base: type[C]) -> None:
        self.kind = kind
        self.base = base
        self._classes: dict[str, type[C]] = {}
        self._providers: dict[str, str] = {}

    def check(self, cls: Any, provider: str) -> type[C]:
        """Validate a class before registration, with a message naming the plugin."""
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise PluginError(
                f"plugin {provider!r} registered {cls!r} as a {self.kind}, "
                f"but it is not a subclass of {self.base.__module__}.{self.base.__name__}"
            )
        if not cls.name:
            raise PluginError(f"plugin {provider!r} registered {cls.__name__} without a `name`")
        if cls.name in self._classes:
            raise DuplicateNameError(
                f"{self.kind} name {cls.name!r} is registered twice: by plugin {self._providers[cls.name]!r} "
                f"({self._classes[cls.name].__module__}) and by plugin {provider!r} ({cls.__module__}); "
                "uninstall one, or block it with MIRO_BLOCK_PLUGINS"
            )
        return cls

    def add(self, cls: type[C], provider: str) -> None:
        self.check(cls, provider)
        self._classes[cls.name] = cls
        self._providers[cls.name] = provider

    def get(self, name: str) -> type[C]:
        try:
            return self._classes[name]
        except KeyError:
            known = ", ".join(sorted(self._classes)) or "none"
            raise UnknownComponentError(
                f"unknown {self.kind} {name!r}; installed: {known} (see `miro plugins`)"
            ) from None

    def create(self, name: str, options: dict[str, Any] | None = None) -> C:
        return self.get(name)(options)

    def provider(self, name: str) -> str:
        return self._providers[name]

    def names(self) -> list[str]:
        return sorted(self._classes)

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def as_dict(self) -> dict[str, type[C]]:
        return dict(self._classes)


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

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "hooks": self.hooks,
            "provides": self.provides,
            "error": self.error,
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

    @property
    def failures(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.error]

    def provenance(self, table: str, name: str) -> dict[str, str]:
        """Which code a component is: recorded next to every output it contributes to.

        ``table`` is a Registry attribute (``"rewards"``, ``"binners"``, ...). Returns the component's
        name and version, the plugin (entry point) that registered it, and that plugin's distribution
        and distribution version, so an output folder shows exactly which installed code produced it.
        """
        components: ComponentTable[Any] = getattr(self, table)
        cls = components.get(name)
        plugin = components.provider(name)
        info = next((p for p in self.plugins if p.name == plugin and not p.error), None)
        return {
            "name": name,
            "version": str(cls.version),
            "plugin": plugin,
            "distribution": info.distribution if info else "?",
            "distribution_version": info.version if info else "?",
        }
