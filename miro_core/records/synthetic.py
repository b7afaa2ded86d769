"""Synthetic records of any size and shape, written fast: for benchmarks, device checks and tests.

The records are random (pixels or latents, text tokens, a real-looking mask, scores) but otherwise exactly
what ``miro encode`` writes, through the same writer, so the reader and the trainer cannot tell them apart.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from miro_core.records.writer import RecordShardWriter, write_empty_caption, write_index


def write_synthetic_records(
    out: str,
    samples: int,
    *,
    shard_size: int = 1000,
    input_kind: str = "latents",
    input_shape: tuple[int, int, int] = (4, 32, 32),
    text_shape: tuple[int, int] = (16, 64),
    score_keys: tuple[str, ...] = ("reward-a", "reward-b"),
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``samples`` records in shards of ``shard_size``; returns the index (``records.json``)."""
    import torch

    rng = np.random.default_rng(seed)
    length, dim = text_shape
    names: list[str] = []
    for first in range(0, samples, shard_size):
        name = f"synthetic-{first // shard_size:06d}"
        writer = RecordShardWriter(out, name, source=f"synthetic://{name}", input_kind=input_kind)
        count = min(shard_size, samples - first)
        if input_kind == "pixels":
            inputs = rng.integers(0, 256, size=(count, *input_shape), dtype=np.uint8)
        else:
            inputs = rng.standard_normal((count, *input_shape), dtype=np.float32).astype(np.float16)
        tokens = rng.standard_normal((count, length, dim), dtype=np.float32).astype(np.float16)
        lengths = rng.integers(1, length + 1, size=count)
        scores = rng.random((count, len(score_keys)))
        for i in range(count):
            mask = np.arange(length) < lengths[i]
            meta = {
                "key": f"{first + i:09d}",
                "shard": writer.source,
                "caption": f"synthetic caption {first + i}",
                "scores": {k: float(v) for k, v in zip(score_keys, scores[i])},
            }
            writer.add(inputs[i], tokens[i] * mask[:, None], mask, meta)
        writer.close()
        names.append(name)
    write_empty_caption(out, torch.zeros(length, dim), torch.zeros(length, dtype=torch.bool))
    dtype = "uint8" if input_kind == "pixels" else "float16"
    header = {
        "input": {"kind": input_kind, "shape": list(input_shape), "dtype": dtype},
        "image_size": input_shape[-1] if input_kind == "pixels" else input_shape[-1] * 8,
        "autoencoder": {"name": "pixels" if input_kind == "pixels" else "synthetic", "version": "0", "options": {}},
        "text_encoder": {"name": "synthetic", "version": "0", "options": {}, "max_length": length, "dim": dim},
        "score_keys": list(score_keys),
        "source": "synthetic",
    }
    return write_index(out, header, names, complete=True)
