"""Writes the shapes world to webdataset shards, with an ``index.json`` of counts and settings."""

from __future__ import annotations

import itertools
from typing import Any

from miro_core.data.atomic import join
from miro_core.data.shards import write_index, write_shard


def write_shapes_dataset(
    out: str,
    *,
    n: int,
    seed: int = 0,
    image_size: int = 32,
    samples_per_shard: int = 500,
    degraded_fraction: float = 0.5,
    mismatched_fraction: float = 0.2,
    max_objects: int = 4,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate ``n`` samples into ``ceil(n / samples_per_shard)`` shards; returns the index."""
    from rich.progress import Progress

    from miro_core.shapes.world import generate

    samples = generate(
        n,
        seed=seed,
        image_size=image_size,
        degraded_fraction=degraded_fraction,
        mismatched_fraction=mismatched_fraction,
        max_objects=max_objects,
    )
    shards: list[dict[str, Any]] = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("generating shapes world", total=n)
        for shard_index in itertools.count():
            chunk = list(itertools.islice(samples, samples_per_shard))
            if not chunk:
                break
            name = f"shard-{shard_index:06d}"
            count = write_shard(join(out, f"{name}.tar"), ((s.key, s.image, s.caption, s.meta) for s in chunk))
            shards.append({"name": name, "file": f"{name}.tar", "samples": count})
            bar.advance(task, count)
    settings = {
        "generator": "shapes-world",
        "samples": n,
        "seed": seed,
        "image_size": image_size,
        "degraded_fraction": degraded_fraction,
        "mismatched_fraction": mismatched_fraction,
        "max_objects": max_objects,
    }
    write_index(out, shards, settings)
    return {"shards": shards, **settings}
