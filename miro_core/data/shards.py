"""Image-caption datasets as webdataset tar shards on any fsspec URL.

A sample is ``KEY.png`` (or .jpg/.webp), ``KEY.txt`` (the caption) and optionally ``KEY.json``
(metadata). Shards are read sequentially and never fully into memory, so annotation streams.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec

from miro_core.data.atomic import atomic_open, glob_urls, join, write_json
from miro_core.errors import DataError

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff")
CAPTION_EXTENSIONS = ("txt", "caption", "text")
INDEX_FILE = "index.json"


@dataclass
class RawSample:
    """One undecoded sample as stored in a shard."""

    key: str
    shard: str
    image_bytes: bytes | None
    caption: str | None
    meta: dict[str, Any] = field(default_factory=dict)


def list_shards(url: str) -> list[str]:
    """The ``.tar`` shards at ``url``: a single shard, or every shard in a folder (sorted)."""
    fs, path = fsspec.core.url_to_fs(url)
    if path.endswith(".tar"):
        if not fs.exists(path):
            raise DataError(f"shard {url} does not exist")
        return [url]
    if not fs.exists(path):
        raise DataError(f"dataset {url} does not exist; create one with `miro data shapes --out {url}`")
    shards = glob_urls(url, "*.tar")
    if not shards:
        raise DataError(f"no .tar shards in {url}")
    return shards


def shard_name(url: str) -> str:
    """The file stem of a shard (``shard-000003``), used to name per-shard outputs."""
    return url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".tar")


def iter_shard(url: str) -> Iterator[RawSample]:
    """Stream the samples of one shard in order (webdataset groups the tar members by key)."""
    import json

    from webdataset.tariterators import group_by_keys, tar_file_iterator

    def members(handle: Any) -> Iterator[dict[str, Any]]:
        for member in tar_file_iterator(handle):
            member["__url__"] = url
            yield member

    with fsspec.open(url, "rb") as handle:
        for sample in group_by_keys(members(handle)):
            image = next((sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample), None)
            caption = next((sample[ext] for ext in CAPTION_EXTENSIONS if ext in sample), None)
            meta: dict[str, Any] = {}
            if "json" in sample:
                try:
                    meta = json.loads(sample["json"].decode("utf-8"))
                except ValueError:
                    meta = {}
            yield RawSample(
                key=sample["__key__"].rsplit("/", 1)[-1],
                shard=url,
                image_bytes=image,
                caption=caption.decode("utf-8", errors="replace") if caption is not None else None,
                meta=meta,
            )


def encode_png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=1)
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mode = 0o444
    tar.addfile(info, io.BytesIO(payload))


def write_shard(url: str, samples: Iterable[tuple[str, Any, str, dict[str, Any]]]) -> int:
    """Write one shard atomically from (key, PIL image, caption, meta) tuples; returns the count.

    Written with the standard tarfile module in webdataset's layout (KEY.ext members, in key order)
    rather than webdataset.TarWriter, because TarWriter imports torch and this runs in the light CLI.
    """
    import json

    count = 0
    with atomic_open(url, "wb") as handle, tarfile.open(fileobj=handle, mode="w") as tar:
        for key, image, caption, meta in samples:
            _add(tar, f"{key}.png", encode_png(image))
            _add(tar, f"{key}.txt", caption.encode("utf-8"))
            _add(tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode("utf-8"))
            count += 1
    return count


def write_index(out: str, shards: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    write_json(join(out, INDEX_FILE), {"shards": shards, **extra})
