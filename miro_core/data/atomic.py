"""Atomic writes on any fsspec filesystem: write a temporary sibling, then rename over the target.

A reader (or a resumed run) therefore sees either the old file or the complete new one, never half
of one, even after ``kill -9``. Object stores write objects atomically on close already; there the
rename is a copy, which keeps the same guarantee.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from typing import IO, Any

import fsspec


def _fs_and_path(url: str) -> tuple[Any, str]:
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


@contextlib.contextmanager
def atomic_open(url: str, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open ``url`` for writing; the file appears under its name only if the block succeeds."""
    if mode not in {"wb", "w"}:
        raise ValueError("atomic_open writes only ('w' or 'wb')")
    fs, path = _fs_and_path(url)
    parent = path.rsplit("/", 1)[0] if "/" in path else "."
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with fs.open(tmp, mode) as handle:
            yield handle
            if hasattr(handle, "flush"):
                handle.flush()
            if hasattr(handle, "fileno"):
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    os.fsync(handle.fileno())
        if is_local(fs):
            os.replace(tmp, path)
        else:
            fs.mv(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(tmp)
        raise


def is_local(fs: Any) -> bool:
    """Whether an fsspec filesystem is the local disk."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return bool({"file", "local"} & set(protocols))


def glob_urls(url: str, pattern: str) -> list[str]:
    """Sorted matches of ``pattern`` inside folder ``url``: plain paths on local disk, full URLs elsewhere."""
    fs, path = _fs_and_path(url)
    found = sorted(fs.glob(f"{path.rstrip('/')}/{pattern}"))
    return found if is_local(fs) else [fs.unstrip_protocol(p) for p in found]


def write_json(url: str, payload: Any) -> None:
    with atomic_open(url, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")


def read_json(url: str) -> Any:
    with fsspec.open(url, "r") as handle:
        return json.load(handle)


def exists(url: str) -> bool:
    fs, path = _fs_and_path(url)
    return bool(fs.exists(path))


def join(base: str, *parts: str) -> str:
    """Join URL/path segments with '/', keeping the protocol of ``base``."""
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out
