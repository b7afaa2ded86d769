"""Annotation: score every (image, caption) pair of a sharded dataset with several reward models.

Layout of an annotation folder ``OUT``::

    OUT/config.json               the resolved configuration (rewards, options, versions)
    OUT/scores/<shard>.parquet    key, shard, caption, one float column per reward
    OUT/errors/<shard>.parquet    key, shard, stage, reason: samples or scores that failed
    OUT/parts/<shard>/...         in-progress pieces of an unfinished shard (removed when it finishes)
    OUT/summary[-rankN].json      images/s and time spent decoding and in each reward

Resuming: a shard whose ``scores`` file exists is done. An unfinished shard keeps the pieces it
flushed (every ``flush_every`` batches, atomically), so a run killed with ``kill -9`` re-scores at
most ``flush_every`` batches and ends with exactly one row per sample. A sample that cannot be
decoded or has an empty caption appears only in the error table; a NaN score keeps its row (NaN in
that column, which MIRO treats as a missing reward) and adds an error row.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from miro_core.data.atomic import exists, join, read_json, write_json
from miro_core.data.shards import RawSample, iter_shard, list_shards, shard_name
from miro_core.data.tables import ERROR_COLUMNS, read_table, write_table
from miro_core.errors import ConfigError
from miro_core.rewards import RewardModel


class AnnotateConfig(BaseModel):
    """Everything that defines an annotation run; written to ``OUT/config.json``."""

    model_config = ConfigDict(extra="forbid")

    data: str
    out: str
    rewards: list[str]
    reward_options: dict[str, dict[str, Any]] = {}
    batch_size: int = 64
    device: str = "cpu"
    dtype: str = "float32"
    #: Flush scored rows every this many batches (what a crash can cost at most).
    flush_every: int = 8
    #: ``all`` holds every reward at once; ``sequential`` loads one reward at a time per shard group;
    #: ``auto`` chooses from the rewards' declared peak memory and the device's free memory.
    reward_loading: Literal["all", "sequential", "auto"] = "auto"


@dataclass
class Timings:
    """Where the time went, for the end-of-run report."""

    decode: float = 0.0
    rewards: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    scored: int = 0
    errors: int = 0
    wall: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "scored": self.scored,
            "errors": self.errors,
            "wall_seconds": round(self.wall, 3),
            "images_per_second": round(self.samples / self.wall, 2) if self.wall > 0 else None,
            "decode_seconds": round(self.decode, 3),
            "reward_seconds": {k: round(v, 3) for k, v in self.rewards.items()},
        }


@dataclass
class DecodedBatch:
    keys: list[str]
    shards: list[str]
    captions: list[str]
    images: list[Any]

    def error(self, index: int, stage: str, reason: str) -> dict[str, Any]:
        return {"key": self.keys[index], "shard": self.shards[index], "stage": stage, "reason": reason}


def decode_sample(raw: RawSample) -> tuple[Any | None, str | None]:
    """Decode one image (mode kept as stored); returns (image, None) or (None, reason)."""
    from PIL import Image

    if raw.image_bytes is None:
        return None, "no image in the sample"
    try:
        image = Image.open(io.BytesIO(raw.image_bytes))
        image.load()
    except Exception as err:  # noqa: BLE001 - any decoder failure is a row-level error
        return None, f"cannot decode image: {type(err).__name__}: {err}"
    return image, None


def _auto_loading(rewards: Sequence[RewardModel], device: str) -> str:
    """Hold every reward at once when their declared peak memory fits in 80% of what is free."""
    needed = sum(r.peak_memory_mib or 0.0 for r in rewards)
    if needed == 0:
        return "all"
    free_mib = _free_memory_mib(device)
    return "all" if free_mib is None or needed <= 0.8 * free_mib else "sequential"


def _free_memory_mib(device: str) -> float | None:
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return free / 2**20
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Annotator:
    """Runs the rewards over the shards assigned to this process, resumably."""

    def __init__(
        self,
        config: AnnotateConfig,
        rewards: Sequence[RewardModel],
        progress: Callable[[int], None] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not rewards:
            raise ConfigError("--rewards: name at least one reward")
        self.config = config
        self.rewards = list(rewards)
        self.names = [r.name for r in self.rewards]
        self.progress = progress or (lambda n: None)
        self.rank = rank
        self.world_size = world_size
        self.timings = Timings(rewards={name: 0.0 for name in self.names})

    # -- layout ---------------------------------------------------------------------------------
    def scores_url(self, shard: str) -> str:
        return join(self.config.out, "scores", f"{shard_name(shard)}.parquet")

    def errors_url(self, shard: str) -> str:
        return join(self.config.out, "errors", f"{shard_name(shard)}.parquet")

    def parts_dir(self, shard: str) -> str:
        return join(self.config.out, "parts", shard_name(shard))

    def my_shards(self) -> list[str]:
        shards = list_shards(self.config.data)
        return shards[self.rank :: self.world_size]

    # -- run ----------------------------------------------------------------------------------
    def check_config(self) -> None:
        """Refuse to resume into a folder annotated with other rewards (rows would not line up)."""
        url = join(self.config.out, "config.json")
        if exists(url):
            previous = read_json(url)
            if previous.get("rewards") != self.names:
                raise ConfigError(
                    f"{self.config.out} was annotated with rewards {previous.get('rewards')}, "
                    f"not {self.names}; use a new --out folder to annotate with other rewards"
                )
        elif self.rank == 0:
            payload = self.config.model_dump()
            payload["reward_versions"] = {r.name: r.version for r in self.rewards}
            write_json(url, payload)

    def run(self) -> Timings:
        start = time.perf_counter()
        self.check_config()
        pending = [s for s in self.my_shards() if not exists(self.scores_url(s))]
        mode = self.config.reward_loading
        if mode == "auto":
            mode = _auto_loading(self.rewards, self.config.device)
        self.mode = mode
        if mode == "all":
            for reward in self.rewards:
                reward.load(self.config.device, self.config.dtype)
            try:
                for shard in pending:
                    self._annotate_shard_all(shard)
            finally:
                for reward in self.rewards:
                    reward.unload()
        else:
            for reward in self.rewards:
                reward.load(self.config.device, self.config.dtype)
                try:
                    for shard in pending:
                        self._annotate_shard_one_reward(shard, reward)
                finally:
                    reward.unload()
            for shard in pending:
                self._merge_columns(shard)
        self.timings.wall = time.perf_counter() - start
        suffix = "" if self.world_size == 1 else f"-rank{self.rank}"
        write_json(join(self.config.out, f"summary{suffix}.json"), self.timings.as_json())
        return self.timings

    # -- decoding -------------------------------------------------------------------------------
    def _batches(self, shard: str, skip: set[str], errors: list[dict[str, Any]]) -> Iterator[DecodedBatch]:
        batch = DecodedBatch([], [], [], [])
        seen: set[str] = set()
        for raw in iter_shard(shard):
            if raw.key in skip or raw.key in seen:
                continue
            seen.add(raw.key)
            t0 = time.perf_counter()
            image, reason = decode_sample(raw)
            self.timings.decode += time.perf_counter() - t0
            caption = (raw.caption or "").strip()
            if reason is None and not caption:
                reason = "empty caption"
            if reason is not None:
                errors.append({"key": raw.key, "shard": shard, "stage": "input", "reason": reason})
                self.timings.samples += 1
                self.progress(1)
                continue
            batch.keys.append(raw.key)
            batch.shards.append(shard)
            batch.captions.append(caption)
            batch.images.append(image)
            if len(batch.keys) >= self.config.batch_size:
                yield batch
                batch = DecodedBatch([], [], [], [])
        if batch.keys:
            yield batch

    # -- scoring --------------------------------------------------------------------------------
    def _score(self, reward: RewardModel, batch: DecodedBatch, errors: list[dict[str, Any]]) -> list[float]:
        """Score a batch; if the batch fails, score one by one so one bad sample costs only its row."""
        t0 = time.perf_counter()
        failed: set[int] = set()
        try:
            values = [float(v) for v in reward.score(batch.images, batch.captions)]
            if len(values) != len(batch.keys):
                raise RuntimeError(f"returned {len(values)} scores for {len(batch.keys)} samples")
        except Exception:  # noqa: BLE001 - isolate the failing samples below
            values = []
            for i, (image, caption) in enumerate(zip(batch.images, batch.captions)):
                try:
                    values.append(float(reward.score([image], [caption])[0]))
                except Exception as err:  # noqa: BLE001 - row-level error, the run goes on
                    values.append(math.nan)
                    failed.add(i)
                    reason = f"{type(err).__name__}: {err}"
                    errors.append(batch.error(i, reward.name, reason))
        self.timings.rewards[reward.name] += time.perf_counter() - t0
        for i, value in enumerate(values):
            if math.isnan(value) and i not in failed:
                errors.append(batch.error(i, reward.name, "score is NaN"))
        return values

    def _annotate_shard_all(self, shard: str) -> None:
        parts = self.parts_dir(shard)
        done_rows, done_errors, next_part = self._load_parts(parts)
        skip = {r["key"] for r in done_rows} | {e["key"] for e in done_errors if e["stage"] == "input"}
        rows: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        batches_since_flush = 0
        for batch in self._batches(shard, skip, errors):
            columns = {reward.name: self._score(reward, batch, errors) for reward in self.rewards}
            for i, key in enumerate(batch.keys):
                row = {"key": key, "shard": shard, "caption": batch.captions[i]}
                row.update({name: columns[name][i] for name in self.names})
                rows.append(row)
            self.timings.samples += len(batch.keys)
            self.timings.scored += len(batch.keys)
            self.progress(len(batch.keys))
            batches_since_flush += 1
            if batches_since_flush >= self.config.flush_every:
                self._write_part(parts, next_part, rows, errors)
                done_rows += rows
                done_errors += errors
                rows, errors, batches_since_flush = [], [], 0
                next_part += 1
        self._finish_shard(shard, done_rows + rows, done_errors + errors)

    def _annotate_shard_one_reward(self, shard: str, reward: RewardModel) -> None:
        """Sequential mode: one column file per (shard, reward), written when the shard is scored."""
        column_url = join(self.parts_dir(shard), f"column-{reward.name}.parquet")
        if exists(column_url):
            return
        rows: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        first = reward is self.rewards[0]
        for batch in self._batches(shard, set(), errors):
            values = self._score(reward, batch, errors)
            rows += [
                {"key": k, "shard": shard, "caption": c, reward.name: v}
                for k, c, v in zip(batch.keys, batch.captions, values)
            ]
            if first:
                self.timings.samples += len(batch.keys)
                self.timings.scored += len(batch.keys)
                self.progress(len(batch.keys))
        if not first:
            errors = [e for e in errors if e["stage"] != "input"]
        write_table(join(self.parts_dir(shard), f"errors-{reward.name}.parquet"), errors, ERROR_COLUMNS)
        write_table(column_url, rows, ["key", "shard", "caption", reward.name])

    def _merge_columns(self, shard: str) -> None:
        parts = self.parts_dir(shard)
        merged: dict[str, dict[str, Any]] = {}
        errors: list[dict[str, Any]] = []
        for reward in self.rewards:
            for row in read_table(join(parts, f"column-{reward.name}.parquet")).to_pylist():
                merged.setdefault(row["key"], {"key": row["key"], "shard": shard, "caption": row["caption"]})
                merged[row["key"]][reward.name] = row[reward.name]
            errors += read_table(join(parts, f"errors-{reward.name}.parquet")).to_pylist()
        self._finish_shard(shard, list(merged.values()), errors)

    # -- parts ----------------------------------------------------------------------------------
    def _load_parts(self, parts: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
        import fsspec

        fs, path = fsspec.core.url_to_fs(parts)
        rows: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        index = 0
        if fs.exists(path):
            names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
            for name in names:
                if name.startswith("rows-") and name.endswith(".parquet"):
                    number = name.removeprefix("rows-").removesuffix(".parquet")
                    err_name = f"errors-{number}.parquet"
                    if err_name not in names:
                        continue  # a part is complete only with its error file (written second)
                    rows += read_table(join(parts, name)).to_pylist()
                    errors += read_table(join(parts, err_name)).to_pylist()
                    index = max(index, int(number) + 1)
        return rows, errors, index

    def _write_part(self, parts: str, index: int, rows: list[dict[str, Any]], errors: list[dict[str, Any]]) -> None:
        write_table(join(parts, f"rows-{index:06d}.parquet"), rows, self._columns())
        write_table(join(parts, f"errors-{index:06d}.parquet"), errors, ERROR_COLUMNS)

    def _columns(self) -> list[str]:
        return ["key", "shard", "caption", *self.names]

    def _finish_shard(self, shard: str, rows: list[dict[str, Any]], errors: list[dict[str, Any]]) -> None:
        import fsspec

        unique: dict[str, dict[str, Any]] = {}
        for row in rows:
            unique.setdefault(row["key"], row)
        self.timings.errors += len(errors)
        write_table(self.errors_url(shard), errors, ERROR_COLUMNS)
        write_table(self.scores_url(shard), list(unique.values()), self._columns())
        fs, path = fsspec.core.url_to_fs(self.parts_dir(shard))
        if fs.exists(path):
            fs.rm(path, recursive=True)


def shard_sample_counts(data: str) -> dict[str, int] | None:
    """Sample counts per shard from ``index.json`` written by ``miro data``, if present."""
    from miro_core.data.shards import INDEX_FILE

    url = data if not data.endswith(".tar") else data.rsplit("/", 1)[0]
    index_url = join(url, INDEX_FILE)
    if not exists(index_url):
        return None
    try:
        return {item["name"]: int(item["samples"]) for item in read_json(index_url)["shards"]}
    except (KeyError, TypeError, ValueError):
        return None
