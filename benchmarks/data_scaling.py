"""Streaming records: memory and time to the first step do not grow with the dataset; the loader outpaces the model.

1. Scaling: records of 4x32x32 float16 latents (the SDXL-VAE size at 256 px) with 16x64 text tokens, 10k and
   200k samples in shards of 5000. The records are written fast: one shard is written by the records writer,
   the others are byte copies of it (and of its member index) under their own names (content does not
   matter). For each size,
   ``miro train`` runs ``--steps`` steps of a small DiT with 2 data workers in a fresh process (``--repeats``
   times, the sizes interleaved; medians reported); measured are
   the peak memory of the whole process tree (trainer and workers: the sum of their proportional set sizes,
   so pages the forked workers share with the trainer count once; sampled every 50 ms) and the time
   from the start of ``Trainer.run`` to the end of the first step.
2. Throughput: the loader alone (2 worker processes, batch 32) against what a training step consumes, for
   the demo backbone on 32x32 pixel records (``configs/demo.yaml``, batch 32, 30 steps) and for ``dit-b/2``
   on 32x32x4 latents (batch 16, 6 steps: one step takes seconds on a CPU).

    .venv/bin/python benchmarks/data_scaling.py [--sizes 10000,200000] [--steps 20] [--repeats 3] [--skip-throughput]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

SHARD = 5000
TEXT = (16, 64)


def write_scaled_records(out: Path, samples: int, template: Path | None) -> Path:
    """``samples`` latent records in shards of SHARD: one written, the rest copied from ``template``."""
    from miro_core.records.synthetic import write_synthetic_records
    from miro_core.records.writer import write_index

    if template is None:
        write_synthetic_records(str(out), SHARD, shard_size=SHARD, input_shape=(4, 32, 32), text_shape=TEXT)
        template = out
    else:
        (out / "shards").mkdir(parents=True, exist_ok=True)
        shutil.copy(template / "empty_caption.safetensors", out / "empty_caption.safetensors")
    source_tar = template / "shards" / "synthetic-000000.tar"
    source_index = template / "shards" / "synthetic-000000.index.npy"
    sidecar = json.loads((template / "shards" / "synthetic-000000.json").read_text())
    names = []
    for number in range(samples // SHARD):
        name = f"synthetic-{number:06d}"
        names.append(name)
        if not (out / "shards" / f"{name}.tar").exists():
            shutil.copy(source_tar, out / "shards" / f"{name}.tar")
            shutil.copy(source_index, out / "shards" / f"{name}.index.npy")
            (out / "shards" / f"{name}.json").write_text(json.dumps({**sidecar, "name": name,
                                                                      "url": f"shards/{name}.tar"}))
    header = {k: v for k, v in json.loads((template / "records.json").read_text()).items()
              if k in ("input", "image_size", "autoencoder", "text_encoder", "score_keys", "source")}
    write_index(str(out), header, names, complete=True)
    return template


def tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for process in processes:
        try:
            # PSS: pages shared between the trainer and its forked workers (torch, the model) count once
            total += process.memory_full_info().pss
        except psutil.Error:
            pass
    return total


TRAIN_SCRIPT = """
import json, sys, time
from miro_core.plugins import get_registry
from miro_core.train import TrainConfig, Trainer
cfg = TrainConfig(**json.loads(sys.argv[1]))
trainer = Trainer(cfg, get_registry(), progress=False)
trainer.run()
print(json.dumps({"time_to_first_step": trainer.first_step_at - trainer.started_at,
                  "median_step": sorted(trainer.step_durations)[len(trainer.step_durations) // 2]}))
"""


def run_training(records: Path, out: Path, steps: int, backbone: str = "dit-tiny/2") -> dict[str, Any]:
    """``miro train`` in a fresh process; peak RSS of its process tree and its time to the first step."""
    cfg = {"data": str(records), "out": str(out), "no_rewards": True, "backbone": backbone, "steps": steps,
           "batch_size": 32, "warmup_steps": 2, "save_every": 10**6, "device": "cpu", "data_workers": 2,
           "cond_dim": 64, "registers": 4, "mixed_precision": "no"}
    process = subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, json.dumps(cfg)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(stderr[-3000:])
    result = json.loads(stdout.strip().splitlines()[-1])
    return {"peak_rss_mib": round(peak / 2**20, 1), **{k: round(v, 3) for k, v in result.items()}}


def loader_samples_per_second(records: Path, batch: int = 32, batches: int = 300) -> float:
    from miro_core.records.layout import read_records
    from miro_core.records.order import ShuffledOrder, StepSampler
    from miro_core.records.reader import Collate, RecordDataset, make_loader

    info = read_records(str(records))
    order = ShuffledOrder(info.shard_sizes, seed=0)
    loader = make_loader(RecordDataset(info), StepSampler(order, batch, stop_step=batches), Collate([], None), 2)
    iterator = iter(loader)
    next(iterator)  # workers started
    start = time.perf_counter()
    count = sum(1 for _ in iterator)
    return count * batch / (time.perf_counter() - start)


def model_samples_per_second(records: Path, out: Path, config: dict[str, Any], steps: int) -> float:
    """Median training-step speed of ``miro train`` with this config over the steps after the first
    third (warm-up), in samples/s."""
    from miro_core.plugins import get_registry
    from miro_core.train import TrainConfig, Trainer

    cfg = TrainConfig(**{"data": str(records), "out": str(out), "no_rewards": True, "steps": steps,
                         "save_every": 10**6, "device": "cpu", "data_workers": 2, **config})
    trainer = Trainer(cfg, get_registry(), progress=False)
    trainer.run()
    durations = sorted(trainer.step_durations[steps // 3 :])
    return cfg.batch_size / durations[len(durations) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,200000")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="Training runs per size, interleaved.")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--work", default=None, help="Folder for the records (default: a temporary folder).")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="miro-scaling-"))
    report: dict[str, Any] = {"scaling": {}, "throughput": {}}
    template = None
    sizes = [int(s) for s in args.sizes.split(",")]
    if any(size < SHARD or size % SHARD for size in sizes):
        parser.error(f"--sizes must be multiples of the shard size, {SHARD} (got {args.sizes})")
    for size in sizes:
        start = time.perf_counter()
        template = write_scaled_records(work / f"records-{size}", size, template)
        report["scaling"][size] = {"records_written_s": round(time.perf_counter() - start, 1), "runs": []}
    for _ in range(args.repeats):  # sizes interleaved, so a change in the machine's load hits both
        for size in sizes:
            shutil.rmtree(work / f"run-{size}", ignore_errors=True)
            result = run_training(work / f"records-{size}", work / f"run-{size}", args.steps)
            report["scaling"][size]["runs"].append(result)
            print(json.dumps({size: result}), flush=True)
    for size in sizes:
        runs = report["scaling"][size]["runs"]
        for key in ("peak_rss_mib", "time_to_first_step"):
            values = sorted(r[key] for r in runs)
            report["scaling"][size][f"median_{key}"] = values[len(values) // 2]
    if not args.skip_throughput:
        from miro_core.records.synthetic import write_synthetic_records

        pixels = work / "pixels"
        if not (pixels / "records.json").exists():
            write_synthetic_records(str(pixels), 10000, shard_size=2000, input_kind="pixels", input_shape=(3, 32, 32),
                                    text_shape=(16, 384))
        latents = work / f"records-{int(args.sizes.split(',')[0])}"
        demo = {"backbone": "hybrid-small", "batch_size": 32, "mixed_precision": "auto", "cond_dim": 128}
        dit = {"backbone": "dit-b/2", "batch_size": 16, "mixed_precision": "auto"}
        for name, records, config, steps in (("demo (hybrid-small, 32x32 pixels)", pixels, demo, 30),
                                             ("dit-b/2 (32x32x4 latents)", latents, dit, 6)):
            loader = loader_samples_per_second(records)
            folder = work / f"speed-{config['backbone'].replace('/', '_')}"
            shutil.rmtree(folder, ignore_errors=True)
            model = model_samples_per_second(records, folder, config, steps)
            report["throughput"][name] = {"loader_samples_per_s": round(loader), "model_samples_per_s": round(model, 1),
                                          "ratio": round(loader / model, 1)}
            print(json.dumps({name: report["throughput"][name]}), flush=True)
    print(json.dumps(report, indent=2))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
