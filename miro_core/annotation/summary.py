"""Run records and the folder's totals: ``summary.json`` counts the whole annotation, across resumes and ranks.

Every process writes its own record, ``OUT/runs/<start>-rank<r>-pid<p>-<token>.json``, each time it finishes a
shard and at its end: where its time went and the counts of the shards it finished. ``summary.json`` is
recomputed from all records (the newest record of a shard wins, so a ``--retry-errors`` rerun replaces
the shard's counts; a finished shard no record describes is counted from its tables). Each process
rewrites it when it ends and checks again until no new record appeared meanwhile, so whichever process
of a multi-process launch ends last leaves totals that include every process.

Time figures are per process: ``images_per_second`` is images handled per second of process wall time
(loading weights included); ``device_wait_share`` is the share of the scoring loop's time (first batch
request to last batch) spent waiting for the next decoded batch: near 0 when the rewards are the
bottleneck (the device is busy), near 1 when reading and decoding are.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from miro_core.annotation.store import AnnotationStore, ShardCounts
from miro_core.data.atomic import filesystem, join, read_json, write_json
from miro_core.data.shards import shard_name
from miro_core.data.tables import DATA_STAGES


@dataclass
class RunStats:
    """What this process did in this run."""

    rank: int = 0
    world_size: int = 1
    started: str = field(default_factory=lambda: time.strftime("%Y%m%dT%H%M%S"))
    start_time: float = field(default_factory=time.time)
    #: Tells apart two runs of one process that start within the same second.
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    #: Samples read by this run (scored, input errors and duplicates).
    samples: int = 0
    scored: int = 0
    errors: int = 0
    wall: float = 0.0
    #: Seconds spent decoding (in the workers when there are workers).
    decode: float = 0.0
    #: Seconds the scoring loop waited for the next batch ...
    data_wait: float = 0.0
    #: ... out of the scoring loop's seconds (from its first batch request to its last batch).
    loop: float = 0.0
    #: Seconds spent loading rewards (weights), outside the loop.
    load: float = 0.0
    rewards: dict[str, float] = field(default_factory=dict)
    prepare: dict[str, float] = field(default_factory=dict)
    workers: int = 0
    mode: str = ""
    shards: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: Stale locks of killed writers that this run took over.
    recovered_locks: list[dict[str, Any]] = field(default_factory=list)
    cleaned_leftovers: int = 0

    def record_shard(self, shard: str, counts: ShardCounts) -> None:
        self.shards[shard_name(shard)] = counts.as_json()

    def as_json(self) -> dict[str, Any]:
        wall = self.wall
        return {
            "rank": self.rank,
            "world_size": self.world_size,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": self.started,
            "start_time": self.start_time,
            "samples": self.samples,
            "scored": self.scored,
            "errors": self.errors,
            "wall_seconds": round(wall, 3),
            "images_per_second": round(self.samples / wall, 2) if wall > 0 else None,
            "decode_seconds": round(self.decode, 3),
            "data_wait_seconds": round(self.data_wait, 3),
            "loop_seconds": round(self.loop, 3),
            "load_seconds": round(self.load, 3),
            "device_wait_share": round(self.data_wait / self.loop, 4) if self.loop > 0 else None,
            "loop_images_per_second": round(self.samples / self.loop, 2) if self.loop > 0 else None,
            "reward_seconds": {k: round(v, 3) for k, v in self.rewards.items()},
            "prepare_seconds": {k: round(v, 3) for k, v in self.prepare.items()},
            "workers": self.workers,
            "reward_loading": self.mode,
            "shards": self.shards,
            "warnings": self.warnings,
            "recovered_locks": self.recovered_locks,
            "cleaned_leftovers": self.cleaned_leftovers,
        }

    def record_url(self, store: AnnotationStore) -> str:
        return store.url("runs", f"{self.started}-rank{self.rank}-pid{os.getpid()}-{self.token}.json")

    def save(self, store: AnnotationStore) -> None:
        self.wall = time.time() - self.start_time
        write_json(self.record_url(store), self.as_json())


def run_records(store: AnnotationStore) -> list[dict[str, Any]]:
    fs, path = filesystem(store.url("runs"))
    if not fs.exists(path):
        return []
    records = []
    for name in sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)):
        if name.endswith(".json"):
            try:
                records.append(read_json(join(store.url("runs"), name)))
            except (OSError, ValueError):
                continue  # a record being replaced right now; the next summary pass reads it
    return sorted(records, key=lambda r: (r.get("start_time", 0.0), r.get("started", ""), r.get("rank", 0)))


def shard_counts(store: AnnotationStore, shards: list[str], records: list[dict[str, Any]]) -> dict[str, ShardCounts]:
    """Counts of every finished shard among ``shards``: newest run record first, else the tables."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        latest.update(record.get("shards", {}))
    counts: dict[str, ShardCounts] = {}
    for shard in shards:
        name = shard_name(shard)
        if not store.is_done(shard):
            continue
        if name in latest:
            item = latest[name]
            counts[name] = ShardCounts(item["samples"], item["scored"], dict(item["errors"]), item.get("fault"))
        else:
            counts[name] = store.counts(shard)
    return counts


def totals(counts: dict[str, ShardCounts], names: list[str], shards: list[str]) -> dict[str, Any]:
    """Sample, row and error totals of finished shards, and what the exit status depends on."""
    errors: dict[str, int] = {}
    for item in counts.values():
        for stage, n in item.errors.items():
            errors[stage] = errors.get(stage, 0) + n
    scored = sum(c.scored for c in counts.values())
    failed = [n for n in names if scored > 0 and errors.get(n, 0) >= scored]
    return {
        "samples": sum(c.samples for c in counts.values()),
        "scored": scored,
        "errors": sum(errors.values()),
        "errors_by_stage": errors,
        "shards": {
            "total": len(shards),
            "finished": len(counts),
            "unreadable": sum(1 for c in counts.values() if c.fault),
            "pending": len(shards) - len(counts),
        },
        "skipped_shards": [{"shard": name, "reason": c.fault} for name, c in sorted(counts.items()) if c.fault],
        "failed_rewards": failed,
        "reward_errors": {n: errors.get(n, 0) for n in names},
        "data_errors": {stage: errors.get(stage, 0) for stage in sorted(DATA_STAGES)},
    }


def folder_summary(store: AnnotationStore, shards: list[str], records: list[dict[str, Any]]) -> dict[str, Any]:
    summary = totals(shard_counts(store, shards, records), store.names, shards)
    wall = sum(r.get("wall_seconds", 0.0) for r in records)
    handled = sum(r.get("samples", 0) for r in records)
    wait = sum(r.get("data_wait_seconds", 0.0) for r in records)
    loop = sum(r.get("loop_seconds", 0.0) for r in records)
    reward_seconds = {n: round(sum(r.get("reward_seconds", {}).get(n, 0.0) for r in records), 3) for n in store.names}
    summary.update(
        {
            "runs": len(records),
            "wall_seconds": round(wall, 3),
            "images_per_second": round(handled / wall, 2) if wall > 0 else None,
            "decode_seconds": round(sum(r.get("decode_seconds", 0.0) for r in records), 3),
            "data_wait_seconds": round(wait, 3),
            "loop_seconds": round(loop, 3),
            "device_wait_share": round(wait / loop, 4) if loop > 0 else None,
            "reward_seconds": reward_seconds,
            "warnings": sorted({w for r in records for w in r.get("warnings", [])}),
        }
    )
    return summary


def write_folder_summary(store: AnnotationStore, shards: list[str]) -> dict[str, Any]:
    """Write ``summary.json``; repeat while other processes change records meanwhile (see module docstring)."""
    records = run_records(store)
    for _ in range(10):
        summary = folder_summary(store, shards, records)
        write_json(store.url("summary.json"), summary)
        latest = run_records(store)
        if latest == records:
            break
        records = latest
    return summary
