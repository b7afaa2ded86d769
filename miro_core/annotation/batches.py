"""Shards -> batches of decoded (and reward-prepared) samples, read in torch DataLoader worker processes.

Each worker reads whole shards (worker ``i`` of ``N`` takes shards ``i, i+N, ...``, the webdataset way),
so the samples of a shard arrive in order and one shard's pieces never interleave within itself. For every
sample a worker decodes the image (capped, :func:`miro_core.data.decode.decode_image`), checks the caption,
and runs the ``prepare`` of each reward that has one (on an *unloaded* copy of the reward). The main
process only scores: its reward forward pass overlaps the decoding of the next batches.

Every :class:`Batch` says how far into its shard it reaches (``upto``: samples with a smaller index are
done), which is what a flushed part records so that a resumed run skips exactly those samples. The
last batch of a shard has ``end`` set, and ``fault`` when the shard could not be read to its end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from miro_core.data.decode import DEFAULT_MAX_PIXELS, decode_image, describe_error
from miro_core.data.shards import iter_shard
from miro_core.data.tables import STAGE_DUPLICATE, STAGE_INPUT
from miro_core.errors import MiroError, ShardReadError
from miro_core.reward_contract import read_only_view


@dataclass
class ShardTask:
    """One shard to read, and what of it is already done."""

    shard: str
    #: Samples with an index below this were handled by an earlier run (flushed parts).
    upto: int = 0
    #: Keys already scored and kept (a ``--retry-errors`` rewind keeps good rows anywhere in the shard).
    kept: frozenset[str] = frozenset()


@dataclass
class Batch:
    """Consecutive samples of one shard, ready to score."""

    shard: str
    keys: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    #: Decoded images as stored (mode and size kept), or empty when no reward scores them in the main process.
    images: list[Any] = field(default_factory=list)
    #: reward name -> one ``prepare`` output per sample (None where prepare failed: see ``errors``).
    prepared: dict[str, list[Any]] = field(default_factory=dict)
    #: Error rows found while reading: input and duplicate errors, and failed ``prepare`` calls.
    errors: list[dict[str, Any]] = field(default_factory=list)
    #: Samples of the shard with an index below this are handled once this batch is.
    upto: int = 0
    #: Samples read from the shard for this batch (scored, errors and duplicates).
    samples_read: int = 0
    decode_seconds: float = 0.0
    prepare_seconds: dict[str, float] = field(default_factory=dict)
    #: The last batch of its shard.
    end: bool = False
    #: Why the shard could not be read to its end (only on the last batch).
    fault: str | None = None
    #: A MiroError raised while reading, carried from the worker to be raised in the main process.
    failure: MiroError | None = None

    def __len__(self) -> int:
        return len(self.keys)


class BatchSource:
    """Iterates the batches of a list of shards; splits the shards across DataLoader workers."""

    def __init__(
        self,
        tasks: Sequence[ShardTask],
        batch_size: int,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        preparers: dict[str, Any] | None = None,
        keep_images: bool = True,
        record_data_errors: bool = True,
    ) -> None:
        self.tasks = list(tasks)
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        #: reward name -> an unloaded copy of the reward whose ``prepare`` runs here.
        self.preparers = dict(preparers or {})
        self.keep_images = keep_images
        #: Input, duplicate and shard errors are recorded once per shard (sequential mode reads a shard
        #: once per reward and records them on the first pass only).
        self.record_data_errors = record_data_errors

    def __iter__(self) -> Iterator[Batch]:
        tasks = self.tasks
        data_module = sys.modules.get("torch.utils.data")  # in a worker torch is loaded; in-process it need not be
        info = data_module.get_worker_info() if data_module is not None else None
        if info is not None:
            tasks = tasks[info.id :: info.num_workers]
        for task in tasks:
            try:
                yield from self.shard_batches(task)
            except MiroError as err:  # raised again in the main process with its own message
                yield Batch(shard=task.shard, end=True, failure=err)
                return

    def shard_batches(self, task: ShardTask) -> Iterator[Batch]:
        batch = Batch(shard=task.shard, upto=task.upto)
        fault = None
        try:
            for raw in iter_shard(task.shard, include_duplicates=True):
                if raw.index < task.upto:
                    continue
                batch.upto = raw.index + 1
                batch.samples_read += 1
                if raw.duplicate:
                    if self.record_data_errors:
                        batch.errors.append(
                            _error(raw.key, task.shard, STAGE_DUPLICATE, _duplicate_reason(raw.key, raw.index))
                        )
                    continue
                if raw.key in task.kept:
                    continue
                self.add_sample(batch, raw)
                if len(batch.keys) >= self.batch_size:
                    yield batch
                    batch = Batch(shard=task.shard, upto=batch.upto)
        except ShardReadError as err:
            fault = str(err)
        batch.end = True
        batch.fault = fault
        yield batch

    def add_sample(self, batch: Batch, raw: Any) -> None:
        t0 = time.perf_counter()
        reason = raw.problem
        image = None
        if reason is None:
            image, reason = decode_image(raw.image_bytes, self.max_pixels)
        caption = (raw.caption or "").strip()
        if reason is None and raw.caption is None:
            reason = "no caption in the sample"
        elif reason is None and not caption:
            reason = "empty caption"
        batch.decode_seconds += time.perf_counter() - t0
        if reason is not None:
            if self.record_data_errors:
                batch.errors.append(_error(raw.key, batch.shard, STAGE_INPUT, reason))
            return
        batch.keys.append(raw.key)
        batch.captions.append(caption)
        for name, reward in self.preparers.items():
            t0 = time.perf_counter()
            try:
                prepared = reward.prepare(read_only_view(image), caption)
            except SystemExit as err:
                from miro_core.annotation.scoring import exited
                from miro_core.reward_contract import describe_reward

                raise exited(describe_reward(reward), "prepare", err) from None
            except Exception as err:  # noqa: BLE001 - a row-level error of that reward only
                prepared = None
                batch.errors.append(_error(raw.key, batch.shard, name, f"prepare failed: {describe_error(err)}"))
            batch.prepared.setdefault(name, []).append(prepared)
            batch.prepare_seconds[name] = batch.prepare_seconds.get(name, 0.0) + time.perf_counter() - t0
        if self.keep_images:
            batch.images.append(image)


def _error(key: str | None, shard: str, stage: str, reason: str) -> dict[str, Any]:
    return {"key": key, "shard": shard, "stage": stage, "reason": reason}


def _duplicate_reason(key: str, index: int) -> str:
    return (
        f"duplicate key {key!r}: sample #{index} of the shard repeats the key of an earlier sample; "
        "only the first sample with a key is scored"
    )


def _worker_init(_: int) -> None:
    """Each worker: one compute thread (workers run side by side), and no inherited output lock."""
    import torch

    from miro_core.data.lock import close_in_child

    torch.set_num_threads(1)
    close_in_child()


def _identity(item: Any) -> Any:
    return item


def iterate_batches(source: BatchSource, workers: int, prefetch: int = 2) -> Iterator[Batch]:
    """The batches of ``source``: in this process when ``workers`` is 0, else from DataLoader workers."""
    workers = min(workers, len(source.tasks))
    if workers <= 0:
        yield from _raising(iter(source))
        return
    from torch.utils.data import DataLoader, IterableDataset

    class _Dataset(IterableDataset):  # type: ignore[type-arg]
        def __iter__(self) -> Iterator[Batch]:
            return iter(source)

    loader = DataLoader(
        _Dataset(),
        batch_size=None,
        num_workers=workers,
        collate_fn=_identity,
        worker_init_fn=_worker_init,
        prefetch_factor=prefetch,
    )
    try:
        yield from _raising(iter(loader))
    except RuntimeError as err:
        if "DataLoader worker" in str(err):
            raise MiroError(
                f"a data worker process died ({describe_error(err).splitlines()[0]}); this is usually memory: "
                "lower --max-pixels, --batch-size or --workers (0 reads in this process). Rerun to resume"
            ) from None
        raise


def _raising(batches: Iterator[Batch]) -> Iterator[Batch]:
    for batch in batches:
        if batch.failure is not None:
            raise batch.failure
        yield batch
