"""Names inside a records folder and its index, ``records.json``.

``records.json`` is written last (by rank 0, after every process finished its shards), so a folder
without it, or with ``"complete": false``, is an unfinished ``miro encode`` that a rerun completes.
It is at the same time a valid wids dataset descriptor (``wids_version``, ``shardlist`` of
``{"url", "nsamples"}`` relative to the folder), so wids and webdataset tools can read the shards too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from miro_core.data.atomic import exists, join, read_json
from miro_core.errors import DataError

FORMAT = "miro-records"
VERSION = 1
INDEX_FILE = "records.json"
SHARDS_DIR = "shards"
EMPTY_CAPTION_FILE = "empty_caption.safetensors"

#: Member extensions of one sample (``KEY.<ext>``); the model input is ``image.npy`` or ``latent.npy``.
INPUT_MEMBER = {"pixels": "image.npy", "latents": "latent.npy"}
#: dtype of the model input as written: uint8 pixels, float16 latents.
INPUT_DTYPE = {"pixels": "uint8", "latents": "float16"}
TOKENS_MEMBER = "tokens.npy"
MASK_MEMBER = "mask.npy"
META_MEMBER = "json"

InputKind = Literal["pixels", "latents"]


def is_records(url: str) -> bool:
    """Whether ``url`` is a records folder (it has ``records.json``)."""
    return exists(join(url, INDEX_FILE))


def member_index_url(tar_url: str) -> str:
    """``<name>.index.npy`` beside ``<name>.tar``: int64 ``(records, members, 2)`` of data offset and size."""
    return tar_url.removesuffix(".tar") + ".index.npy"


def score_table_url(tar_url: str) -> str:
    """``<name>.scores.parquet`` beside ``<name>.tar``: key, source shard, caption and raw scores of each record
    in record order (an annotation table), so ``miro bins fit RECORDS`` reads a small table per shard instead
    of every record."""
    return tar_url.removesuffix(".tar") + ".scores.parquet"


def record_key(index: int) -> str:
    """Key of the ``index``-th record of a shard: digits only, so no tool splits it at a dot."""
    return f"{index:07d}"


@dataclass
class RecordsInfo:
    """A parsed ``records.json``: what the records hold and where their shards are."""

    url: str
    input_kind: InputKind
    #: ``(C, H, W)`` of the model input (pixels at the training size, or latents).
    input_shape: tuple[int, int, int]
    image_size: int
    autoencoder: dict[str, Any]
    text_encoder: dict[str, Any]
    #: Score columns stored with every record (raw reward scores, before binning).
    score_keys: list[str]
    #: ``[{"url": absolute shard URL, "nsamples": n, ...}]`` in source order.
    shards: list[dict[str, Any]]
    source: str = ""
    channel_mean: list[float] | None = None
    channel_std: list[float] | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def samples(self) -> int:
        return sum(int(s["nsamples"]) for s in self.shards)

    @property
    def shard_sizes(self) -> list[int]:
        return [int(s["nsamples"]) for s in self.shards]

    @property
    def input_member(self) -> str:
        return INPUT_MEMBER[self.input_kind]

    @property
    def text_shape(self) -> tuple[int, int]:
        """``(L, D)`` of each record's text tokens."""
        return int(self.text_encoder["max_length"]), int(self.text_encoder["dim"])


def read_records(url: str) -> RecordsInfo:
    """The index of a finished records folder, or a DataError saying what to run."""
    index_url = join(url, INDEX_FILE)
    if not exists(index_url):
        raise DataError(
            f"{url} is not a records folder (no {INDEX_FILE}); write one with `miro encode ANNOTATIONS --out {url}`"
        )
    try:
        payload = read_json(index_url)
    except ValueError as err:
        raise DataError(
            f"{index_url} is not valid JSON ({err}); delete it and rerun the `miro encode` command that wrote it (the "
            "finished shards are kept and it is written again)"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(f'{index_url} is not a miro records index (no "format": "{FORMAT}")')
    if int(payload.get("version", 0)) > VERSION:
        raise DataError(f"{index_url} has records format version {payload.get('version')}; upgrade miro to read it")
    if not payload.get("complete"):
        raise DataError(
            f"the records at {url} are unfinished; run the same `miro encode` command again to complete them"
        )
    try:
        shards = [{**s, "url": join(url, s["url"]), "nsamples": _count(s["nsamples"])} for s in payload["shardlist"]]
        info = RecordsInfo(
            url=url,
            input_kind=payload["input"]["kind"],
            input_shape=tuple(int(v) for v in payload["input"]["shape"]),  # type: ignore[arg-type]
            image_size=int(payload["image_size"]),
            autoencoder=payload["autoencoder"],
            text_encoder=payload["text_encoder"],
            score_keys=list(payload.get("score_keys", [])),
            shards=shards,
            source=payload.get("source", ""),
            channel_mean=payload.get("channel_mean"),
            channel_std=payload.get("channel_std"),
            raw=payload,
        )
        if info.input_kind not in INPUT_MEMBER or len(info.input_shape) != 3:
            raise ValueError(f"input {payload['input']!r} is neither pixels nor latents of shape (C, H, W)")
        info.text_shape  # noqa: B018 - checks max_length and dim are there
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        what = f"no {err}" if isinstance(err, KeyError) else str(err)
        raise DataError(
            f"{index_url} is damaged ({what}); rerun the `miro encode` command that wrote it (the finished shards "
            "are kept and it is written again)"
        ) from None
    if not shards or sum(s["nsamples"] for s in shards) == 0:
        raise DataError(f"the records at {url} hold no samples")
    return info


def _count(value: Any) -> int:
    """A shard's ``nsamples``: a non-negative whole number."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"nsamples {value!r} is not a count of records")
    return value
