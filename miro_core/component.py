"""The base every pluggable component shares: a name, a version and a validated options block.

Components are *light descriptors*: importing and registering one must not import torch or load
weights, so that ``miro plugins`` answers instantly. Heavy work happens in methods (``load``,
``build``, ``score``), which import what they need when called.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from miro_core.errors import ConfigError


class ComponentOptions(BaseModel):
    """Options of one component. Unknown keys are errors, so a typo never passes silently, and so are NaN and
    infinite numbers (``--strategy-option scale=.nan`` would otherwise turn guidance off without a word)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


class Component:
    """A named, versioned implementation of one of the core contracts."""

    #: The name users type on the command line (``--rewards shapes-alignment``).
    name: ClassVar[str] = ""
    #: Version of the component's behaviour; recorded next to every output it contributes to.
    version: ClassVar[str] = "1"
    #: One line shown by ``miro plugins``.
    description: ClassVar[str] = ""
    #: The pydantic model that validates this component's options block.
    Options: ClassVar[type[ComponentOptions]] = ComponentOptions

    def __init__(self, options: ComponentOptions | dict[str, Any] | None = None) -> None:
        self.options = self.validate_options(options)

    @classmethod
    def validate_options(cls, options: ComponentOptions | dict[str, Any] | None) -> Any:
        """Validate a raw options mapping, naming the component in the error."""
        if isinstance(options, cls.Options):
            return options
        if options and cls.Options.model_config.get("extra") not in ("allow", "forbid"):
            # pydantic ignores unknown keys unless told otherwise: a plugin's own Options model that does not
            # extend ComponentOptions would let a typo pass silently
            known = {key for name, info in cls.Options.model_fields.items() for key in (name, info.alias) if key}
            unknown = sorted(str(key) for key in dict(options) if key not in known)
            if unknown:
                raise ConfigError(
                    f"invalid options for {cls.kind()} {cls.name!r}: {', '.join(unknown)}: Extra inputs are not "
                    f"permitted; known: {', '.join(sorted(cls.Options.model_fields)) or 'none'}"
                )
        try:
            return cls.Options(**(dict(options) if options else {}))
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(options)'}: {e['msg']}" for e in err.errors()
            )
            raise ConfigError(f"invalid options for {cls.kind()} {cls.name!r}: {problems}") from None

    @classmethod
    def kind(cls) -> str:
        """The contract this component implements, for messages ("reward", "backbone", ...)."""
        return "component"
