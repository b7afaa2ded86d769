"""A small generator of bad inputs and faults, as web-scraped data brings them (used by tests/test_bad_data.py).

Everything is tiny and written in milliseconds: 16x16 images, shards of a few samples. Each builder
returns what a test needs to check the outcome (which samples exist, how many come before a fault).
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

Members = list[tuple[str, bytes]]
CAPTION = "a red circle"


# -- images ------------------------------------------------------------------------------------------
def encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def red_circle(size: int = 16) -> Image.Image:
    from PIL import ImageDraw

    image = Image.new("RGB", (size, size), (128, 128, 128))
    ImageDraw.Draw(image).ellipse((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=(220, 30, 30))
    return image


def png(size: int = 16) -> bytes:
    return encode(red_circle(size))


def gradient_8bit(width: int = 64, height: int = 16) -> np.ndarray:
    return np.tile(np.linspace(0, 255, width).round().astype(np.uint8), (height, 1))


def gradient_16bit_png(width: int = 64, height: int = 16) -> bytes:
    """A 16-bit grey PNG whose 8-bit rendering is :func:`gradient_8bit` (values v * 257)."""
    values = gradient_8bit(width, height).astype(np.uint16) * 257
    return encode(Image.fromarray(values, mode="I;16"))


def float_tiff(width: int = 64, height: int = 16) -> bytes:
    """A float (mode F) TIFF in [0, 1] showing :func:`gradient_8bit`."""
    values = gradient_8bit(width, height).astype(np.float32) / 255.0
    return encode(Image.fromarray(values, mode="F"), "TIFF")


def unusual_modes() -> dict[str, bytes]:
    """The modes web data holds besides RGB, each a valid small image."""
    base = red_circle()
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette.info["transparency"] = 0
    return {
        "i16": gradient_16bit_png(),
        "float": float_tiff(),
        "cmyk": encode(base.convert("CMYK"), "JPEG"),
        "la": encode(base.convert("LA")),
        "p_transparent": encode(palette, transparency=0),
        "rgba": encode(base.convert("RGBA")),
    }


def huge_png(side: int) -> bytes:
    """A legal PNG of ``side`` x ``side`` that compresses to almost nothing (one colour)."""
    return encode(Image.new("RGB", (side, side), (200, 30, 30)), compress_level=1)


def huge_jpeg(side: int) -> bytes:
    return encode(red_circle(side), "JPEG", quality=70)


# -- tar shards --------------------------------------------------------------------------------------
def tar_bytes(members: Iterable[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def sample(key: str, image: bytes | None = None, caption: str | None = CAPTION, ext: str = "png") -> Members:
    members: Members = []
    if image is not None:
        members.append((f"{key}.{ext}", image))
    if caption is not None:
        members.append((f"{key}.txt", caption.encode()))
    return members


def good_members(prefix: str, n: int) -> Members:
    members: Members = []
    for i in range(n):
        members += sample(f"{prefix}{i:03d}", png())
    return members


def write(path: Path, payload: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def member_offsets(payload: bytes) -> list[tuple[str, int, int]]:
    """(name, header offset, data offset) of each member of a well-formed tar."""
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:") as tar:
        return [(m.name, m.offset, m.offset_data) for m in tar.getmembers()]


# -- broken shards: (name, bytes, samples a reader keeps) --------------------------------------------
def broken_shards(prefix: str = "b") -> dict[str, tuple[bytes, int]]:
    """Every kind of unreadable shard, with how many complete samples precede the fault.

    - ``truncated_mid_member``: cut in the middle of the 4th sample's image data;
    - ``truncated_header``: cut in the middle of a member header;
    - ``no_end_marker``: cut exactly after a member (no end-of-archive blocks);
    - ``garbage_after``: valid members, then random bytes where a header should be;
    - ``zero_bytes``: an empty file; ``random_bytes``: not a tar at all.
    """
    members = good_members(prefix, 6)
    whole = tar_bytes(members)
    offsets = member_offsets(whole)
    image_4 = next(o for o in offsets if o[0] == f"{prefix}003.png")
    txt_3 = next(o for o in offsets if o[0] == f"{prefix}003.txt")
    rng = np.random.default_rng(7)
    cases = {
        "truncated_mid_member": (whole[: image_4[2] + 40], 3),
        "truncated_header": (whole[: image_4[1] + 100], 3),
        "no_end_marker": (whole[: txt_3[1]], 3),
        "garbage_after": (whole[: image_4[1]] + rng.integers(1, 255, 2048, dtype=np.uint8).tobytes(), 3),
        "zero_bytes": (b"", 0),
        "random_bytes": (rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(), 0),
    }
    return {f"{prefix}-{name}": case for name, case in cases.items()}


def duplicate_key_shard() -> tuple[bytes, dict[str, int]]:
    """Keys repeated adjacently (k001 twice in a row) and later (k000 again at the end)."""
    members = sample("k000", png()) + sample("k001", png()) + sample("k001", png(), "a blue square")
    members += sample("k002", png()) + sample("k000", png(), "a green triangle")
    return tar_bytes(members), {"k000": 2, "k001": 2, "k002": 1}


def bad_samples_shard() -> tuple[bytes, dict[str, str]]:
    """Samples that are each unusable in their own way -> the reason text each must produce (a fragment)."""
    members = sample("ok", png())
    members += sample("corrupt", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    members += sample("garbage", b"definitely not an image")
    members += sample("zero", b"")
    members += sample("noimage", None)
    members += sample("nocaption", png(), None)
    members += sample("blank", png(), "   ")
    expected = {
        "corrupt": "cannot decode image",
        "garbage": "not a known image format",
        "zero": "empty (0 bytes)",
        "noimage": "no image in the sample",
        "nocaption": "no caption",
        "blank": "empty caption",
    }
    return tar_bytes(members), expected


def write_dataset(folder: Path, shards: dict[str, bytes]) -> Path:
    for name, payload in shards.items():
        write(folder / f"{name}.tar", payload)
    return folder


def mixed_dataset(folder: Path, good_shards: int = 2, per_shard: int = 5) -> tuple[Path, dict[str, int]]:
    """Good shards interleaved with every broken kind; returns the folder and samples expected per shard."""
    shards: dict[str, bytes] = {}
    expected: dict[str, int] = {}
    for i in range(good_shards):
        shards[f"good-{i}"] = tar_bytes(good_members(f"g{i}-", per_shard))
        expected[f"good-{i}"] = per_shard
    for name, (payload, kept) in broken_shards().items():
        shards[name] = payload
        expected[name] = kept
    write_dataset(folder, shards)
    return folder, expected


def random_file(path: Path, size: int = 1000) -> Path:
    return write(path, os.urandom(size))


def scores_of(values: Sequence[object]) -> list[object]:
    """Reward outputs a misbehaving plugin might return for a batch of len(values)."""
    return list(values)


# -- what a web crawl adds: compressed shards, odd members, odd names, odd captions ----------------------
def compressed_shards(prefix: str = "z") -> dict[str, tuple[str, bytes]]:
    """Shards as crawlers store them: gzip-compressed under ``.tar`` (the extension lies), ``.tar.gz``,
    ``.tgz``, ``.tar.bz2`` and ``.tar.xz``; file name -> (shard name, bytes). Each holds 3 good samples."""
    import bz2
    import gzip
    import lzma

    return {
        f"{prefix}-gzip-named-tar.tar": (f"{prefix}-gzip-named-tar", gzip.compress(tar_bytes(good_members("a", 3)))),
        f"{prefix}-targz.tar.gz": (f"{prefix}-targz", gzip.compress(tar_bytes(good_members("b", 3)))),
        f"{prefix}-tgz.tgz": (f"{prefix}-tgz", gzip.compress(tar_bytes(good_members("c", 3)))),
        f"{prefix}-bz2.tar.bz2": (f"{prefix}-bz2", bz2.compress(tar_bytes(good_members("e", 3)))),
        f"{prefix}-xz.tar.xz": (f"{prefix}-xz", lzma.compress(tar_bytes(good_members("f", 3)))),
    }


def special_members_shard() -> tuple[bytes, dict[str, str]]:
    """Members that are not regular files, or that name no sample -> the reason fragment each must produce.

    A directory entry is structure and is skipped; ``good`` is the one usable sample."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add(name: str, payload: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))

        def link(name: str, target: str, kind: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)

        folder = tarfile.TarInfo("folder")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        add("good.png", png())
        add("good.txt", CAPTION.encode())
        link("symlink.png", "good.png", tarfile.SYMTYPE)
        add("symlink.txt", CAPTION.encode())
        link("hardlink.png", "good.png", tarfile.LNKTYPE)
        add("hardlink.txt", CAPTION.encode())
        add("fifo.png", png())
        link("fifo.txt", "", tarfile.FIFOTYPE)
        add("README", b"no extension")
        add(".hidden.png", png())
        add("a.b.png", png())  # the key is "a", the extension "b.png": webdataset's rule
        add("a.b.txt", CAPTION.encode())
        add("latin1.png", png())
        add("latin1.txt", "caf\xe9 cr\xe8me".encode("latin-1"))
    expected = {
        "symlink": "symbolic link",
        "hardlink": "hard link",
        "fifo": "not a regular file",
        "README": "has no extension",
        ".hidden.png": "no key before its first dot",
        "a": "a.b.png, a.b.txt have no image extension",
        "latin1": "not valid UTF-8 (byte 0xe9 at position 3)",
    }
    return buffer.getvalue(), expected


def edited_score_tables(folder: Path, columns: Sequence[str]) -> dict[str, Path]:
    """Annotation folders whose second score table was edited by hand, each in its own way -> the folder.

    ``columns`` are the reward columns of the tables; every folder gets two tables of 2 rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def table(shard: str, **change: object) -> pa.Table:
        data: dict[str, object] = {"key": ["k0", "k1"], "shard": [shard] * 2, "caption": [CAPTION] * 2}
        data.update({name: [0.25, 0.75] for name in columns})
        data.update(change)
        return pa.table({name: value for name, value in data.items() if value is not None})

    cases = {
        "truncated": None,
        "missing_column": {columns[-1]: None},
        "extra_column": {"bogus": [1.0, 2.0]},
        "text_scores": {columns[0]: ["high", "low"]},
        "no_key": {"key": None},
    }
    made: dict[str, Path] = {}
    for name, change in cases.items():
        scores = folder / name / "scores"
        scores.mkdir(parents=True)
        pq.write_table(table("s0"), scores / "s0.parquet")
        if change is None:
            pq.write_table(table("s1"), scores / "s1.parquet")
            payload = (scores / "s1.parquet").read_bytes()
            (scores / "s1.parquet").write_bytes(payload[: len(payload) // 2])
        else:
            pq.write_table(table("s1", **change), scores / "s1.parquet")
        made[name] = folder / name
    return made


def damaged_bins(payload: dict, reward: str) -> dict[str, dict]:
    """A valid bins file's JSON, damaged by hand in every way that would silently misplace levels."""
    import copy

    def changed(edit) -> dict:  # noqa: ANN001 - a small local callback
        damaged = copy.deepcopy(payload)
        edit(damaged["rewards"][reward])
        return damaged

    def set_edge(value: float):  # noqa: ANN202
        return lambda state: state["edges"].__setitem__(1, value)

    cases = {
        "nan_edge": changed(set_edge(float("nan"))),
        "inf_edge": changed(set_edge(float("inf"))),
        "null_edge": changed(set_edge(None)),
        "descending": changed(lambda state: state["edges"].reverse()),
        "too_few_edges": changed(lambda state: state.__setitem__("edges", state["edges"][:1])),
        "negative_bins": changed(lambda state: state.__setitem__("num_bins", -3)),
    }
    no_rewards = copy.deepcopy(payload)
    no_rewards["rewards"] = {}
    cases["no_rewards"] = no_rewards
    return cases


# -- records damaged after encoding -------------------------------------------------------------------
def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def replace_member(shard: Path, member: str, payload: bytes) -> None:
    """Rewrite the tar ``shard`` with ``member``'s bytes replaced (its ``.index.npy`` is then out of date)."""
    with tarfile.open(shard) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    shard.write_bytes(tar_bytes((name, payload if name == member else data) for name, data in members))


def scramble_member(shard: Path, index: np.ndarray, record: int, field: int) -> None:
    """Overwrite one member's data in place with random bytes, as a bad disk sector does (index stays right)."""
    offset, size = (int(v) for v in index[record, field])
    with open(shard, "r+b") as handle:
        handle.seek(offset)
        handle.write(np.random.default_rng(record).integers(0, 256, size, dtype=np.uint8).tobytes())
