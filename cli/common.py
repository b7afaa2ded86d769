"""Helpers shared by CLI commands: user-facing errors, the registry, KEY=VALUE parsing."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import typer
from rich.console import Console

from miro_core.errors import MiroError

F = TypeVar("F", bound=Callable[..., Any])

console = Console(stderr=True)


def user_errors(func: F) -> F:
    """Print a MiroError as one red line and exit 1, instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MiroError as err:
            from rich.markup import escape

            console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def registry(warn: bool = True) -> Any:
    """The loaded plugin registry; failed plugins are named on stderr (see ``miro plugins``)."""
    from miro_core.plugins import get_registry

    reg = get_registry()
    if warn:
        for failure in reg.failures:
            from rich.markup import escape

            console.print(
                f"[yellow]warning:[/] plugin {failure.name!r} ({failure.distribution}) not loaded: "
                f"{escape(str(failure.error))}",
                highlight=False,
            )
    return reg


def parse_key_values(items: Iterable[str], option: str) -> dict[str, str]:
    """Parse repeated ``KEY=VALUE`` options into a dict, naming the option on error."""
    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MiroError(f"{option} expects KEY=VALUE, got {item!r}")
        parsed[key.strip()] = value.strip()
    return parsed


def parse_yaml_values(items: Iterable[str], option: str) -> dict[str, Any]:
    """``KEY=VALUE`` options with each value read as a YAML scalar (``3`` -> 3, ``true`` -> True)."""
    import yaml

    return {key: yaml.safe_load(value) for key, value in parse_key_values(items, option).items()}


def parse_float_map(items: Iterable[str], option: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in parse_key_values(items, option).items():
        try:
            out[key] = float(value)
        except ValueError:
            raise MiroError(f"{option} {key}={value!r}: the value must be a number") from None
    return out


def split_names(text: str | None) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def table_console() -> Console:
    """A stdout console for tables; wide when piped, so names are never cut in files and tests."""
    return Console(width=None if sys.stdout.isatty() else 200)


def echo(message: str) -> None:
    """Print a normal result line to stdout (kept separate from progress on stderr)."""
    sys.stdout.write(message + "\n")
