"""Annotation: score every (image, caption) pair of a sharded dataset with several reward models.

The run loop. It reads batches (:mod:`miro_core.annotation.batches`, decoding and reward preprocessing in
DataLoader workers), scores them with every reward through the contract checks
(:mod:`miro_core.annotation.scoring`), and writes parts and tables (:mod:`miro_core.annotation.store`),
so that:

- every sample ends up exactly once: in the scores table, or only in the error table; a NaN (or any
  non-finite or non-float) score keeps its row with NaN, which MIRO treats as a missing reward, and adds an
  error row; a key repeated in a shard is recorded as a ``duplicate`` error;
- a shard that cannot be read, or stops being readable midway, keeps the samples read before the fault,
  gets a ``shard`` error row, and the run goes on with the other shards (exit code 3);
- a run killed with ``kill -9`` re-scores at most ``flush_every`` batches per open shard when resumed;
- one process writes an output folder (a lock); ``summary.json`` totals the whole folder.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from miro_core.annotation.batches import Batch, BatchSource, ShardTask, iterate_batches
from miro_core.annotation.config import AnnotateConfig, auto_loading, auto_workers, reward_record
from miro_core.annotation.report import RunReport, exit_report
from miro_core.annotation.scoring import RewardScorer, uses_prepare
from miro_core.annotation.store import AnnotationStore, ShardProgress
from miro_core.annotation.summary import RunStats, write_folder_summary
from miro_core.data.atomic import exists, is_ephemeral, join, read_json, write_json
from miro_core.data.decode import decode_image
from miro_core.data.lock import OutputLock
from miro_core.data.shards import RawSample, list_shards
from miro_core.data.tables import STAGE_SHARD, read_table
from miro_core.errors import ConfigError, MiroError
from miro_core.rewards import RewardModel

__all__ = ["AnnotateConfig", "Annotator", "RunReport", "decode_sample", "shard_sample_counts"]


def decode_sample(raw: RawSample, max_pixels: int | None = None) -> tuple[Any | None, str | None]:
    """Decode one sample's image (mode kept as stored, capped); returns (image, None) or (None, reason)."""
    from miro_core.data.decode import DEFAULT_MAX_PIXELS

    if raw.problem is not None:
        return None, raw.problem
    return decode_image(raw.image_bytes, max_pixels or DEFAULT_MAX_PIXELS)


class Annotator:
    """Runs the rewards over the shards assigned to this process, resumably."""

    def __init__(
        self,
        config: AnnotateConfig,
        rewards: Sequence[RewardModel],
        progress: Callable[[int], None] | None = None,
        rank: int = 0,
        world_size: int = 1,
        registry: Any = None,
    ) -> None:
        if not rewards:
            raise ConfigError("--rewards: name at least one reward")
        self.config = config
        self.rewards = list(rewards)
        self.names = [r.name for r in self.rewards]
        repeated = sorted({n for n in self.names if self.names.count(n) > 1})
        if repeated:
            raise ConfigError(f"--rewards: two rewards would write the same column {', '.join(repeated)}")
        self.progress = progress or (lambda n: None)
        self.rank = rank
        self.world_size = world_size
        if registry is None:
            with contextlib.suppress(Exception):
                from miro_core.plugins import get_registry

                registry = get_registry()
        requested = config.rewards if len(config.rewards) == len(self.rewards) else self.names
        self.provenance = {r.name: reward_record(r, req, registry) for r, req in zip(self.rewards, requested)}
        self.scorers = [
            RewardScorer(r, self.provenance[r.name], in_workers=uses_prepare(type(r))) for r in self.rewards
        ]
        self.store = AnnotationStore(config.out, self.names)
        self.stats = RunStats(rank=rank, world_size=world_size, rewards={n: 0.0 for n in self.names})
        self.mode = config.reward_loading
        self.workers = config.workers or 0
        self._shards: list[str] | None = None

    # -- inputs ---------------------------------------------------------------------------------
    def all_shards(self) -> list[str]:
        if self._shards is None:
            self._shards = list_shards(self.config.data)
        return self._shards

    def my_shards(self) -> list[str]:
        return self.all_shards()[self.rank :: self.world_size]

    def validate(self) -> None:
        """Everything that can be checked before a byte is written: output, device, data, earlier runs."""
        cfg = self.config
        if is_ephemeral(cfg.out):
            raise ConfigError(
                f"--out {cfg.out}: an in-memory filesystem is lost when the process exits; annotate into a "
                "folder or a persistent URL"
            )
        if cfg.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(f"--device {cfg.device}: no CUDA device is available here; use --device cpu")
        self.all_shards()  # DATA exists and holds shards (DataError / StorageError otherwise)
        previous = self.store.read_config()
        if previous is not None:
            before = previous.get("reward_columns") or [n.rpartition(":")[2] for n in previous.get("rewards", [])]
            if before != self.names:
                raise ConfigError(
                    f"{cfg.out} was annotated with rewards {before}, not {self.names}; use a new --out folder "
                    "to annotate with other rewards"
                )

    def config_payload(self) -> dict[str, Any]:
        from miro_core import __version__

        payload = self.config.model_dump(mode="json")
        payload["reward_columns"] = self.names
        payload["reward_versions"] = {r.name: r.version for r in self.rewards}
        payload["components"] = {"rewards": self.provenance}
        payload["miro_version"] = __version__
        return payload

    # -- run ------------------------------------------------------------------------------------
    def run(self) -> RunReport:
        self.validate()
        mine = self.my_shards()
        with OutputLock(self.config.out, self.rank, self.world_size) as lock:
            self.stats.recovered_locks = lock.recovered
            if self.rank == 0 and self.store.read_config() is None:
                self.store.write_config(self.config_payload())
            self.stats.cleaned_leftovers = self.store.clean_leftovers(mine)
            if self.config.retry_errors:
                for shard in mine:
                    if self.store.is_done(shard) and self.store.needs_retry(shard):
                        self.store.rewind(shard)
            pending = [s for s in mine if not self.store.is_done(s)]
            mode = self.config.reward_loading
            self.mode = auto_loading(self.rewards, self.config.device) if mode == "auto" else mode
            workers = self.config.workers
            self.workers = auto_workers(self.config.device, len(pending)) if workers is None else workers
            self.stats.mode, self.stats.workers = self.mode, self.workers
            try:
                if pending:
                    (self._run_all if self.mode == "all" else self._run_sequential)(pending)
            finally:
                self._note_modified_inputs()
                self.stats.save(self.store)
            if self.world_size > 1:
                write_json(self.store.url(f"summary-rank{self.rank}.json"), self.stats.as_json())
            summary = write_folder_summary(self.store, self.all_shards())
        return exit_report(self.store, self.scorers, mine, summary, self.stats)

    def _note_modified_inputs(self) -> None:
        for scorer in self.scorers:
            if scorer.modified_inputs:
                self.stats.warnings.append(
                    f"{scorer.label} modified the images it was given; it got read-only views, so no other reward "
                    "saw the change, but rewards must not modify their inputs"
                )

    def _load(self, reward: RewardModel) -> None:
        t0 = time.perf_counter()
        reward.load(self.config.device, self.config.dtype)
        self.stats.load += time.perf_counter() - t0

    # -- reading --------------------------------------------------------------------------------
    def _source(
        self, tasks: list[ShardTask], scorers: Sequence[RewardScorer], record_data_errors: bool = True
    ) -> BatchSource:
        preparers = {s.name: type(s.reward)(s.reward.options) for s in scorers if s.in_workers}
        return BatchSource(
            tasks,
            self.config.batch_size,
            max_pixels=self.config.max_pixels,
            preparers=preparers,
            keep_images=any(not s.in_workers for s in scorers),
            record_data_errors=record_data_errors,
        )

    def _batches(self, source: BatchSource) -> Iterator[Batch]:
        """The batches, timing how long the scoring loop waits for each (the device-wait share)."""
        batches = iterate_batches(source, self.workers, self.config.prefetch)
        start = time.perf_counter()
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    batch = next(batches)
                except StopIteration:
                    return
                self.stats.data_wait += time.perf_counter() - t0
                self.stats.decode += batch.decode_seconds
                for name, seconds in batch.prepare_seconds.items():
                    self.stats.prepare[name] = self.stats.prepare.get(name, 0.0) + seconds
                yield batch
        finally:
            self.stats.loop += time.perf_counter() - start

    def _score(self, scorer: RewardScorer, batch: Batch) -> tuple[list[float], list[dict[str, Any]]]:
        if scorer.in_workers:
            values, problems = scorer.score_prepared(batch.prepared.get(scorer.name, []))
        else:
            values, problems = scorer.score_images(batch.images, batch.captions)
        self.stats.rewards[scorer.name] = scorer.seconds
        errors = [
            {"key": batch.keys[i], "shard": batch.shard, "stage": scorer.name, "reason": reason}
            for i, reason in problems
        ]
        return values, errors

    @staticmethod
    def _fault_row(batch: Batch, upto: int) -> dict[str, Any]:
        reason = f"cannot read the shard: {batch.fault}; the {upto} samples before the fault were handled"
        return {"key": None, "shard": batch.shard, "stage": STAGE_SHARD, "reason": reason}

    # -- all rewards at once --------------------------------------------------------------------
    def _run_all(self, pending: list[str]) -> None:
        states = {shard: self.store.load_progress(shard) for shard in pending}
        tasks = [ShardTask(s, p.upto, frozenset(p.kept)) for s, p in states.items()]
        source = self._source(tasks, self.scorers)  # unloaded copies for the workers, before loading
        for reward in self.rewards:
            self._load(reward)
        try:
            for batch in self._batches(source):
                state = states[batch.shard]
                self._take(batch, state)
                if batch.end:
                    if batch.fault is not None:
                        state.errors.append(self._fault_row(batch, state.new_upto))
                    counts = self.store.finish(
                        batch.shard, state.done_rows + state.rows, state.done_errors + state.errors
                    )
                    self.stats.record_shard(batch.shard, counts)
                    self.stats.save(self.store)
                    del states[batch.shard]
                elif state.batches_since_flush >= self.config.flush_every:
                    self.store.write_part(state)
        finally:
            for reward in self.rewards:
                reward.unload()

    def _take(self, batch: Batch, state: ShardProgress) -> None:
        state.errors += batch.errors
        state.new_upto = max(state.new_upto, batch.upto)
        self.stats.samples += batch.samples_read
        self.stats.errors += len(batch.errors)
        if len(batch):
            columns: dict[str, list[float]] = {}
            for scorer in self.scorers:
                columns[scorer.name], errors = self._score(scorer, batch)
                state.errors += errors
                self.stats.errors += len(errors)
            for i, key in enumerate(batch.keys):
                row = {"key": key, "shard": batch.shard, "caption": batch.captions[i]}
                row.update({name: columns[name][i] for name in self.names})
                state.rows.append(row)
            state.batches_since_flush += 1
            self.stats.scored += len(batch)
        self.progress(batch.samples_read)

    # -- one reward at a time -------------------------------------------------------------------
    def _run_sequential(self, pending: list[str]) -> None:
        """Load one reward at a time; each scores every pending shard into a column file, then merge."""
        states = {shard: self.store.load_progress(shard) for shard in pending}
        for position, scorer in enumerate(self.scorers):
            first = position == 0
            tasks = [
                ShardTask(s, p.upto, frozenset(p.kept))
                for s, p in states.items()
                if not exists(self.store.column_url(s, scorer.name))
            ]
            if not tasks:
                continue
            source = self._source(tasks, [scorer], record_data_errors=first)
            self._load(scorer.reward)
            try:
                self._score_columns(scorer, source, first)
            finally:
                scorer.reward.unload()
        for shard in pending:
            self._merge_columns(states[shard])

    def _score_columns(self, scorer: RewardScorer, source: BatchSource, first: bool) -> None:
        collected: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
        for batch in self._batches(source):
            rows, errors = collected.setdefault(batch.shard, ([], []))
            errors += batch.errors
            if len(batch):
                values, problems = self._score(scorer, batch)
                errors += problems
                rows += [
                    {"key": k, "shard": batch.shard, "caption": c, scorer.name: v}
                    for k, c, v in zip(batch.keys, batch.captions, values, strict=True)
                ]
                if first:
                    self.stats.scored += len(batch)
            if first:
                self.stats.samples += batch.samples_read
                self.progress(batch.samples_read)
            if batch.end:
                if batch.fault is not None and first:
                    errors.append(self._fault_row(batch, batch.upto))
                self.store.write_column(batch.shard, scorer.name, rows, errors, batch.upto)
                del collected[batch.shard]

    def _merge_columns(self, state: ShardProgress) -> None:
        merged: dict[str, dict[str, Any]] = {}
        errors = list(state.done_errors)
        for name in self.names:
            for row in read_table(self.store.column_url(state.shard, name)).to_pylist():
                merged.setdefault(row["key"], {"key": row["key"], "shard": state.shard, "caption": row["caption"]})
                merged[row["key"]][name] = row[name]
            errors += read_table(self.store.column_errors_url(state.shard, name)).to_pylist()
        self.stats.errors += len(errors) - len(state.done_errors)
        counts = self.store.finish(state.shard, state.done_rows + list(merged.values()), errors)
        self.stats.record_shard(state.shard, counts)
        self.stats.save(self.store)


def shard_sample_counts(data: str) -> dict[str, int] | None:
    """Sample counts per shard from ``index.json`` written by ``miro data``, if present."""
    from miro_core.data.shards import INDEX_FILE, is_shard_url

    url = data if not is_shard_url(data) else data.rstrip("/").rsplit("/", 1)[0]
    index_url = join(url, INDEX_FILE)
    try:
        if not exists(index_url):
            return None
        return {item["name"]: int(item["samples"]) for item in read_json(index_url)["shards"]}
    except (KeyError, TypeError, ValueError, OSError, MiroError):
        return None
