"""``miro encode``: turn annotations (or bare shards) into training records, once.

For every input shard one records shard holds, per usable sample, everything a training step reads: the
model input (pixels at the training size, or latents from an autoencoder plugin), the text encoder's tokens
and mask, and the raw reward scores (see :mod:`miro_core.records`). The autoencoder and the text encoder run
here and never in the training loop.

Decoding, mode conversion (``image_modes.to_rgb8``), resizing and cropping run in DataLoader worker
processes, one input shard per worker at a time, while the main process runs the autoencoder and the text
encoder on the device; the summary reports images/s and the share of the wall time the device waited for
the workers. Shards are split across ``accelerate launch`` processes like annotation; every finished shard
is renamed into place before its sidecar is written, so a run killed at any moment resumes with the shards
it had not finished.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from miro_core.data.atomic import exists, is_local, join, read_json, write_json
from miro_core.errors import ConfigError, DataError

STATISTICS_FILENAME = "latent_statistics.json"
#: Options whose local paths are recorded absolute, so records and run folders work from any directory.
PATH_OPTIONS = ("checkpoint", "statistics")


class EncodeConfig(BaseModel):
    """Options of ``miro encode`` (and of the records cache ``miro train`` builds from annotations)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    data: str
    out: str | None = None
    autoencoder: str = "sdxl-vae"
    autoencoder_options: dict[str, Any] = {}
    image_size: int = 256
    text_encoder: str = "minilm"
    text_encoder_options: dict[str, Any] = {}
    batch_size: int = 64
    device: str = "cpu"
    #: DataLoader worker processes that decode and preprocess images (0: in the main process).
    workers: int = 2
    #: Images used to fit the autoencoder's normalisation statistics when it supports it and none are given.
    statistics_images: int = 512


def absolute_paths(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with existing local ``checkpoint``/``statistics`` paths made absolute."""
    out = dict(options)
    for key in PATH_OPTIONS:
        value = out.get(key)
        if isinstance(value, str) and value and Path(value).expanduser().exists():
            out[key] = str(Path(value).expanduser().resolve())
    return out


def _comparable(options: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in absolute_paths(options).items() if k != "statistics"}


def effective_options(registry: Any, table: str, name: str, options: dict[str, Any]) -> dict[str, str]:
    """The options a component runs with, for comparing two settings: its ``Options`` defaults filled in,
    local paths absolute, values as strings, ``statistics`` left out (the records' own is adopted).

    ``{max_length: 32}`` where 32 is the default is the same text encoder as ``{}``; comparing what was
    written would refuse the one and, worse, accept ``{}`` against records written with ``{max_length: 16}``.
    Options the component does not accept are compared as given.
    """
    filled = dict(options)
    try:
        filled = getattr(registry, table).get(name).Options(**options).model_dump(mode="json")
    except Exception:  # noqa: BLE001 - unknown component or invalid options: compare what was written
        pass
    return _comparable(filled)


def absolute_url(url: str) -> str:
    """A local path made absolute (records and run folders are read from other directories); URLs as given."""
    if "://" in url:
        return url
    return str(Path(url).expanduser().resolve())


def default_records_dir(cfg: EncodeConfig) -> str:
    """``cache/records/<autoencoder>-<size>-<text encoder>-<hash>`` next to the annotations.

    The hash covers every option that changes the records, so ``miro train --data ANNOTATIONS`` finds
    what ``miro encode ANNOTATIONS`` wrote with the same options, and never records of other options.
    """
    settings = [
        cfg.autoencoder,
        _comparable(cfg.autoencoder_options),
        cfg.image_size,
        cfg.text_encoder,
        _comparable(cfg.text_encoder_options),
    ]
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    name = f"{cfg.autoencoder}-{cfg.image_size}-{cfg.text_encoder}-{digest}".replace("/", "_").replace(":", "_")
    from miro_core.data.shards import is_shard_url

    data = cfg.data.rstrip("/")
    base = data if not (is_shard_url(data) or data.endswith(".parquet")) else data.rsplit("/", 1)[0]
    return join(base, "cache", "records", name)


# -- inputs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One input shard: the records shard name, the annotation table (if any) and the image shard."""

    name: str
    table: str | None
    shard: str | None


def plan_sources(data: str) -> tuple[list[Source], list[str]]:
    """The input shards in order, and the score columns of the annotations (none for bare shards)."""
    from miro_core.data.shards import list_shards, shard_name

    if exists(join(data, "scores")) or data.endswith(".parquet"):
        from miro_core.bins import annotation_tables
        from miro_core.data.tables import check_score_tables

        tables = annotation_tables(data)
        scores = check_score_tables(tables)
        names = [t.rstrip("/").rsplit("/", 1)[-1].removesuffix(".parquet") for t in tables]
        return [Source(name, table, None) for name, table in zip(names, tables)], scores
    return [Source(shard_name(s), None, s) for s in list_shards(data)], []


def decode_rgb(payload: bytes | None) -> Any:
    """Decode image bytes (capped against decompression bombs) to 8-bit RGB with the framework's
    conversion (16-bit rescaled, transparency on white); raises ValueError with the reason."""
    from miro_core.data.decode import decode_image
    from miro_core.image_modes import to_rgb8

    image, reason = decode_image(payload)
    if image is None:
        raise ValueError(reason)
    return to_rgb8(image)


def resize_crop(image: Any, size: int) -> np.ndarray:
    """Resize the short side to ``size`` (bicubic), centre-crop to a square: uint8 ``(3, size, size)``."""
    from PIL import Image

    width, height = image.size
    limit = 8 * min(width, height)
    if max(width, height) > limit:
        # A strip (1x20000) would be scaled to size x 20000*size before the crop: keep only the centre of its long
        # side first (the crop below takes the middle of it anyway; the same crop to within a sub-pixel shift), so
        # time and memory stay bounded. Images up to 8:1 are resized exactly as before.
        left, top = max(0, (width - limit) // 2), max(0, (height - limit) // 2)
        image = image.crop((left, top, left + min(width, limit), top + min(height, limit)))
        width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    if (left, top, new_w, new_h) != (0, 0, size, size):
        image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()


def _table_rows(table: str) -> tuple[str, dict[str, tuple[str, dict[str, float | None]]]]:
    """The image shard of an annotation table and ``key -> (caption, scores)`` of its rows."""
    from miro_core.bins import NON_REWARD_COLUMNS
    from miro_core.data.tables import read_table

    rows = read_table(table).to_pydict()
    if not rows.get("key"):
        return "", {}
    names = [c for c in rows if c not in NON_REWARD_COLUMNS]
    out: dict[str, tuple[str, dict[str, float | None]]] = {}
    for i, key in enumerate(rows["key"]):
        scores = {n: _finite_or_none(rows[n][i]) for n in names}
        out[str(key)] = ((rows["caption"][i] or "").strip(), scores)
    return str(rows["shard"][0]), out


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


@dataclass
class DecodedBatch:
    """What a worker hands to the main process: preprocessed images of one input shard."""

    name: str
    source: str
    keys: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    scores: list[dict[str, float | None]] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    skipped: int = 0
    last: bool = False
    #: Why the input shard could not be read to its end (last batch only); the records before it are kept.
    fault: str | None = None
    decode_seconds: float = 0.0


class ShardImages(torch.utils.data.IterableDataset):
    """Decoded, resized images of the pending shards; worker ``w`` of ``W`` takes shards ``w, w+W, ...``."""

    def __init__(self, sources: list[Source], image_size: int, batch_size: int) -> None:
        self.sources = sources
        self.image_size = image_size
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[DecodedBatch]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for source in self.sources[worker::workers]:
            yield from self.shard_batches(source)

    def shard_batches(self, source: Source) -> Iterator[DecodedBatch]:
        from miro_core.data.shards import iter_shard
        from miro_core.errors import ShardReadError

        rows: dict[str, tuple[str, dict[str, float | None]]] | None = None
        shard = source.shard
        if source.table is not None:
            shard, rows = _table_rows(source.table)
        batch = DecodedBatch(source.name, shard or "")
        seen: set[str] = set()
        try:
            for raw in iter_shard(shard, include_duplicates=True) if shard else iter(()):
                if raw.key in seen or raw.duplicate:
                    batch.skipped += rows is None  # (annotations recorded their duplicates already)
                    continue
                seen.add(raw.key)
                if rows is not None:
                    if raw.key not in rows:
                        continue  # an annotation error row: no scores, not a training sample
                    caption, scores = rows[raw.key]
                else:
                    caption, scores = (raw.caption or "").strip(), {}
                start = time.perf_counter()
                try:
                    if raw.problem is not None or raw.image_bytes is None or not caption:
                        raise ValueError(raw.problem or "no image or empty caption")
                    pixels = resize_crop(decode_rgb(raw.image_bytes), self.image_size)
                except Exception:  # noqa: BLE001 - one bad sample is skipped and counted, the run goes on
                    batch.skipped += 1
                    continue
                finally:
                    batch.decode_seconds += time.perf_counter() - start
                batch.keys.append(raw.key)
                batch.captions.append(caption)
                batch.scores.append(scores)
                batch.images.append(pixels)
                if len(batch.keys) == self.batch_size:
                    yield batch
                    batch = DecodedBatch(source.name, batch.source)
            # scored rows whose sample is not in the shard (replaced or edited since annotation) are counted
            batch.skipped += len(rows.keys() - seen) if rows is not None else 0
        except ShardReadError as err:  # the samples before the fault are encoded; the fault is recorded
            batch.fault = f"{shard}: {err}"
        batch.last = True
        yield batch


def _as_is(batch: DecodedBatch) -> DecodedBatch:
    """Workers hand over whole batches; nothing to collate."""
    return batch


# -- the run ----------------------------------------------------------------------------------------


@dataclass
class EncodeSummary:
    """Where the time went: images/s and the share of the wall time the device waited for data."""

    samples: int = 0
    skipped: int = 0
    shards_written: int = 0
    shards_skipped: int = 0
    wall: float = 0.0
    wait: float = 0.0
    device: float = 0.0
    decode: float = 0.0
    #: Records shard -> why its input shard could not be read to its end (the records before it are kept).
    unreadable: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "skipped": self.skipped,
            "unreadable_shards": dict(self.unreadable),
            "shards_written": self.shards_written,
            "shards_skipped": self.shards_skipped,
            "wall_seconds": round(self.wall, 3),
            "images_per_second": round(self.samples / self.wall, 2) if self.wall > 0 else None,
            "device_seconds": round(self.device, 3),
            "device_wait_seconds": round(self.wait, 3),
            "device_wait_share": round(self.wait / self.wall, 4) if self.wall > 0 else None,
            "worker_decode_seconds": round(self.decode, 3),
        }


class CaptionCache:
    """Text-encoder outputs of recently seen captions, so a repeated caption is encoded once.

    Web captions rarely repeat, synthetic and templated ones often do (the shapes world: 858 distinct
    captions in 6000 samples). Least recently used entries go first once ``max_bytes`` is reached.
    """

    def __init__(self, max_bytes: int = 256 * 2**20, registry: Any = None) -> None:
        from collections import OrderedDict

        self.registry = registry  # names the text encoder's distribution when its output breaks the contract
        self.max_bytes = max_bytes
        self.bytes = 0
        self.entries: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def encode(self, encoder: Any, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``tokens (B, L, D)`` float16 and ``mask (B, L)`` bool for ``captions``."""
        new = list(dict.fromkeys(c for c in captions if c not in self.entries))
        if new:
            from miro_core.network_contract import checked_text_encoding

            tokens, masks = checked_text_encoding(encoder, len(new), encoder.encode(new), self.registry)
            tokens = tokens.to("cpu", torch.float16).numpy()
            masks = masks.to("cpu", torch.bool).numpy()
            for caption, token, mask in zip(new, tokens, masks):
                self.entries[caption] = (token, mask)
                self.bytes += token.nbytes + mask.nbytes
        found = [self.entries[c] for c in captions]
        for caption in captions:
            self.entries.move_to_end(caption)
        while self.bytes > self.max_bytes and len(self.entries) > len(captions):
            _, (token, mask) = self.entries.popitem(last=False)
            self.bytes -= token.nbytes + mask.nbytes
        return np.stack([t for t, _ in found]), np.stack([m for _, m in found])


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class RecordEncoder:
    """One ``miro encode`` run (or this process's part of it); ``run()`` returns the records folder."""

    def __init__(
        self,
        cfg: EncodeConfig,
        registry: Any,
        progress: bool = True,
        rank: int = 0,
        world_size: int = 1,
        barrier: Callable[[], None] = lambda: None,
    ) -> None:
        if cfg.image_size < 1 or cfg.batch_size < 1 or cfg.workers < 0:
            raise ConfigError("--image-size and --batch-size must be positive and --workers at least 0")
        for table, name in (("autoencoders", cfg.autoencoder), ("text_encoders", cfg.text_encoder)):
            components = getattr(registry, table)
            if name not in components:
                kind = table[:-1].replace("_", " ")
                raise ConfigError(f"unknown {kind} {name!r}; installed: {', '.join(components.names())}")
        self.cfg = cfg.model_copy(
            update={
                "autoencoder_options": absolute_paths(cfg.autoencoder_options),
                "text_encoder_options": absolute_paths(cfg.text_encoder_options),
                "out": cfg.out or default_records_dir(cfg),
            }
        )
        self.out: str = self.cfg.out  # type: ignore[assignment]
        self.registry = registry
        self.show_progress = progress
        self.rank = rank
        self.world_size = world_size
        self.barrier = barrier
        self.summary = EncodeSummary()
        self.captions = CaptionCache(registry=self.registry)
        self.index: dict[str, Any] = {}

    # -- header -----------------------------------------------------------------------------------
    def _check_previous(self) -> dict[str, Any] | None:
        """The header of an earlier run into the same folder, refused when its settings differ."""
        from miro_core.records.layout import FORMAT, INDEX_FILE

        url = join(self.out, INDEX_FILE)
        if not exists(url):
            return None
        redo = ("delete it and rerun the same `miro encode` command (the finished shards are kept and it is written "
                "again)")
        try:
            previous = read_json(url)
        except ValueError as err:
            raise DataError(f"{url} is damaged ({err}); {redo}") from None
        cfg = self.cfg
        if not isinstance(previous, dict) or previous.get("format") != FORMAT:
            raise ConfigError(f"{self.out} holds something other than miro records; choose another --out")

        def options(table: str, name: str, given: dict[str, Any]) -> dict[str, str]:
            return effective_options(self.registry, table, name, given)

        try:
            before = (
                previous["autoencoder"]["name"],
                options("autoencoders", previous["autoencoder"]["name"], previous["autoencoder"]["options"]),
                previous["image_size"],
                previous["text_encoder"]["name"],
                options("text_encoders", previous["text_encoder"]["name"], previous["text_encoder"]["options"]),
            )
        except (KeyError, TypeError, AttributeError) as err:
            raise DataError(f"{url} is damaged ({type(err).__name__}: {err}); {redo}") from None
        now = (
            cfg.autoencoder,
            options("autoencoders", cfg.autoencoder, cfg.autoencoder_options),
            cfg.image_size,
            cfg.text_encoder,
            options("text_encoders", cfg.text_encoder, cfg.text_encoder_options),
        )
        if before != now:
            labels = ("autoencoder", "autoencoder option", "image size", "text encoder", "text encoder option")
            differ = []
            for label, b, n in zip(labels, before, now):
                if isinstance(b, dict):
                    differ += [f"{label} {k}={b.get(k)} (asked: {n.get(k)})" for k in sorted({*b, *n})
                               if b.get(k) != n.get(k)]
                elif b != n:
                    differ.append(f"{label} {b} (asked: {n})")
            raise ConfigError(
                f"{self.out} holds records encoded with other settings: {'; '.join(differ)}; choose another --out "
                "to encode with different settings"
            )
        return previous

    def _autoencoder(self, sources: list[Source], previous: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
        """The loaded autoencoder and the options that reproduce it (with fitted statistics, if any)."""
        cfg = self.cfg
        options = dict(cfg.autoencoder_options)
        cls = self.registry.autoencoders.get(cfg.autoencoder)
        fits = hasattr(cls, "fit_statistics") and "statistics" in cls.Options.model_fields
        if fits and not options.get("statistics"):
            if previous is not None and previous["autoencoder"]["options"].get("statistics"):
                options["statistics"] = previous["autoencoder"]["options"]["statistics"]
            else:
                options["statistics"] = self._fit_statistics(cls, options, sources)
        autoencoder = self.registry.autoencoders.create(cfg.autoencoder, options)
        autoencoder.load(cfg.device)
        return autoencoder, options

    def _fit_statistics(self, cls: Any, options: dict[str, Any], sources: list[Source]) -> str:
        """Rank 0 fits the normalisation statistics on a sample of the images; the others wait for the file."""
        import fsspec

        fs, _ = fsspec.core.url_to_fs(self.out)
        if not is_local(fs):
            raise ConfigError(
                f"{self.cfg.autoencoder} needs latent statistics: fit them into a local --out first, or pass "
                "--autoencoder-option statistics=FILE when writing records to a remote URL"
            )
        path = Path(fsspec.core.url_to_fs(join(self.out, STATISTICS_FILENAME))[1]).resolve()
        if self.rank == 0 and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            autoencoder = self.registry.autoencoders.create(self.cfg.autoencoder, options)
            autoencoder.load(self.cfg.device)
            autoencoder.fit_statistics(self._sample_images(sources), path)
        self.barrier()
        return str(path)

    def _sample_images(self, sources: list[Source]) -> Iterator[torch.Tensor]:
        """Up to ``statistics_images`` images in [-1, 1], in batches, taken shard by shard."""
        left = self.cfg.statistics_images
        reader = ShardImages(sources, self.cfg.image_size, self.cfg.batch_size)
        for source in sources:
            for batch in reader.shard_batches(source):
                if batch.images:
                    images = torch.from_numpy(np.stack(batch.images[:left])).float() / 127.5 - 1.0
                    left -= images.shape[0]
                    yield images
                if left <= 0:
                    return

    def _header(self, autoencoder: Any, options: dict[str, Any], encoder: Any, scores: list[str],
                empty: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
        cfg = self.cfg
        channels, size = autoencoder.latent_shape(cfg.image_size)
        kind = "pixels" if cfg.autoencoder == "pixels" else "latents"
        tokens, _ = empty
        dtype = "uint8" if kind == "pixels" else "float16"
        return {
            "input": {"kind": kind, "shape": [channels, size, size], "dtype": dtype},
            "image_size": cfg.image_size,
            "autoencoder": {
                "name": cfg.autoencoder,
                "version": str(autoencoder.version),
                "options": options,
                "statistics": getattr(autoencoder, "statistics", None),
                "provenance": self.registry.provenance("autoencoders", cfg.autoencoder),
            },
            "text_encoder": {
                "name": cfg.text_encoder,
                "version": str(encoder.version),
                "options": cfg.text_encoder_options,
                "max_length": int(tokens.shape[0]),
                "dim": int(tokens.shape[1]),
                "provenance": self.registry.provenance("text_encoders", cfg.text_encoder),
            },
            "score_keys": scores,
            "source": absolute_url(cfg.data),
        }

    # -- run --------------------------------------------------------------------------------------
    def run(self) -> str:
        from miro_core.data.lock import OutputLock

        start = time.perf_counter()
        # before the lock creates the output folder: a missing input must not leave an empty folder behind
        planned = plan_sources(self.cfg.data)
        # one writer per records folder: a second `miro encode` into it would remove this one's temporaries
        with OutputLock(self.out, self.rank, self.world_size):
            return self._run_locked(start, *planned)

    def _run_locked(self, start: float, sources: list[Source], scores: list[str]) -> str:
        from miro_core.records.writer import remove_stale_temporaries, write_empty_caption, write_index

        cfg = self.cfg
        previous = self._check_previous()
        done = self._finished()
        if self.rank == 0:
            remove_stale_temporaries(self.out)
        self.barrier()
        autoencoder, options = self._autoencoder(sources, previous)
        encoder = self.registry.text_encoders.create(cfg.text_encoder, cfg.text_encoder_options)
        encoder.load(cfg.device)
        from miro_core.network_contract import checked_text_encoding

        empty_tokens, empty_mask = checked_text_encoding(encoder, 1, encoder.encode([""]), self.registry)
        empty = (empty_tokens[0].to("cpu"), empty_mask[0].to("cpu"))
        header = self._header(autoencoder, options, encoder, scores, empty)
        order = [s.name for s in sources]
        if self.rank == 0:
            write_empty_caption(self.out, *empty)
            write_index(self.out, header, order, complete=False)
        mine = sources[self.rank :: self.world_size]
        pending = [s for s in mine if s.name not in done]
        self.summary.shards_skipped = len(mine) - len(pending)
        self._encode(pending, autoencoder, encoder, header)
        self.summary.wall = time.perf_counter() - start
        self.summary.unreadable = self.unreadable_shards()
        suffix = "" if self.world_size == 1 else f"-rank{self.rank}"
        write_json(join(self.out, f"summary{suffix}.json"), self.summary.as_json())
        self.barrier()
        if self.rank == 0:
            self.index = write_index(self.out, header, order, complete=True)
            missing = [s.name for s in sources if s.name not in self._finished()]
            if missing:
                raise DataError(f"records shards missing after encoding: {', '.join(missing[:5])}")
        return self.out

    def _finished(self) -> set[str]:
        from miro_core.records.writer import finished_shards

        return set(finished_shards(self.out)) if exists(join(self.out, "shards")) else set()

    def unreadable_shards(self) -> dict[str, str]:
        """Records shard -> why its input shard could not be read to its end, over every run into this folder."""
        from miro_core.records.writer import finished_shards

        if not exists(join(self.out, "shards")):
            return {}
        return {name: str(car["fault"]) for name, car in finished_shards(self.out).items() if car.get("fault")}

    def _encode(self, pending: list[Source], autoencoder: Any, encoder: Any, header: dict[str, Any]) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from miro_core.records.writer import RecordShardWriter

        cfg = self.cfg
        kind = header["input"]["kind"]
        expected = tuple(header["input"]["shape"])
        images = ShardImages(pending, cfg.image_size, cfg.batch_size)
        workers = min(cfg.workers, len(pending))
        from miro_core.records.reader import die_with_parent

        loader = torch.utils.data.DataLoader(
            images, batch_size=None, num_workers=workers, collate_fn=_as_is,
            prefetch_factor=4 if workers else None, worker_init_fn=die_with_parent if workers else None,
        )
        writers: dict[str, RecordShardWriter] = {}
        progress = Progress(
            TextColumn("[bold]encoding"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), disable=not (self.show_progress and self.rank == 0),
        )
        summary = self.summary
        with progress:
            task = progress.add_task("encode", total=len(pending), info="shards")
            iterator = iter(loader)
            try:
                while True:
                    waited = time.perf_counter()
                    try:
                        batch = next(iterator)
                    except StopIteration:
                        break
                    summary.wait += time.perf_counter() - waited
                    summary.decode += batch.decode_seconds
                    summary.skipped += batch.skipped
                    writer = writers.get(batch.name)
                    if writer is None:
                        writer = writers[batch.name] = RecordShardWriter(self.out, batch.name, batch.source, kind)
                    if batch.keys:
                        busy = time.perf_counter()
                        inputs, tokens, masks = self._encode_batch(batch, autoencoder, encoder, kind, expected)
                        _synchronize(cfg.device)
                        summary.device += time.perf_counter() - busy
                        for i, key in enumerate(batch.keys):
                            meta = {"key": key, "shard": batch.source, "caption": batch.captions[i],
                                    "scores": batch.scores[i]}
                            writer.add(inputs[i], tokens[i], masks[i], meta)
                        summary.samples += len(batch.keys)
                        progress.update(task, info=f"{summary.samples} samples")
                    if batch.last:
                        writers.pop(batch.name).close(batch.fault)
                        summary.shards_written += 1
                        progress.advance(task)
            finally:
                for writer in writers.values():
                    writer.abort()

    @torch.no_grad()
    def _encode_batch(self, batch: DecodedBatch, autoencoder: Any, encoder: Any, kind: str,
                      expected: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pixels = torch.from_numpy(np.stack(batch.images))
        if kind == "pixels":
            inputs = pixels.numpy()
        else:
            images = pixels.to(self.cfg.device, non_blocking=True).float() / 127.5 - 1.0
            latents = autoencoder.encode(images)
            if tuple(latents.shape[1:]) != expected or not bool(torch.isfinite(latents).all()):
                from miro_core.plugin_blame import broken, describe

                problem = (f"encode() returned latents {tuple(latents.shape[1:])} per image, expected {expected} "
                           "(its latent_shape)" if tuple(latents.shape[1:]) != expected
                           else "encode() returned NaN or infinite latents")
                raise broken(describe(autoencoder, "autoencoders", self.registry), "autoencoder", problem)
            inputs = latents.to("cpu", torch.float16).numpy()
        tokens, masks = self.captions.encode(encoder, batch.captions)
        return inputs, tokens, masks


def records_for_training(cfg: EncodeConfig, registry: Any, progress: bool = True) -> str:
    """Records of an annotation folder (or bare shards) for ``miro train``: found, or encoded now.

    The convenience path of ``miro train --data ANNOTATIONS``: the same encoder, into the folder that
    ``miro encode`` with the same options writes by default, so both share one cache.
    """
    from miro_core.records.layout import is_records, read_records

    out = cfg.out or default_records_dir(cfg)
    if is_records(out):
        try:
            read_records(out)
            return out
        except DataError:
            pass  # unfinished: complete it below
    encoder = RecordEncoder(cfg.model_copy(update={"out": out}), registry, progress=progress)
    folder = encoder.run()
    for name, reason in encoder.summary.unreadable.items():
        print(f"warning: records shard {name} holds only the samples before a read fault: {reason}", file=sys.stderr)
    return folder

