"""Image-caption datasets as webdataset tar shards on any fsspec URL.

A sample is ``KEY.png`` (or .jpg/.webp/...), ``KEY.txt`` (the caption) and optionally ``KEY.json``
(metadata): consecutive tar members sharing a key, webdataset's layout. Shards are read sequentially and
never fully into memory, so annotation streams.

Why a reader of our own instead of webdataset's ``tar_file_iterator`` + ``group_by_keys``: web-scale
shard sets always contain a few broken shards, and those two give no way to keep going. ``group_by_keys``
raises ``ValueError`` on a key repeated in adjacent members (the generator is then dead, the rest of the
shard lost), keeps a key repeated later as a second sample with the same key, and Python's ``tarfile``
silently stops at a corrupt or truncated header in the middle of a shard. This reader, a few lines over
``tarfile``'s own header parser (``TarInfo.fromtarfile``), yields every sample it can read, flags
duplicate keys (:attr:`RawSample.duplicate`) instead of failing or dropping them, and ends a damaged shard
with a :class:`~miro_core.errors.ShardReadError` that says where and why, *after* yielding every sample
read before the fault, so the caller keeps them.
"""

from __future__ import annotations

import io
import json
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from miro_core.data.atomic import atomic_open, filesystem, glob_urls, join, write_json
from miro_core.data.decode import describe_error
from miro_core.errors import DataError, ShardReadError, StorageError

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif", "jp2", "j2k")
#: What a shard file may be called: plain tar, or gzip-compressed tar (read transparently, as webdataset does).
#: Shard file names; the compressed ones are decompressed on the fly by tarfile's ``r|*`` (see open_shard).
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
CAPTION_EXTENSIONS = ("txt", "caption", "text")
INDEX_FILE = "index.json"
#: Members larger than this are not read into memory (their sample becomes a row-level error).
MAX_MEMBER_BYTES = 256 * 2**20


@dataclass
class RawSample:
    """One undecoded sample as stored in a shard."""

    key: str
    shard: str
    image_bytes: bytes | None
    caption: str | None
    meta: dict[str, Any] = field(default_factory=dict)
    #: Position of the sample in its shard (0, 1, ...), duplicates included.
    index: int = 0
    #: An earlier sample of the same shard has the same key; this one is not the sample the key names.
    duplicate: bool = False
    #: Why the sample is unusable as stored (an oversized member), or None.
    problem: str | None = None


def list_shards(url: str) -> list[str]:
    """The ``.tar`` shards at ``url``: a single shard, or every shard in a folder (sorted).

    Raises DataError when there is nothing to read, StorageError when the location cannot be reached.
    """
    fs, path = filesystem(url)
    try:
        found = fs.exists(path)
        is_file = found and fs.isfile(path)
    except (FileNotFoundError, NotADirectoryError):
        found, is_file = False, False
    except Exception as err:  # noqa: BLE001 - network and permission faults of any fsspec backend
        raise StorageError(f"cannot reach {url}: {describe_error(err)}; check the address and the network") from None
    if is_shard_url(path) or is_file:
        if not found:
            raise DataError(f"shard {url} does not exist")
        if not is_shard_url(path):
            raise DataError(f"{url} is a file but not a .tar shard; pass a folder of .tar shards or one .tar file")
        return [url]
    if not found:
        if url.startswith("memory://"):  # `miro data shapes --out memory://...` is refused: it would be lost
            raise DataError(
                f"dataset {url} does not exist: an in-memory filesystem lives only inside one process, so "
                "another command cannot read it; write the data to a folder or a persistent URL (file://, s3://)"
            )
        raise DataError(f"dataset {url} does not exist; create one with `miro data shapes --out {url}`")
    try:
        shards = sorted({s for suffix in SHARD_SUFFIXES for s in glob_urls(url, f"*{suffix}")})
    except Exception as err:  # noqa: BLE001
        raise StorageError(f"cannot list {url}: {describe_error(err)}") from None
    if not shards:
        raise DataError(f"no .tar shards in {url}")
    by_name: dict[str, str] = {}
    for shard in shards:
        other = by_name.setdefault(shard_name(shard), shard)
        if other != shard:  # x.tar and x.tar.gz would write the same per-shard tables
            raise DataError(
                f"{other} and {shard} are two shards named {shard_name(shard)!r}; per-shard outputs are named by "
                "it, so keep one of them (or rename the other)"
            )
    return shards


def is_shard_url(url: str) -> bool:
    """Whether ``url`` names a shard file (``.tar``, ``.tar.gz``, ``.tgz``, ``.tar.bz2`` or ``.tar.xz``)."""
    return str(url).rstrip("/").lower().endswith(SHARD_SUFFIXES)


def shard_name(url: str) -> str:
    """The file stem of a shard (``shard-000003``), used to name per-shard outputs."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    for suffix in sorted(SHARD_SUFFIXES, key=len, reverse=True):  # .tar.gz before .tar
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def split_member_name(name: str) -> tuple[str, str] | None:
    """``dir/abc.seg.png`` -> (``dir/abc``, ``seg.png``), as webdataset splits keys; None without an extension."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem:
        return None
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _next_member(tar: tarfile.TarFile, after: str) -> tarfile.TarInfo | None:
    """The next member header, None at the end-of-archive marker, ShardReadError on anything else."""
    where = f"after member {after!r}" if after else "at the start"
    tar.fileobj.seek(tar.offset)  # skip the previous member's data (a forward seek in stream mode)
    try:
        return tarfile.TarInfo.fromtarfile(tar)
    except tarfile.EOFHeaderError:
        return None
    except tarfile.EmptyHeaderError:
        raise ShardReadError(
            f"the archive ends {where} without tar's end-of-archive marker: it was probably cut short"
        ) from None
    except tarfile.TruncatedHeaderError:
        raise ShardReadError(f"truncated tar: a member header is cut short {where}") from None
    except (tarfile.InvalidHeaderError, tarfile.SubsequentHeaderError) as err:
        raise ShardReadError(f"corrupt tar member header {where} (byte {tar.offset}): {err}") from None
    except tarfile.ReadError as err:
        raise ShardReadError(f"unreadable tar data {where}: {err}") from None


def _link_note(info: tarfile.TarInfo) -> str | None:
    """Why a member that is not a regular file has no payload (links are never followed), or None to skip it."""
    if info.issym():
        return f"a symbolic link (to {info.linkname!r}), which is not followed"
    if info.islnk():
        return f"a hard link (to {info.linkname!r}), which is not followed"
    if info.isdir():
        return None  # folders are structure, not data
    return "not a regular file (a device or FIFO entry)"


def iter_members(handle: Any) -> Iterator[tuple[str, bytes | None, int, str | None]]:
    """(name, payload, size, note) of every member in order; payload None above MAX_MEMBER_BYTES.

    ``note`` is None for a regular file; for a link, a device or a FIFO entry the payload is None and the
    note says what the member is, so its sample becomes an error row instead of vanishing. A
    gzip-compressed shard is decompressed on the fly (``r|*``), as webdataset reads ``.tar.gz``.
    """
    try:
        tar = tarfile.open(fileobj=handle, mode="r|*")
    except tarfile.ReadError as err:
        reason = "the file is empty (0 bytes)" if "empty file" in str(err) else f"not a tar archive ({err})"
        raise ShardReadError(reason) from None
    except (EOFError, OSError, zlib.error) as err:
        raise ShardReadError(f"not a readable tar archive: {describe_error(err)}") from None
    info = tar.firstmember
    while info is not None:
        if not info.isfile():
            note = _link_note(info)
            if note is not None:
                yield info.name, None, 0, note
        else:
            payload: bytes | None = None
            if info.size <= MAX_MEMBER_BYTES:
                extracted = tar.extractfile(info)
                try:
                    payload = extracted.read() if extracted is not None else b""
                except (tarfile.ReadError, EOFError, OSError, zlib.error) as err:
                    raise ShardReadError(f"truncated tar: member {info.name!r} is cut short ({err})") from None
                if len(payload) != info.size:
                    raise ShardReadError(
                        f"truncated tar: member {info.name!r} has {len(payload)} of its {info.size} bytes"
                    )
            yield info.name, payload, info.size, None
        info = _next_member(tar, info.name)


def _open_shard(url: str) -> Any:
    fs, path = filesystem(url)
    try:
        return fs.open(path, "rb")
    except FileNotFoundError:
        raise ShardReadError("the shard does not exist (any more)") from None
    except Exception as err:  # noqa: BLE001 - unreachable URL, permission, backend errors
        raise ShardReadError(f"cannot open the shard: {describe_error(err)}") from None


def iter_shard(url: str, *, include_duplicates: bool = False) -> Iterator[RawSample]:
    """Stream the samples of one shard in order.

    A key repeated in the shard (adjacent or not) is yielded again with ``duplicate=True`` when
    ``include_duplicates`` is set (the annotation engine records it), and skipped otherwise, so a key
    always names its first sample. A shard that cannot be read, or stops being readable midway, raises
    :class:`ShardReadError` after every sample read before the fault has been yielded.
    """
    seen: set[str] = set()
    index = 0
    group: dict[str, tuple[bytes | None, int, str | None]] = {}
    group_prefix: str | None = None
    strays: list[RawSample] = []
    last_member = ""

    def emit() -> Iterator[RawSample]:
        nonlocal index
        if group_prefix is not None:
            sample = _make_sample(url, group_prefix, group, index)
            sample.duplicate = sample.key in seen
            seen.add(sample.key)
            index += 1
            if include_duplicates or not sample.duplicate:
                yield sample
        for stray in strays:  # members that belong to no sample, recorded after the sample they interrupted
            stray.index = index
            index += 1
            yield stray
        strays.clear()

    with _open_shard(url) as handle:
        try:
            for name, payload, size, note in iter_members(handle):
                last_member = name
                base = name.rsplit("/", 1)[-1]
                if base.startswith("__"):
                    continue  # webdataset's __key__ / __meta__ members are not data
                parts = split_member_name(name)
                if parts is None:
                    strays.append(_stray(url, base))
                    continue
                prefix, ext = parts
                if prefix != group_prefix or ext in group:  # a new sample (or the same key repeated)
                    yield from emit()
                    group, group_prefix = {}, prefix
                group[ext] = (payload, size, note)
        except Exception as err:  # noqa: BLE001 - a damaged archive, or I/O failing midway (network, device)
            # The sample being assembled was read before the fault: keep it (if its caption or image is
            # missing because of the fault, its row-level error says so and the shard error says why).
            yield from emit()
            if isinstance(err, ShardReadError):
                raise
            where = f" after member {last_member!r}" if last_member else ""
            raise ShardReadError(f"read failed{where}: {describe_error(err)}") from None
        yield from emit()


def _stray(url: str, base: str) -> RawSample:
    """A member that names no sample (no extension, or a name starting with a dot): an error row, not a silent skip."""
    why = "has no extension" if "." not in base else "has no key before its first dot"
    return RawSample(
        key=base,
        shard=url,
        image_bytes=None,
        caption=None,
        problem=(
            f"member {base!r} {why}, so it belongs to no sample (webdataset members are named KEY.EXTENSION, "
            "the key ending at the first dot); it was not used"
        ),
    )


def _member_problem(key: str, ext: str, size: int, note: str | None, what: str) -> str:
    if note is not None:
        return f"{what} member {key}.{ext} is {note}"
    return f"{what} member is {size / 2**20:.0f} MiB, above the {MAX_MEMBER_BYTES // 2**20} MiB limit"


def _make_sample(url: str, prefix: str, group: dict[str, tuple[bytes | None, int, str | None]],
                 index: int) -> RawSample:
    key = prefix.rsplit("/", 1)[-1]
    problem = None
    image: bytes | None = None
    for ext in IMAGE_EXTENSIONS:
        if ext in group:
            image, size, note = group[ext]
            if image is None:
                problem = _member_problem(key, ext, size, note, "image")
            break
    else:
        unknown = sorted(ext for ext in group if ext not in (*CAPTION_EXTENSIONS, "json"))
        if unknown:
            problem = (
                f"no image in the sample: member(s) {', '.join(f'{key}.{ext}' for ext in unknown)} have no image "
                f"extension ({', '.join(IMAGE_EXTENSIONS)}); the key of a webdataset member ends at its first dot"
            )
    caption: str | None = None
    caption_ext = next((ext for ext in CAPTION_EXTENSIONS if ext in group), None)
    if caption_ext is not None:
        caption_bytes, size, note = group[caption_ext]
        if caption_bytes is None:
            problem = problem or _member_problem(key, caption_ext, size, note, "caption")
        else:
            try:
                caption = caption_bytes.decode("utf-8-sig")  # a leading byte-order mark is not caption text
            except UnicodeDecodeError as err:
                problem = problem or (
                    f"caption {key}.{caption_ext} is not valid UTF-8 (byte 0x{caption_bytes[err.start]:02x} at "
                    f"position {err.start}); re-encode it as UTF-8"
                )
                caption = caption_bytes.decode("utf-8", errors="replace")
    meta: dict[str, Any] = {}  # KEY.json is not used by annotation or encoding: an unreadable one is ignored
    if "json" in group and group["json"][0] is not None:
        try:
            loaded = json.loads(group["json"][0].decode("utf-8"))
            meta = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            meta = {}
    return RawSample(
        key=key,
        shard=url,
        image_bytes=image,
        caption=caption,
        meta=meta,
        index=index,
        problem=problem,
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
