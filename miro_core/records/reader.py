"""Reading records: a map-style dataset over record shards, its collation and the DataLoader.

Random access is what keeps training exact: the order (``records.order``) is a pure function of the
step, and any process or worker can read any sample. The data offset and size of every member of a shard
are written beside it (``<name>.index.npy``, 64 bytes per record), so opening a shard reads that small
array and reading a sample is four positioned reads.

Why not wids' own reader (``wids.IndexedTarSamples``), which reads these shards too (records.json is a
wids descriptor, a test checks it): it scans every tar header when it opens a shard (0.35 s per
5000-record shard here) and keeps a Python dictionary and a tuple per tar member, 5.2 MB per such shard
(the array here: 0.3 MB), in every worker and for every open shard, so memory grew with the number of
shards a run touches; and it memory-maps the shard, so every page read stays in the worker's resident
memory. And its ``ShardListDataset`` copies
even local shards into ``/tmp`` unless told otherwise, writes lock files beside the shards (read-only
dataset folders fail), downloads remote shards only through command-line tools (curl, gsutil, aws)
instead of fsspec, and prints to stderr when built. Here local shards are read in place, and shards on
any other fsspec URL are copied once into a local cache folder (atomically, so concurrent workers are
safe).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from miro_core.errors import DataError
from miro_core.records.layout import (
    EMPTY_CAPTION_FILE,
    INPUT_DTYPE,
    MASK_MEMBER,
    META_MEMBER,
    TOKENS_MEMBER,
    RecordsInfo,
    member_index_url,
)

TAR_BLOCK = 512


def default_cache_dir() -> str:
    """Where remote shards are cached: ``$MIRO_RECORDS_CACHE`` or ``~/.cache/miro/records``."""
    return os.environ.get("MIRO_RECORDS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "miro", "records")


def local_copy(url: str, cache_dir: str) -> str:
    """A local path holding the shard at ``url`` (the path itself when it is on the local disk).

    Every DataLoader worker of every process on a machine may ask for the same shard at once (a shuffle
    block spreads the first batches over all its shards); a lock file per shard makes one of them download
    it while the others wait, so a node fetches each shard once instead of once per worker.
    """
    import fsspec
    from filelock import FileLock

    from miro_core.data.atomic import is_local

    fs, path = fsspec.core.url_to_fs(url)
    if is_local(fs):
        return path
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    local = os.path.join(cache_dir, f"{digest}-{os.path.basename(path)}")
    if not os.path.exists(local):
        os.makedirs(cache_dir, exist_ok=True)
        with FileLock(f"{local}.lock"):
            if not os.path.exists(local):  # another process may have fetched it while this one waited
                tmp = f"{local}.tmp-{os.getpid()}"
                fs.get(path, tmp)
                os.replace(tmp, local)
    return local


class RecordShard:
    """One records tar, read with ``pread``, with the data offset and size of each member of each record.

    The offsets come from the shard's ``.index.npy`` written with it (``members``); without one the tar
    headers are scanned. Members are read with positioned reads, not a memory map: the operating system's
    page cache keeps hot shards in memory all the same, but the pages never count in the reading process's
    resident memory, so it stays flat however many records a worker has read. Every read checks the member's
    tar header names the expected member, so a stale index can never return the wrong data.
    """

    def __init__(self, path: str, fields: tuple[str, ...], samples: int, members: np.ndarray | None = None) -> None:
        self.path = path
        self.fields = {name: i for i, name in enumerate(fields)}
        self.fd = os.open(path, os.O_RDONLY)
        size = os.fstat(self.fd).st_size
        if members is not None and members.ndim == 3 and len(members) != samples:
            os.close(self.fd)
            raise DataError(
                f"records.json lists {samples} records for {path} but its .index.npy has {len(members)}; "
                "restore records.json, or re-encode that shard"
            )
        if members is not None and members.shape == (samples, len(fields), 2) and (members[..., 0] < size).all():
            self.offsets, self.sizes = members[..., 0], members[..., 1]
        else:
            self.offsets = np.full((samples, len(fields)), -1, dtype=np.int64)
            self.sizes = np.zeros((samples, len(fields)), dtype=np.int64)
            self._scan(size)

    def _scan(self, size: int) -> None:
        position = 0
        while position + TAR_BLOCK <= size:
            header = os.pread(self.fd, TAR_BLOCK, position)
            try:
                name = header[:100].split(b"\0", 1)[0].decode("utf-8")
                length = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8) if name else 0
            except ValueError:  # also UnicodeDecodeError
                raise DataError(
                    f"records shard {self.path} has a damaged tar header at byte {position}; re-encode it"
                ) from None
            if not name:
                break  # the two zero blocks that end a tar
            if header[156:157] in (b"0", b"\0"):
                key, _, extension = name.partition(".")
                column = self.fields.get(extension)
                if column is not None and key.isdigit() and int(key) < len(self.offsets):
                    self.offsets[int(key), column] = position + TAR_BLOCK
                    self.sizes[int(key), column] = length
            position += TAR_BLOCK + (length + TAR_BLOCK - 1) // TAR_BLOCK * TAR_BLOCK
        missing = np.argwhere(self.offsets < 0)
        if len(missing):
            record, column = missing[0]
            field = next(k for k, v in self.fields.items() if v == column)
            raise DataError(f"records shard {self.path} lacks member {int(record):07d}.{field}; re-encode it")

    def __len__(self) -> int:
        return len(self.offsets)

    def member(self, record: int, field: str) -> bytes:
        """The member's bytes, read together with its tar header (one read), which must name it."""
        column = self.fields[field]
        start = int(self.offsets[record, column])
        length = int(self.sizes[record, column])
        data = os.pread(self.fd, TAR_BLOCK + length, start - TAR_BLOCK)
        expected = f"{record:07d}.{field}".encode()
        if data[: len(expected)] != expected or data[len(expected) : len(expected) + 1] not in (b"\0", b""):
            raise DataError(
                f"records shard {self.path}: member {expected.decode()} is not where its index says; delete its "
                ".index.npy (the shard is then scanned) or re-encode that shard"
            )
        return data[TAR_BLOCK:]

    def close(self) -> None:
        os.close(self.fd)


class NpyReader:
    """``.npy`` members as arrays.

    All members of one field share a header (same dtype and shape), so a header is parsed once and later
    members whose header bytes are identical are read straight from the buffer; ``np.load`` (a file-object
    round trip and a ``literal_eval`` of the header) is the fallback.
    """

    def __init__(self) -> None:
        self.headers: dict[bytes, tuple[np.dtype, tuple[int, ...], int]] = {}

    def __call__(self, payload: bytes) -> np.ndarray:
        import io

        if bytes(payload[:6]) != b"\x93NUMPY":
            raise ValueError("its bytes are not a .npy array")
        if bytes(payload[6:8]) == b"\x01\x00":
            end = 10 + int.from_bytes(payload[8:10], "little")
            header = bytes(payload[:end])
            known = self.headers.get(header)
            if known is None:
                stream = io.BytesIO(header)
                np.lib.format.read_magic(stream)
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
                if not fortran and not dtype.hasobject:
                    known = self.headers[header] = (dtype, shape, int(np.prod(shape)) if shape else 1)
            if known is not None:
                dtype, shape, count = known
                return np.frombuffer(payload, dtype=dtype, count=count, offset=end).reshape(shape).copy()
        return np.load(io.BytesIO(payload), allow_pickle=False)


def member_index(tar_url: str) -> np.ndarray | None:
    """The shard's member offsets (``.index.npy``), or None when it has none (it is then scanned)."""
    import io

    import fsspec

    try:
        with fsspec.open(member_index_url(tar_url), "rb") as handle:
            return np.load(io.BytesIO(handle.read()), allow_pickle=False)
    except (OSError, ValueError):  # missing or unreadable: the shard's headers are scanned instead
        return None


class RecordDataset(Dataset):
    """Records by global index: ``{"index", "input", "tokens", "mask", "scores", "caption"}``.

    Holds only the shard list; each process (and DataLoader worker) opens shards lazily and keeps at
    most ``open_shards`` of them open (least recently used closed first).
    """

    def __init__(self, info: RecordsInfo, open_shards: int = 64, cache_dir: str | None = None) -> None:
        self.info = info
        self.urls = [s["url"] for s in info.shards]
        self.ends = np.cumsum(info.shard_sizes)
        self.open_shards = max(1, open_shards)
        self.cache_dir = cache_dir or default_cache_dir()
        self.fields = (info.input_member, TOKENS_MEMBER, MASK_MEMBER, META_MEMBER)
        self._open: OrderedDict[int, RecordShard] = OrderedDict()
        self._npy = NpyReader()
        length = info.text_shape[0]
        self._expected = {
            "input": (np.dtype(INPUT_DTYPE[info.input_kind]), info.input_shape),
            "tokens": (np.dtype(np.float16), info.text_shape),
            "mask": (np.dtype(np.bool_), (length,)),
        }

    def __len__(self) -> int:
        return int(self.ends[-1])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_open"] = OrderedDict()  # open files and maps stay in the process that opened them
        return state

    def _shard(self, number: int) -> RecordShard:
        shard = self._open.get(number)
        if shard is not None:
            self._open.move_to_end(number)
            return shard
        url = self.urls[number]
        try:
            shard = RecordShard(local_copy(url, self.cache_dir), self.fields, self.info.shard_sizes[number],
                                member_index(url))
        except FileNotFoundError:
            raise DataError(f"records shard {url} is missing; run `miro encode` again to rewrite it") from None
        except OSError as err:  # a folder in its place, no permission: named here, since workers lose the path
            raise DataError(
                f"records shard {url} cannot be read ({err.strerror or err}); fix it or re-encode that shard"
            ) from None
        self._open[number] = shard
        while len(self._open) > self.open_shards:
            _, oldest = self._open.popitem(last=False)
            oldest.close()
        return shard

    def locate(self, index: int) -> tuple[int, int]:
        """``(shard number, index within the shard)`` of a global index."""
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} out of range (0..{len(self) - 1})")
        number = int(np.searchsorted(self.ends, index, side="right"))
        start = int(self.ends[number - 1]) if number else 0
        return number, index - start

    def __getitem__(self, index: int) -> dict[str, Any]:
        number, inner = self.locate(index)
        shard = self._shard(number)
        try:
            meta = json.loads(shard.member(inner, META_MEMBER))
            record = {
                "index": index,
                "input": self._npy(shard.member(inner, self.info.input_member)),
                "tokens": self._npy(shard.member(inner, TOKENS_MEMBER)),
                "mask": self._npy(shard.member(inner, MASK_MEMBER)),
                "scores": meta.get("scores", {}),
                "caption": meta.get("caption", ""),
            }
            if not isinstance(record["scores"], dict):
                raise ValueError(f"its scores are a {type(record['scores']).__name__}, not a table")
            record["scores"] = {key: _stored_score(key, value) for key, value in record["scores"].items()}
        except (ValueError, AttributeError) as err:
            raise DataError(f"record {inner} of {self.urls[number]} is damaged ({err}); re-encode that shard") from None
        for field, (dtype, shape) in self._expected.items():  # np.stack would silently upcast or fail unnamed
            if record[field].dtype != dtype or record[field].shape != shape:
                raise DataError(
                    f"record {inner} of {self.urls[number]} is damaged (its {field} is {record[field].dtype} "
                    f"{tuple(record[field].shape)}, records.json says {dtype} {shape}); re-encode that shard "
                    "(delete it and its .json and .index.npy, then rerun `miro encode`)"
                )
        for field in ("input", "tokens"):  # encoders never write NaN or inf: such values are damaged bytes
            if record[field].dtype.kind == "f" and not np.isfinite(record[field]).all():
                raise DataError(
                    f"record {inner} of {self.urls[number]} is damaged (non-finite values in its {field}); "
                    "re-encode that shard (delete it and its .json and .index.npy, then rerun `miro encode`)"
                )
        return record

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [self[i] for i in indices]


def empty_caption(info: RecordsInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens ``(L, D)`` and mask ``(L,)`` of the empty caption stored with the records."""
    import fsspec
    from safetensors.torch import load

    from miro_core.data.atomic import join

    url = join(info.url, EMPTY_CAPTION_FILE)
    try:
        with fsspec.open(url, "rb") as handle:
            stored = load(handle.read())
        return stored["tokens"], stored["mask"].bool()
    except FileNotFoundError:
        raise DataError(f"{url} is missing; encode the records again (`miro encode`) to write it") from None
    except Exception as err:  # noqa: BLE001 - safetensors reports damage with its own exception types
        raise DataError(f"{url} is damaged ({err}); encode the records again (`miro encode`) to rewrite it") from None


class Collate:
    """Stacks records into a batch and turns raw scores into levels with the bins (in the worker).

    ``input`` keeps its stored dtype (uint8 pixels travel 4x smaller than floats); the trainer
    converts on the device with :func:`model_input`.
    """

    def __init__(self, reward_keys: Sequence[str], bins: Any) -> None:
        self.reward_keys = list(reward_keys)
        self.bins = bins

    def __call__(self, records: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {
            "index": torch.tensor([r["index"] for r in records], dtype=torch.long),
            "input": torch.from_numpy(np.stack([r["input"] for r in records])),
            "tokens": torch.from_numpy(np.stack([r["tokens"] for r in records])),
            "mask": torch.from_numpy(np.stack([r["mask"] for r in records])),
        }
        if self.reward_keys:
            columns = []
            for key in self.reward_keys:
                raw = np.array([_score(r["scores"].get(key)) for r in records], dtype=np.float64)
                columns.append(self.bins.levels(key, raw))
            batch["levels"] = torch.from_numpy(np.stack(columns, axis=1).astype(np.float32))
        return batch


def _stored_score(key: str, value: Any) -> float | None:
    """A score as stored (a number, None or NaN for missing); anything else is damage, named by its key."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    raise ValueError(f"its score {key!r} is {value!r}, not a number")


def _score(value: Any) -> float:
    return float("nan") if value is None else float(value)


def model_input(stored: torch.Tensor) -> torch.Tensor:
    """Stored input -> what the model denoises: uint8 pixels to [-1, 1], latents to float32."""
    if stored.dtype == torch.uint8:
        return stored.float() / 127.5 - 1.0
    return stored.float()


def die_with_parent(_worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: on Linux a worker is killed when its parent process dies.

    Without it, ``kill -9`` of a run leaves its workers behind: a worker whose results nobody reads
    blocks forever flushing its queue at exit.
    """
    import signal
    import sys

    from miro_core.data.lock import close_in_child

    close_in_child()  # the parent's output lock is its own: a worker must not keep it after the parent dies
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def make_loader(
    dataset: RecordDataset,
    batch_sampler: Any,
    collate: Collate,
    workers: int,
    pin_memory: bool = False,
    prefetch_factor: int = 4,
) -> DataLoader:
    """A DataLoader that reads micro-batches in ``workers`` processes, ``prefetch_factor`` ahead each."""
    options: dict[str, Any] = {}
    if workers > 0:
        options = {"prefetch_factor": prefetch_factor, "persistent_workers": False, "worker_init_fn": die_with_parent}
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=pin_memory,
        **options,
    )

