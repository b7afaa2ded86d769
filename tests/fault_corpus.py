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
