"""One writer per output folder: a lock file per writing process, recovered automatically after ``kill -9``.

Two ``miro annotate`` processes writing the same folder would interleave the same tables. Each writing
process therefore holds ``OUT/.locks/RANK-of-WORLD.lock`` (its rank and the number of processes of its
launch: the K processes of one ``accelerate launch`` split the shards and may write together, anything
else may not). The file holds who holds it (pid, host, start time, command), so the refusal names the
other process.

On a local (or NFS) disk the lock is an ``flock`` on that file: the kernel releases it when the process
dies, however it dies, so a lock left by a killed process is recognised as stale and taken over (and
reported). On object stores (no locking primitive) it is best effort: a lock file whose holder ran on
this host and is no longer alive is taken over; one from another host must be deleted by hand, and
the message says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from typing import Any

from miro_core.data.atomic import filesystem, is_local, join, translate_storage_errors
from miro_core.errors import OutputLockedError

LOCK_DIR = ".locks"
#: File descriptors of the locks this process holds (closed in forked children, see :func:`close_in_child`).
_HELD: set[int] = set()


def holder_info(rank: int, world_size: int) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "rank": rank,
        "world_size": world_size,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300],
    }


def describe_holder(info: dict[str, Any], lock_path: str) -> str:
    if not info:
        return f"an unknown process (lock file {lock_path})"
    world = info.get("world_size", 1)
    rank = f", rank {info.get('rank')} of {world}" if world and int(world) > 1 else ""
    command = f", running `{info['command']}`" if info.get("command") else ""
    return f"pid {info.get('pid')} on host {info.get('host')}{rank}, since {info.get('started')}{command}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def close_in_child() -> None:
    """Close inherited lock descriptors in a forked child (a DataLoader worker).

    An ``flock`` lives as long as any descriptor of it is open; a worker still shutting down after its
    parent was killed would otherwise keep the folder locked for a few seconds.
    """
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


class OutputLock:
    """The lock of one writing process on an output folder; use as a context manager."""

    def __init__(self, folder: str, rank: int = 0, world_size: int = 1, purpose: str = "writing") -> None:
        self.folder = folder
        self.rank = rank
        self.world_size = world_size
        self.purpose = purpose
        self.name = f"{rank}-of-{world_size}.lock"
        self.url = join(folder, LOCK_DIR, self.name)
        self.fd: int | None = None
        #: Holders of stale locks that were taken over (processes killed while writing).
        self.recovered: list[dict[str, Any]] = []
        self._remote_path: str | None = None

    # -- public ---------------------------------------------------------------------------------
    def acquire(self) -> OutputLock:
        fs, path = filesystem(self.url)
        with translate_storage_errors(join(self.folder, LOCK_DIR)):
            if is_local(fs):
                self._acquire_local(path)
            else:
                self._acquire_remote(fs, path)
        return self

    def release(self) -> None:
        if self.fd is not None:
            import fcntl

            fs, path = filesystem(self.url)
            with contextlib.suppress(OSError):
                os.unlink(path)  # unlink while holding, so no other process can lock the old file
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                os.close(self.fd)
            _HELD.discard(self.fd)
            self.fd = None
        elif self._remote_path is not None:
            fs, _ = filesystem(self.url)
            with contextlib.suppress(Exception):
                fs.rm(self._remote_path)
            self._remote_path = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def refusal(self, info: dict[str, Any], lock_path: str) -> OutputLockedError:
        return OutputLockedError(
            f"{self.folder} is being written by another process: {describe_holder(info, lock_path)}. "
            "Only one writer per output folder: wait for it to finish or stop it, or use another --out"
        )

    # -- local disks: flock ---------------------------------------------------------------------
    def _acquire_local(self, path: str) -> None:
        import fcntl

        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        for _ in range(20):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self.refusal(_read_info(path), path) from None
            try:
                same_file = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            os.close(fd)  # the file was replaced between open and flock: try again
        else:
            raise OutputLockedError(f"cannot take the lock {path}: it keeps being replaced by another process")
        previous = _read_info(path)
        if previous and previous.get("pid") != os.getpid():
            self.recovered.append(previous)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder_info(self.rank, self.world_size)).encode())
        self.fd = fd
        _HELD.add(fd)
        try:
            self._check_other_launches(folder)
        except BaseException:
            self.release()
            raise

    def _check_other_launches(self, folder: str) -> None:
        """Locks of other layouts (another world size) held by live processes are refusals; stale ones go."""
        import fcntl

        for name in sorted(os.listdir(folder)):
            if not name.endswith(".lock") or name == self.name:
                continue
            other = os.path.join(folder, name)
            _, _, world = name.removesuffix(".lock").partition("-of-")
            if world == str(self.world_size):
                continue  # a sibling process of this launch (or of an identical one, which its own rank refuses)
            try:
                fd = os.open(other, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self.refusal(_read_info(other), other) from None
            else:
                info = _read_info(other)
                if info:
                    self.recovered.append(info)
                with contextlib.suppress(OSError):
                    os.unlink(other)
            finally:
                os.close(fd)

    # -- object stores: best effort -------------------------------------------------------------
    def _acquire_remote(self, fs: Any, path: str) -> None:
        folder = path.rsplit("/", 1)[0]
        fs.makedirs(folder, exist_ok=True)
        host = socket.gethostname()
        for other in fs.ls(folder, detail=False):
            name = other.rsplit("/", 1)[-1]
            if not name.endswith(".lock"):
                continue
            _, _, world = name.removesuffix(".lock").partition("-of-")
            if name != self.name and world == str(self.world_size):
                continue
            try:
                with fs.open(other, "r") as handle:
                    info = json.load(handle)
            except Exception:  # noqa: BLE001 - an unreadable lock file counts as held by someone unknown
                info = {}
            if info.get("host") == host and isinstance(info.get("pid"), int) and not pid_alive(info["pid"]):
                self.recovered.append(info)
                fs.rm(other)
                continue
            error = self.refusal(info, fs.unstrip_protocol(other))
            raise OutputLockedError(
                f"{error} (on this storage the lock cannot be checked across hosts: if that process is gone, "
                f"delete {fs.unstrip_protocol(other)})"
            )
        with fs.open(path, "w") as handle:
            json.dump(holder_info(self.rank, self.world_size), handle)
        self._remote_path = path


def _read_info(path: str) -> dict[str, Any]:
    try:
        with open(path) as handle:
            text = handle.read()
        return json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}
