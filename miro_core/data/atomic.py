"""Atomic writes on any fsspec filesystem: write a temporary sibling, then rename over the target.

A reader (or a resumed run) therefore sees either the old file or the complete new one, never half
of one, even after ``kill -9``. Object stores write objects atomically on close already; there the
rename is a copy, which keeps the same guarantee. Temporary siblings are named ``NAME.tmp-XXXXXXXX``
(:data:`TMP_MARKER`), so what a killed writer leaves behind can be found and removed.

Environment faults become :class:`~miro_core.errors.StorageError` naming the path or URL and what to
do: a missing fsspec backend (``s3://`` without ``s3fs``), an unknown protocol, a read-only or full
file system, a folder without write permission.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import uuid
from collections.abc import Iterator
from typing import IO, Any

import fsspec

from miro_core.errors import StorageError

#: Marks the temporary sibling of a file being written (``scores/x.parquet.tmp-1a2b3c4d``).
TMP_MARKER = ".tmp-"
#: Protocols whose files vanish with the process: never valid for an output that must outlive it.
EPHEMERAL_PROTOCOLS = frozenset({"memory"})
#: Package to install for a protocol whose fsspec implementation lives in fsspec itself but needs extras.
_BACKEND_PACKAGES = {"http": "aiohttp", "https": "aiohttp", "sftp": "paramiko", "ssh": "paramiko", "smb": "smbprotocol"}


def protocol_of(url: str) -> str:
    """``s3`` for ``s3://bucket/x``, ``file`` for a plain path."""
    head, sep, _ = str(url).partition("://")
    return head.lower() if sep else "file"


def backend_package(protocol: str) -> str | None:
    """The pip package that provides fsspec's implementation of ``protocol``, if fsspec knows it."""
    from fsspec.registry import known_implementations

    if protocol in _BACKEND_PACKAGES:
        return _BACKEND_PACKAGES[protocol]
    spec = known_implementations.get(protocol)
    if not spec:
        return None
    module = spec["class"].split(".", 1)[0]
    return None if module == "fsspec" else module.replace("_", "-")


def filesystem(url: str) -> tuple[Any, str]:
    """``(fs, path)`` for ``url``; a missing backend or unknown protocol is a StorageError naming the URL."""
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as err:
        protocol = protocol_of(url)
        package = backend_package(protocol) or getattr(err, "name", None) or "its fsspec backend"
        raise StorageError(
            f"{url}: {protocol}:// URLs need the package {package} ({err}); install it: pip install {package}"
        ) from None
    except OSError as err:  # backends that connect when created (ftp, sftp, smb): unreachable host
        raise StorageError(
            f"cannot reach {url}: {type(err).__name__}: {err}; check the address and the network, then rerun"
        ) from None
    except ValueError as err:
        if "Protocol not known" in str(err):
            raise StorageError(
                f"{url}: unknown URL protocol {protocol_of(url)}://; use a local path or an fsspec URL "
                "(file://, s3://, gs://, ...)"
            ) from None
        raise


def storage_error(err: OSError, url: str, action: str = "write") -> StorageError | None:
    """A StorageError for the environment faults a user can fix (read-only, full, no permission), else None."""
    code = err.errno
    if code == errno.EROFS:
        return StorageError(f"cannot {action} {url}: the file system is read-only; choose a writable location")
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return StorageError(
            f"cannot {action} {url}: no space left on the device; free some space or choose another location, "
            "then rerun (finished work is kept)"
        )
    if code in (errno.EACCES, errno.EPERM):
        return StorageError(f"cannot {action} {url}: permission denied; choose a location you can {action}")
    return None


@contextlib.contextmanager
def translate_storage_errors(url: str, action: str = "write") -> Iterator[None]:
    """Turn read-only / disk-full / permission OSErrors inside the block into a StorageError naming ``url``."""
    try:
        yield
    except OSError as err:
        translated = storage_error(err, url, action)
        if translated is None:
            raise
        raise translated from None


@contextlib.contextmanager
def atomic_open(url: str, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open ``url`` for writing; the file appears under its name only if the block succeeds."""
    if mode not in {"wb", "w"}:
        raise ValueError("atomic_open writes only ('w' or 'wb')")
    fs, path = filesystem(url)
    parent = path.rsplit("/", 1)[0] if "/" in path else "."
    tmp = f"{path}{TMP_MARKER}{uuid.uuid4().hex[:8]}"
    with translate_storage_errors(url):
        fs.makedirs(parent, exist_ok=True)
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


def is_ephemeral(url: str) -> bool:
    """Whether files written to ``url`` disappear when the process exits (``memory://``)."""
    return protocol_of(url) in EPHEMERAL_PROTOCOLS


def glob_urls(url: str, pattern: str) -> list[str]:
    """Sorted matches of ``pattern`` inside folder ``url``: plain paths on local disk, full URLs elsewhere."""
    fs, path = filesystem(url)
    found = sorted(fs.glob(f"{path.rstrip('/')}/{pattern}"))
    return found if is_local(fs) else [fs.unstrip_protocol(p) for p in found]


def write_json(url: str, payload: Any) -> None:
    with atomic_open(url, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")


def read_json(url: str) -> Any:
    fs, path = filesystem(url)
    with fs.open(path, "r") as handle:
        return json.load(handle)


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return bool(fs.exists(path))


def remove(url: str, recursive: bool = False) -> None:
    """Delete a file (or a folder with ``recursive``) if it exists."""
    fs, path = filesystem(url)
    if fs.exists(path):
        with translate_storage_errors(url, "delete"):
            fs.rm(path, recursive=recursive)


def join(base: str, *parts: str) -> str:
    """Join URL/path segments with '/', keeping the protocol of ``base``."""
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out
