"""Training-record formats measured on the same records: wids-indexed tars (ours), litdata, MosaicML MDS.

Every format stores the same synthetic records (float16 latents 4x32x32, float16 text tokens 16x384, a
bool mask and a JSON of scores: what ``miro encode`` writes for an SDXL-VAE run with MiniLM) and is read
back into the same numpy arrays. Measured per format: writing (one process), size on disk, random access
(one process, after opening), a shuffled epoch through the format's own loader with 2 worker processes,
and the time to the first batch of that epoch.

    .venv/bin/python benchmarks/record_formats.py [--samples 10000] [--formats wids,litdata,mds]

mosaicml-streaming 0.13 requires numpy<2.2 and transformers<5, which would downgrade this environment,
so it is measured from a separate folder: ``pip install --no-deps --target /tmp/mds-pkgs
mosaicml-streaming xxhash zstd python-snappy cramjam catalogue Brotli tqdm`` and run this script with
``PYTHONPATH=/tmp/mds-pkgs`` (the script skips MDS when it cannot import it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

LATENT, TOKENS = (4, 32, 32), (16, 384)


def make_records(samples: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "latent": rng.standard_normal((samples, *LATENT), dtype=np.float32).astype(np.float16),
        "tokens": rng.standard_normal((samples, *TOKENS), dtype=np.float32).astype(np.float16),
        "mask": np.arange(TOKENS[0])[None] < rng.integers(1, TOKENS[0] + 1, size=(samples, 1)),
        "scores": rng.random((samples, 3)),
    }


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- wids-indexed tars (miro_core.records) ----------------------------------------------------------------
def write_wids(data: dict[str, np.ndarray], out: Path, shard_size: int) -> None:
    import torch

    from miro_core.records.writer import RecordShardWriter, write_empty_caption, write_index

    names = []
    n = len(data["latent"])
    for first in range(0, n, shard_size):
        name = f"s-{first // shard_size:05d}"
        writer = RecordShardWriter(str(out), name, "bench", "latents")
        for i in range(first, min(n, first + shard_size)):
            writer.add(data["latent"][i], data["tokens"][i], data["mask"][i],
                       {"scores": {f"r{j}": float(v) for j, v in enumerate(data["scores"][i])}})
        writer.close()
        names.append(name)
    write_empty_caption(str(out), torch.zeros(TOKENS), torch.zeros(TOKENS[0], dtype=torch.bool))
    header = {"input": {"kind": "latents", "shape": list(LATENT), "dtype": "float16"}, "image_size": 256,
              "autoencoder": {"name": "x", "options": {}}, "score_keys": ["r0", "r1", "r2"],
              "text_encoder": {"name": "x", "options": {}, "max_length": TOKENS[0], "dim": TOKENS[1]}}
    write_index(str(out), header, names, complete=True)


def read_wids(out: Path, indices: list[int], epoch_batch: int) -> tuple[Any, Any]:
    from miro_core.records.layout import read_records
    from miro_core.records.order import ShuffledOrder, StepSampler
    from miro_core.records.reader import Collate, RecordDataset, make_loader

    info = read_records(str(out))
    dataset = RecordDataset(info)

    def random_access() -> None:
        for i in indices:
            dataset[i]

    def epoch() -> Any:
        order = ShuffledOrder(info.shard_sizes, seed=0)
        steps = info.samples // epoch_batch
        return make_loader(RecordDataset(info), StepSampler(order, epoch_batch, stop_step=steps), Collate([], None), 2)

    return random_access, epoch


# -- litdata -----------------------------------------------------------------------------------------------
_LITDATA: dict[str, np.ndarray] = {}


def _litdata_sample(index: int) -> dict[str, Any]:
    return {key: _LITDATA[key][index] for key in ("latent", "tokens", "mask", "scores")}


def write_litdata(data: dict[str, np.ndarray], out: Path, shard_size: int) -> None:
    from litdata import optimize

    _LITDATA.update(data)
    optimize(fn=_litdata_sample, inputs=list(range(len(data["latent"]))), output_dir=str(out), num_workers=1,
             chunk_size=shard_size, mode="overwrite", start_method="fork")


def read_litdata(out: Path, indices: list[int], epoch_batch: int) -> tuple[Any, Any]:
    from litdata import StreamingDataLoader, StreamingDataset

    dataset = StreamingDataset(str(out))

    def random_access() -> None:
        for i in indices:
            dataset[i]

    def epoch() -> Any:
        return StreamingDataLoader(StreamingDataset(str(out), shuffle=True, seed=0), batch_size=epoch_batch,
                                   num_workers=2, drop_last=True)

    return random_access, epoch


# -- MosaicML MDS ------------------------------------------------------------------------------------------
def write_mds(data: dict[str, np.ndarray], out: Path, shard_size: int) -> None:
    from streaming import MDSWriter

    columns = {"latent": "ndarray:float16:4,32,32", "tokens": "ndarray:float16:16,384", "mask": "ndarray:uint8:16",
               "scores": "json"}
    per_sample = sum(data[k][0].nbytes for k in ("latent", "tokens", "mask")) + 64
    with MDSWriter(out=str(out), columns=columns, size_limit=shard_size * per_sample) as writer:
        for i in range(len(data["latent"])):
            mask = data["mask"][i].astype(np.uint8)  # MDS has no bool arrays
            writer.write({"latent": data["latent"][i], "tokens": data["tokens"][i], "mask": mask,
                          "scores": {f"r{j}": float(v) for j, v in enumerate(data["scores"][i])}})


def read_mds(out: Path, indices: list[int], epoch_batch: int) -> tuple[Any, Any]:
    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory
    from torch.utils.data import DataLoader

    clean_stale_shared_memory()
    dataset = StreamingDataset(local=str(out), shuffle=False, batch_size=1)

    def random_access() -> None:
        for i in indices:
            dataset[i]

    def epoch() -> Any:
        clean_stale_shared_memory()
        shuffled = StreamingDataset(local=str(out), shuffle=True, shuffle_seed=0, batch_size=epoch_batch)
        return DataLoader(shuffled, batch_size=epoch_batch, num_workers=2, drop_last=True)

    return random_access, epoch


FORMATS = {"wids": (write_wids, read_wids), "litdata": (write_litdata, read_litdata), "mds": (write_mds, read_mds)}


def measure(name: str, data: dict[str, np.ndarray], work: Path, shard_size: int, batch: int) -> dict[str, Any]:
    write, read = FORMATS[name]
    out = work / name
    samples = len(data["latent"])
    start = time.perf_counter()
    write(data, out, shard_size)
    written = time.perf_counter() - start
    indices = np.random.default_rng(1).integers(0, samples, size=2000).tolist()
    random_access, epoch = read(out, indices, batch)
    start = time.perf_counter()
    random_access()
    random_seconds = time.perf_counter() - start
    start = time.perf_counter()
    loader = epoch()
    seen = 0
    first = None
    for item in loader:
        first = first or time.perf_counter() - start
        seen += len(item["latent"] if "latent" in item else item["input"])
    epoch_seconds = time.perf_counter() - start
    return {
        "format": name,
        "write_samples_per_s": round(samples / written),
        "mib_on_disk": round(folder_bytes(out) / 2**20, 1),
        "random_access_samples_per_s": round(len(indices) / random_seconds),
        "epoch_samples_per_s_2_workers": round(seen / epoch_seconds),
        "epoch_samples": seen,
        "first_batch_s": round(first or 0.0, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--formats", default="wids,litdata,mds")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    data = make_records(args.samples)
    work = Path(tempfile.mkdtemp(prefix="miro-formats-"))
    results = []
    try:
        for name in args.formats.split(","):
            try:
                results.append(measure(name, data, work, args.shard_size, args.batch_size))
            except ImportError as err:
                results.append({"format": name, "skipped": f"cannot import: {err}"})
            print(json.dumps(results[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
