"""Writing records: one tar per input shard, appended batch by batch, renamed into place when done.

The tar is written in webdataset's layout with the standard ``tarfile`` module (``webdataset.TarWriter``
adds nothing here but an extra encoding layer). A shard is finished when its sidecar ``<name>.json``
exists; the sidecar is written after the tar, its member index and its score table (``<name>.scores.parquet``)
have been renamed into place, so ``kill -9`` at any moment leaves either a finished shard or nothing but
temporary files and files the next run rewrites.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import numpy as np

from miro_core.data.atomic import atomic_open, glob_urls, join, read_json, write_json
from miro_core.records.layout import (
    EMPTY_CAPTION_FILE,
    FORMAT,
    INDEX_FILE,
    INPUT_MEMBER,
    MASK_MEMBER,
    META_MEMBER,
    SHARDS_DIR,
    TOKENS_MEMBER,
    VERSION,
    member_index_url,
    record_key,
    score_table_url,
)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def shard_urls(out: str, name: str) -> tuple[str, str]:
    """``(tar, sidecar)`` URLs of the records shard called ``name``."""
    return join(out, SHARDS_DIR, f"{name}.tar"), join(out, SHARDS_DIR, f"{name}.json")


def finished_shards(out: str) -> dict[str, dict[str, Any]]:
    """Sidecars of the finished shards in ``out``, by shard name."""
    found: dict[str, dict[str, Any]] = {}
    for url in glob_urls(join(out, SHARDS_DIR), "*.json"):
        name = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".json")
        found[name] = read_json(url)
    return found


class RecordShardWriter:
    """Appends records to one shard; ``close()`` renames the tar into place and writes the sidecar."""

    def __init__(self, out: str, name: str, source: str, input_kind: str) -> None:
        self.tar_url, self.sidecar_url = shard_urls(out, name)
        self.name = name
        self.source = source
        self.input_member = INPUT_MEMBER[input_kind]
        self.count = 0
        self.bytes = 0
        #: Data offset and size of every member, 4 per record: the reader opens a shard without scanning it.
        self.offsets: list[int] = []
        self.sizes: list[int] = []
        #: Per-channel sum, sum of squares and element count of latents (for the index's statistics).
        self.channel_sums: np.ndarray | None = None
        self.channel_squares: np.ndarray | None = None
        self.channel_count = 0
        #: Key, source shard, caption and raw scores of every record: ``<name>.scores.parquet``, an annotation
        #: table (``miro bins fit RECORDS``).
        self.score_rows: list[dict[str, Any]] = []
        self._context = atomic_open(self.tar_url, "wb")
        self._handle = self._context.__enter__()
        self._tar = tarfile.open(fileobj=self._handle, mode="w")

    def _add_member(self, name: str, payload: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        info.mode = 0o444
        header = info.tobuf(self._tar.format, self._tar.encoding, self._tar.errors)
        self.offsets.append(self._tar.offset + len(header))
        self.sizes.append(len(payload))
        self._tar.addfile(info, io.BytesIO(payload))
        self.bytes += len(payload)

    def add(self, model_input: np.ndarray, tokens: np.ndarray, mask: np.ndarray, meta: dict[str, Any]) -> None:
        """One record: model input (uint8 pixels or float16 latents), text tokens and mask, metadata."""
        key = record_key(self.count)
        self._add_member(f"{key}.{self.input_member}", _npy_bytes(model_input))
        self._add_member(f"{key}.{TOKENS_MEMBER}", _npy_bytes(tokens.astype(np.float16, copy=False)))
        self._add_member(f"{key}.{MASK_MEMBER}", _npy_bytes(mask.astype(np.bool_, copy=False)))
        self._add_member(f"{key}.{META_MEMBER}", json.dumps(meta, allow_nan=True).encode("utf-8"))
        self.score_rows.append({"key": meta.get("key"), "shard": meta.get("shard"), "caption": meta.get("caption"),
                                **meta.get("scores", {})})
        if model_input.dtype != np.uint8:
            values = model_input.astype(np.float64).reshape(model_input.shape[0], -1)
            if self.channel_sums is None:
                self.channel_sums = np.zeros(values.shape[0])
                self.channel_squares = np.zeros(values.shape[0])
            self.channel_sums += values.sum(1)
            self.channel_squares += np.square(values).sum(1)  # type: ignore[operator]
            self.channel_count += values.shape[1]
        self.count += 1

    def close(self, fault: str | None = None) -> dict[str, Any]:
        """Finish the shard; returns (and writes) its sidecar. ``fault``: why its input shard could not be read
        to its end (the records before the fault are kept), recorded in the sidecar."""
        self._tar.close()
        self._context.__exit__(None, None, None)
        sidecar: dict[str, Any] = {
            "name": self.name,
            "url": f"{SHARDS_DIR}/{self.name}.tar",
            "nsamples": self.count,
            "bytes": self.bytes,
            "source": self.source,
        }
        if fault is not None:
            sidecar["fault"] = fault
        if self.channel_sums is not None:
            sidecar["channel_sums"] = self.channel_sums.tolist()
            sidecar["channel_squares"] = self.channel_squares.tolist()  # type: ignore[union-attr]
            sidecar["channel_count"] = self.channel_count
        members = np.stack([np.asarray(self.offsets, np.int64), np.asarray(self.sizes, np.int64)], axis=-1)
        with atomic_open(member_index_url(self.tar_url), "wb") as handle:
            handle.write(_npy_bytes(members.reshape(self.count, len(self.offsets) // max(self.count, 1), 2)))
        self._write_score_table()
        write_json(self.sidecar_url, sidecar)  # last: the shard counts as finished from here on
        return sidecar

    def _write_score_table(self) -> None:
        """``<name>.scores.parquet``: the raw scores again, as a table, so bins are refitted from records
        without reading every record (a few dozen bytes per record against the record's kilobytes)."""
        from miro_core.data.tables import write_table

        columns = list(dict.fromkeys(k for row in self.score_rows for k in row))
        write_table(score_table_url(self.tar_url), self.score_rows, columns or ["key", "shard", "caption"])

    def abort(self) -> None:
        """Drop the unfinished shard (its temporary file is removed)."""
        import contextlib

        with contextlib.suppress(Exception):
            self._tar.close()
        err = RuntimeError("record shard aborted")
        with contextlib.suppress(RuntimeError):
            self._context.__exit__(RuntimeError, err, None)


def remove_stale_temporaries(out: str) -> int:
    """Delete temporary shard files left by a killed run; returns how many."""
    import fsspec

    stale = glob_urls(join(out, SHARDS_DIR), "*.tmp-*")
    for url in stale:
        fs, path = fsspec.core.url_to_fs(url)
        fs.rm(path)
    return len(stale)


def write_empty_caption(out: str, tokens: Any, mask: Any) -> None:
    """Tokens ``(L, D)`` and mask ``(L,)`` of the empty caption."""
    import torch
    from safetensors.torch import save

    payload = save(
        {"tokens": tokens.to("cpu", torch.float16).contiguous(), "mask": mask.to("cpu", torch.bool).contiguous()}
    )
    with atomic_open(join(out, EMPTY_CAPTION_FILE), "wb") as handle:
        handle.write(payload)


def channel_statistics(sidecars: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per-channel mean and std of every latent written (what the backbone sees as x0)."""
    sums = [s for s in sidecars if "channel_sums" in s]
    if not sums:
        return {}
    total = np.sum([s["channel_sums"] for s in sums], axis=0)
    squares = np.sum([s["channel_squares"] for s in sums], axis=0)
    count = sum(int(s["channel_count"]) for s in sums)
    mean = total / max(count, 1)
    std = np.sqrt(np.clip(squares / max(count, 1) - mean**2, 0.0, None))
    return {"channel_mean": [float(v) for v in mean], "channel_std": [float(v) for v in std]}


def write_index(out: str, header: dict[str, Any], order: list[str], complete: bool) -> dict[str, Any]:
    """Write ``records.json`` listing the finished shards in ``order`` (their names); returns it."""
    done = finished_shards(out)
    sidecars = [done[name] for name in order if name in done]
    shardlist = [{"url": s["url"], "nsamples": s["nsamples"], "source": s["source"]} for s in sidecars]
    index = {
        "format": FORMAT,
        "version": VERSION,
        "wids_version": 1,
        **header,
        "samples": sum(s["nsamples"] for s in sidecars),
        **channel_statistics(sidecars),
        "shardlist": shardlist,
        "complete": complete,
    }
    write_json(join(out, INDEX_FILE), index)
    return index
