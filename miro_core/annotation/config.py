"""The options of an annotation run, range-checked before any data is read, and the exit codes it ends with."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from miro_core.data.decode import DEFAULT_MAX_PIXELS

#: Exit codes of ``miro annotate`` (documented in docs/cli.md and docs/annotation.md).
EXIT_OK = 0
#: The run could not go on, or a reward failed on every row it was given.
EXIT_ERROR = 1
#: Every readable sample was handled, but at least one shard could not be read (see its ``shard`` error row).
EXIT_DATA_SKIPPED = 3

#: Pillow refuses to open images above twice ``Image.MAX_IMAGE_PIXELS`` whatever we allow.
PILLOW_PIXEL_LIMIT = 2 * 89_478_485
_DEVICE = re.compile(r"^(cpu|mps|(cuda|xpu)(:\d+)?)$")


class AnnotateConfig(BaseModel):
    """Everything that defines an annotation run; written to ``OUT/config.json``."""

    model_config = ConfigDict(extra="forbid")

    data: str
    out: str
    rewards: list[str] = Field(min_length=1)
    reward_options: dict[str, dict[str, Any]] = {}
    batch_size: int = Field(64, ge=1, le=65536)
    device: str = "cpu"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    #: Flush scored rows every this many batches (what a crash can cost at most).
    flush_every: int = Field(8, ge=1, le=1_000_000)
    #: ``all`` holds every reward at once; ``sequential`` loads one reward at a time per shard group;
    #: ``auto`` chooses from the rewards' declared peak memory and the device's free memory.
    reward_loading: Literal["all", "sequential", "auto"] = "auto"
    #: DataLoader worker processes that read, decode and prepare (0: all in this process; None: automatic).
    workers: int | None = Field(None, ge=0, le=256)
    #: Batches each worker prepares ahead of the one being scored.
    prefetch: int = Field(2, ge=1, le=64)
    #: Images above this many decoded pixels are decoded at a reduced size (JPEG) or refused (row error).
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=64 * 64, le=PILLOW_PIXEL_LIMIT)
    #: Re-read shards that failed and re-score rows that have errors in finished shards.
    retry_errors: bool = False

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"{value!r} is not a device; use cpu, cuda, cuda:N or mps")
        return value

    @field_validator("rewards")
    @classmethod
    def _rewards(cls, value: list[str]) -> list[str]:
        names = [name.strip() for name in value]
        if any(not name for name in names):
            raise ValueError("reward names may not be empty")
        if len(set(names)) != len(names):
            raise ValueError(f"a reward is named twice: {', '.join(names)}")
        return names


def auto_workers(device: str, pending_shards: int) -> int:
    """Worker processes when ``--workers`` is not given.

    On an accelerator the CPU must keep up with the device: up to 8 workers, leaving a core for the main
    process. On CPU, rewards, decoding and preprocessing share the same cores, so workers only help when
    there are cores to spare: none on a 2-core machine (measured: benchmarks/reward_throughput.py,
    docs/annotation.md), then one per two cores beyond the first, up to 4. Never more workers than
    shards: a shard is read by one worker.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    wanted = min(8, cores - 1) if device != "cpu" else min(4, (cores - 1) // 2)
    return max(0, min(wanted, pending_shards))


def auto_loading(rewards: Sequence[Any], device: str) -> str:
    """``--reward-loading auto``: hold every reward at once when their declared peak memory fits in 80% of
    what is free, else load one at a time."""
    needed = sum(r.peak_memory_mib or 0.0 for r in rewards)
    if needed == 0:
        return "all"
    free_mib = free_memory_mib(device)
    return "all" if free_mib is None or needed <= 0.8 * free_mib else "sequential"


def free_memory_mib(device: str) -> float | None:
    """Free memory of ``device`` (``torch.cuda.mem_get_info`` on GPUs, ``MemAvailable`` on CPU)."""
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


def reward_record(reward: Any, requested: str, registry: Any) -> dict[str, Any]:
    """Which installed code a reward is (``Registry.provenance``) and its resolved options, for config.json.

    A reward class that is not the registry's entry for ``requested`` (built in a script or a test) is
    recorded by its module and class instead of a distribution.
    """
    from miro_core.errors import MiroError

    record: dict[str, Any] = {"name": reward.name, "version": str(reward.version)}
    if registry is not None:
        with contextlib.suppress(MiroError, AttributeError, KeyError):
            if registry.rewards.get(requested) is type(reward):
                record = dict(registry.provenance("rewards", requested))
    if "distribution" not in record:
        cls = type(reward)
        module = f"{cls.__module__}.{cls.__qualname__}"
        record.update(plugin=None, distribution=None, distribution_version=None, module=module)
    record["options"] = reward.options.model_dump(mode="json")
    return record
