"""Helpers shared by CLI commands: user-facing errors, option checks, the registry, KEY=VALUE parsing.

Every command is wrapped in :func:`user_errors`, the one place where exceptions become messages: an input
or environment fault (a MiroError, a read-only or full disk, a missing fsspec backend, an unreachable URL,
an option out of range) is printed as ONE ``error:`` line naming the option, file or URL and what to do,
and the command exits 1. ``miro --debug`` (or ``MIRO_DEBUG=1``) prints the traceback too.

Exit codes: 0 success; 1 error (bad input, environment fault, plugin problem under MIRO_STRICT_PLUGINS=1,
or an unexpected failure); 2 usage error found by the option parser (unknown option, missing argument,
value outside an option's range); 130 interrupted (Ctrl+C). Commands that finish with some data skipped
document their own code in docs/cli.md.
"""

from __future__ import annotations

import errno
import functools
import math
import os
import re
import shutil
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click
import typer
from rich.console import Console

from miro_core.errors import ConfigError, MiroError

F = TypeVar("F", bound=Callable[..., Any])

console = Console(stderr=True)

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DEBUG_ENV = "MIRO_DEBUG"
#: Values the CLI accepts for options that several commands share.
DTYPES = ("float32", "float16", "bfloat16")
WEIGHTS = ("ema", "raw")
_DEVICE = re.compile(r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$")


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").lower() in {"1", "true", "yes"}


def print_error(message: str) -> None:
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


# -- option names -----------------------------------------------------------------------------------------
def option_names() -> dict[str, str]:
    """Parameter name -> what the user typed (``out`` -> ``--out``, ``data`` -> ``DATA``), from click."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return {}
    names: dict[str, str] = {}
    for param in ctx.command.params:
        if param.name is None:
            continue
        if isinstance(param, click.Argument):
            names[param.name] = param.human_readable_name
        else:
            longest = max(param.opts, key=len) if param.opts else param.name
            names[param.name] = longest
    return names


def _option(name: str, names: Mapping[str, str]) -> str:
    if name in names:
        return names[name]
    singular = name[:-1] if name.endswith("s") else name + "s"
    return names.get(singular, f"--{name.replace('_', '-')}")


# -- checks every command gets ------------------------------------------------------------------------------
def check_device(device: str, option: str = "--device") -> None:
    """Reject ``gpu`` and friends by name, and CUDA devices this machine does not have."""
    if not _DEVICE.match(device):
        raise ConfigError(f"{option} {device}: not a device; use cpu, cuda, cuda:N or mps")
    if device.startswith("cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if count == 0:
            raise ConfigError(f"{option} {device}: no CUDA device is available on this machine; use --device cpu")
        if index >= count:
            raise ConfigError(f"{option} {device}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    if device == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise ConfigError(f"{option} mps: the MPS backend is not available here; use --device cpu")


def refuse_memory_url(url: str, option: str) -> None:
    """Output in ``memory://`` vanishes when the process exits: refuse it where output must outlive it."""
    if str(url).startswith(("memory:", "memory://")):
        raise ConfigError(
            f"{option} {url}: an in-memory filesystem is lost when the command exits, so nothing would be kept; "
            "write to a folder or a persistent URL (file://, s3://, ...)"
        )


def check_common_options(values: Mapping[str, Any], names: Mapping[str, str]) -> None:
    """Checks every command shares, before any work: finite numbers, devices, dtypes, weights, outputs."""
    for key, value in values.items():
        if value is None:
            continue
        option = _option(key, names)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{option} {value}: must be a finite number")
        if key == "device" and isinstance(value, str) and value != "auto":
            check_device(value, option)
        elif key == "dtype" and value not in DTYPES:
            raise ConfigError(f"{option} {value}: choose one of {', '.join(DTYPES)}")
        elif key == "weights" and value not in WEIGHTS:
            raise ConfigError(f"{option} {value}: choose ema (the EMA weights, for sampling) or raw")
        elif key == "out":
            refuse_memory_url(str(value), option)


def check_positive(value: float | int | None, option: str, *, allow_zero: bool = False) -> None:
    """A range check that names the option (for numbers typer's ``min=`` cannot express, such as floats > 0)."""
    if value is None:
        return
    if not math.isfinite(value):
        raise ConfigError(f"{option} {value}: must be a finite number")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{option} {value}: must be {'zero or more' if allow_zero else 'greater than 0'}")


def local_path(url: str | None) -> str | None:
    """``file:///x/y`` (or ``file:/x/y``, what pathlib makes of it) -> ``/x/y``, so code that uses pathlib sees
    the file; other URLs are unchanged."""
    if url is None or not str(url).startswith("file:"):
        return url
    from urllib.parse import unquote, urlparse

    parsed = urlparse(str(url))
    return unquote(parsed.path) if parsed.netloc in ("", "localhost") else str(url)


def prepare_output_folder(folder: str | Path) -> None:
    """Create a local output folder and prove it writable, before any expensive work.

    An OSError here (read-only, full, permission) becomes the usual one-line message naming --out.
    """
    import tempfile

    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
        pass


# -- exceptions -> one line ---------------------------------------------------------------------------------
def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _paths(values: Mapping[str, Any], names: Mapping[str, str]) -> list[tuple[str, str]]:
    """(option, value) of every path- or URL-like argument, outputs first."""
    found = []
    for key, value in values.items():
        if isinstance(value, (str, Path)) and str(value) and key not in {"device", "dtype", "weights"}:
            found.append((_option(key, names), str(value)))
    found.sort(key=lambda item: item[0] != "--out")
    return found


def _which_option(filename: str | None, values: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """``--out /x`` when ``filename`` lies under an option's path, else just the file name."""
    if not filename:
        out = values.get("out")
        return f"{_option('out', names)} {out}" if out else "the output"
    filename = re.sub(r"\.tmp-[0-9a-f]{8}$", "", filename)  # the temporary sibling of an atomic write

    def absolute(path: str) -> str:
        path = local_path(path) or path
        return path if "://" in path else os.path.abspath(path)

    target = absolute(filename)
    for option, value in _paths(values, names):
        local = absolute(value)
        if target == local or target.startswith(local.rstrip("/") + "/"):
            return f"{filename} ({option} {value})" if target != local else f"{option} {value}"
    return filename


def _free_space(values: Mapping[str, Any], filename: str | None) -> str:
    candidates = [filename] if filename else []
    out = values.get("out")
    if out:
        candidates.append(str(out).removeprefix("file://"))
    candidates.append(".")
    for candidate in candidates:
        path = Path(candidate)
        while not path.exists() and path != path.parent:
            path = path.parent
        try:
            free = shutil.disk_usage(path).free
        except OSError:
            continue
        return f"{free / 2**20:.0f} MiB free on the device of {path}"
    return "free space unknown"


_DISK_FULL = re.compile(r"No space left on device|StorageFull|code: 28\b|unexpected pos \d+ vs \d+|file write failed")
_OUT_OF_MEMORY = re.compile(r"out of memory|not enough memory|can.t allocate memory|OutOfMemoryError", re.I)
_READ_ONLY = re.compile(r"Read-only file system|ReadOnlyFilesystem|code: 30\b")


def _fsspec_backend(err: BaseException, values: Mapping[str, Any], names: Mapping[str, str]) -> str | None:
    """A missing fsspec backend: name the URL and the package to install."""
    chain = _chain(err)
    if not any(isinstance(e, ImportError) for e in chain):
        return None
    text = " ".join(str(e) for e in chain)
    frames = "".join(traceback.format_tb(err.__traceback__)) if err.__traceback__ else ""
    if "fsspec" not in frames and "to access" not in text:
        return None
    package = next((e.name for e in chain if isinstance(e, ImportError) and e.name), None)
    match = re.search(r"[Ii]nstall (\S+)", text)
    if match and (package is None or package == "fsspec"):
        package = match.group(1)
    urls = [(option, value) for option, value in _paths(values, names) if "://" in value]
    where = ", ".join(f"{option} {value}" for option, value in urls) or "the URL"
    protocol = urls[0][1].split("://")[0] if urls else "this"
    package = package or "the fsspec backend of the protocol"
    return f"{where}: {protocol}:// URLs need the package {package}; install it (`pip install {package}`)"


_WORKER_TRACEBACK = "Original Traceback (most recent call last):"
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*: ", re.MULTILINE)


def without_worker_traceback(text: str) -> str:
    """The message of an exception re-raised by a torch DataLoader, without the worker's traceback.

    torch re-raises a worker's exception as ``Caught X in DataLoader worker process 0.\nOriginal Traceback
    ...\nmodule.X: message``; the user needs only ``message`` (with ``--debug`` for the rest).
    """
    if _WORKER_TRACEBACK not in text:
        return text
    tail = text.partition(_WORKER_TRACEBACK)[2]
    found = list(_EXCEPTION_LINE.finditer(tail))
    if not found:
        return text.partition(_WORKER_TRACEBACK)[0].strip()
    return tail[found[-1].end():].strip()


def explain(err: BaseException, values: Mapping[str, Any] | None = None, names: Mapping[str, str] | None = None) -> str:
    """One line that says what went wrong and what to do, for any exception a command can raise."""
    values = values or {}
    names = names if names is not None else option_names()
    if isinstance(err, MiroError):
        from miro_core.config import ConfigValidationError

        if isinstance(err, ConfigValidationError):
            return _config_problems(err, names)
        return without_worker_traceback(str(err))
    backend = _fsspec_backend(err, values, names)
    if backend:
        return backend
    chain = _chain(err)
    text = " | ".join(str(e) for e in chain)
    os_error = next((e for e in chain if isinstance(e, OSError) and e.errno is not None), None)
    filename = getattr(os_error, "filename", None) if os_error else None
    filename = str(filename) if filename else None
    code = os_error.errno if os_error else None
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)) or _DISK_FULL.search(text):
        return (
            f"no space left while writing {_which_option(filename, values, names)} ({_free_space(values, filename)}); "
            "free some space or write elsewhere, then rerun (finished work is kept)"
        )
    if code == errno.EROFS or _READ_ONLY.search(text):
        where = _which_option(filename, values, names)
        return f"cannot write {where}: the filesystem is read-only; choose a writable --out"
    if code in (errno.EACCES, errno.EPERM):
        return (
            f"permission denied: {_which_option(filename, values, names)}; choose a folder you can write to "
            "(--out) or fix its permissions"
        )
    unreachable = _unreachable(chain, values, names)
    if unreachable:
        return unreachable
    if isinstance(err, ValueError) and "Protocol not known" in str(err):
        protocol = str(err).rpartition(":")[2].strip()
        return f"unknown URL scheme {protocol}:// ({err}); use a local path or an fsspec URL such as file://, s3://"
    if code in (errno.EEXIST, errno.ENOTDIR):
        return (
            f"{_which_option(filename, values, names)}: a file is in the way where a folder is needed; "
            "choose another path, or move the file away"
        )
    if code == errno.EISDIR:
        return f"{_which_option(filename, values, names)} is a folder where a file is needed; give a file path"
    if os_error is not None:
        reason = (os_error.strerror or str(os_error)).lower()
        return f"{_which_option(filename, values, names)}: {reason}"
    if any(isinstance(e, MemoryError) for e in chain) or _OUT_OF_MEMORY.search(text):
        sizes = [_option(k, names) for k in ("batch_size", "image_size", "workers", "max_pixels") if k in values]
        lower = f"lower {', '.join(sizes)}" if sizes else "use smaller inputs"
        detail = (without_worker_traceback(text).strip().splitlines() or ["MemoryError"])[0][:200]
        return f"out of memory ({detail}); {lower}, then rerun"
    if isinstance(err, ImportError):
        missing = getattr(err, "name", None) or str(err)
        return f"a required package is missing ({err}); install it (`pip install {missing}`) and rerun"
    if _PEER_STOPPED.search(text):  # gloo / NCCL in the processes that outlive the one that failed
        return (
            "another process of this multi-process run stopped, so this one cannot go on; its own error is printed "
            "above: fix that and rerun"
        )
    return (
        f"unexpected {type(err).__name__}: {without_worker_traceback(str(err))}. This is probably a bug: rerun with "
        f"--debug (or {DEBUG_ENV}=1) to see the traceback, and report it"
    )


_PEER_STOPPED = re.compile(r"Connection closed by peer|remote worker crashing|Connection reset by peer.*gloo")


def _unreachable(chain: list[BaseException], values: Mapping[str, Any], names: Mapping[str, str]) -> str | None:
    import socket

    network = (ConnectionError, TimeoutError, socket.gaierror, socket.timeout)
    hit = next((e for e in chain if isinstance(e, network) or "ClientConnector" in type(e).__name__), None)
    if hit is None:
        hit = next((e for e in chain if "Cannot connect to host" in str(e) or "Name or service not known" in str(e)),
                   None)
    if hit is None:
        return None
    urls = [(option, value) for option, value in _paths(values, names) if re.match(r"^[a-z][a-z0-9+.-]*://", value)]
    where = ", ".join(f"{option} {value}" for option, value in urls) or "a URL"
    return f"cannot reach {where} ({type(hit).__name__}: {hit}); check the address and the network, then rerun"


def _config_problems(err: Any, names: Mapping[str, str]) -> str:
    """A config validation error with each field named as the user set it: CLI option or config-file key."""
    parts = []
    for loc, message in err.problems:
        field = str(loc[0]) if loc else ""
        key = ".".join(str(p) for p in loc)
        on_command_line = field in err.given or (field in names and not err.path)
        if message == "Field required" and len(loc) == 1:
            option = _option(field, names)
            also = f" (or `{field}:` in {err.path})" if err.path else ""
            parts.append(f"{option} is required{also}")
        elif on_command_line or not err.path:
            parts.append(f"{_option(field, names)}{key[len(field):]}: {message}")
        else:
            parts.append(f"`{key}` in {err.path}: {message}")
    return "; ".join(parts)


#: String options that name a file or folder (Path-typed options are recognised by their type).
PATH_OPTIONS = frozenset(
    {"data", "out", "bins", "config", "source", "run", "init_from", "prompts", "prompts_file", "annotations", "path"}
)


def local_file_urls(values: dict[str, Any]) -> dict[str, Any]:
    """``file://`` URLs of path options as local paths, so every path option accepts them (``--config``,
    ``--prompts-file`` and the others that are read with pathlib, not fsspec)."""
    for key, value in values.items():
        if isinstance(value, Path) and str(value).startswith("file:"):
            values[key] = Path(local_path(str(value)) or value)
        elif isinstance(value, str) and key in PATH_OPTIONS and value.startswith("file:"):
            values[key] = local_path(value)
        elif isinstance(value, list) and value and all(isinstance(v, Path) for v in value):
            values[key] = [Path(local_path(str(v)) or v) for v in value]
    return values


def user_errors(func: F) -> F:
    """Run a command with the common option checks; turn every exception into one ``error:`` line, exit 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        names = option_names()
        try:
            local_file_urls(kwargs)
            check_common_options(kwargs, names)
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            print_error("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except SystemExit as err:  # the commands exit through typer.Exit: this is a plugin or library calling sys.exit
            print_error(
                f"the command was stopped by a call to sys.exit({err.code!r}) in a plugin or library, so it did not "
                f"finish (what was saved before is kept); rerun with --debug (or {DEBUG_ENV}=1) to see where"
            )
            if debug_enabled():
                sys.stderr.write("".join(traceback.format_exception(err)))
            raise typer.Exit(EXIT_ERROR) from None
        except Exception as err:  # noqa: BLE001 - the one place where failures become messages
            print_error(explain(err, kwargs, names))
            if debug_enabled():
                sys.stderr.write("".join(traceback.format_exception(err)))
            raise typer.Exit(EXIT_ERROR) from None

    return wrapper  # type: ignore[return-value]


# -- the registry ---------------------------------------------------------------------------------------------
def registry(warn: bool = True) -> Any:
    """The loaded plugin registry; failed plugins are named on stderr (see ``miro plugins``).

    Under MIRO_STRICT_PLUGINS=1 any plugin problem raises a PluginError (one ``error:`` line, exit 1).
    """
    from miro_core.plugins import get_registry

    reg = get_registry()
    if warn:
        from rich.markup import escape

        for failure in reg.failures:
            console.print(
                f"[yellow]warning:[/] plugin {failure.name!r} ({failure.distribution}) not loaded: "
                f"{escape(str(failure.error))}",
                highlight=False,
            )
        for plugin in reg.plugins:
            for text in plugin.warnings:
                console.print(
                    f"[yellow]warning:[/] plugin {plugin.name!r} ({plugin.distribution}): {escape(text)}",
                    highlight=False,
                )
    return reg


# -- parsing ----------------------------------------------------------------------------------------------------
def parse_key_values(items: Iterable[str], option: str) -> dict[str, str]:
    """Parse repeated ``KEY=VALUE`` options into a dict, naming the option on error."""
    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MiroError(f"{option} expects KEY=VALUE, got {item!r}")
        parsed[key.strip()] = value.strip()
    return parsed


def parse_yaml_values(items: Iterable[str], option: str) -> dict[str, Any]:
    """``KEY=VALUE`` options with each value read as a YAML scalar (``3`` -> 3, ``true`` -> True).

    A value that reads as a non-finite number (``.nan``, ``.inf``) is refused: no option means that.
    """
    import yaml

    out: dict[str, Any] = {}
    for key, text in parse_key_values(items, option).items():
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"{option} {key}={text}: cannot read the value") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{option} {key}={text}: must be a finite number")
        out[key] = value
    return out


def parse_float_map(items: Iterable[str], option: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in parse_key_values(items, option).items():
        try:
            number = float(value)
        except ValueError:
            raise MiroError(f"{option} {key}={value!r}: the value must be a number") from None
        if not math.isfinite(number):
            raise MiroError(f"{option} {key}={value}: the value must be a finite number")
        out[key] = number
    return out


def split_names(text: str | None) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def table_console() -> Console:
    """A stdout console for tables; wide when piped, so names are never cut in files and tests."""
    return Console(width=None if sys.stdout.isatty() else 200)


def echo(message: str) -> None:
    """Print a normal result line to stdout (kept separate from progress on stderr)."""
    sys.stdout.write(message + "\n")


def distributed_rank(device: str) -> tuple[int, int]:
    """(rank, world size) under ``accelerate launch``; (0, 1) otherwise.

    On a machine without GPUs (or with ``--device cpu``) accelerate must be told to use its gloo CPU
    backend, otherwise every process believes it is alone.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu" or not torch.cuda.is_available())
    return state.process_index, state.num_processes
