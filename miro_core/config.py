"""Configs: pydantic models filled from a YAML file, then overridden by command-line options.

The precedence is: model defaults < YAML file < command-line options. Every error names the file
and the offending key. The resolved config is written next to each output (``config.json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from miro_core.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"config file {path} is not a file; pass a YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8"
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must contain a mapping at the top level")
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_config(model: type[M], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> M:
    """Validate defaults < file < overrides (``None`` values in overrides mean "not given")."""
    data = read_yaml(path) if path else {}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    data = deep_merge(data, given)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        where = f"config file {path}" if path else "options"
        problems = [(tuple(e["loc"]), e["msg"]) for e in err.errors()]
        text = "; ".join(f"{'.'.join(str(p) for p in loc)}: {msg}" for loc, msg in problems)
        raise ConfigValidationError(f"invalid {where}: {text}", problems, path, set(given)) from None


class ConfigValidationError(ConfigError):
    """A config that does not validate, with each problem's field path, so the CLI can name its option."""

    def __init__(
        self, message: str, problems: list[tuple[tuple[Any, ...], str]], path: str | Path | None, given: set[str]
    ) -> None:
        super().__init__(message)
        #: ``(field path, pydantic message)`` per problem.
        self.problems = problems
        #: The YAML file, if one was read.
        self.path = path
        #: Top-level fields set on the command line (the others came from the file or the defaults).
        self.given = given
