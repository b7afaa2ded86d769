"""Framework overhead of a training step: `miro train`'s loop against a bare PyTorch loop.

Both train the same MiroModel (same backbone, conditioning, batch and AdamW settings) on the same
records; the bare loop is minRF-style (no accelerate, no EMA, no logging, no checkpoints) and cycles
through batches read into memory beforehand. The framework loop includes everything `miro train` does
per step (the streaming DataLoader, accelerate, EMA, learned loss weighting, LR schedule, gradient
clipping, tensorboard). Prints steps/s, overhead and peak memory.

    .venv/bin/python benchmarks/train_step_overhead.py [--steps 60] [--batch-size 32] [--backbone hybrid-small]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
from pathlib import Path

from timing import call_durations


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def preloaded_batches(run_dir: Path, registry, batch_size: int, count: int = 32) -> list[dict]:
    """``count`` batches read from the run's records into memory (the bare loop does no data loading)."""
    from miro_core.bins import BinsFile
    from miro_core.records.layout import read_records
    from miro_core.records.order import ShuffledOrder, StepSampler
    from miro_core.records.reader import Collate, RecordDataset, make_loader

    config = json.loads((run_dir / "config.json").read_text())
    info = read_records(config["data"]["records"])
    bins = BinsFile.load(str(run_dir / "bins.json"), registry)
    sampler = StepSampler(ShuffledOrder(info.shard_sizes, seed=0), batch_size, stop_step=count)
    return list(make_loader(RecordDataset(info), sampler, Collate(config["reward_keys"], bins), workers=0))


def bare_loop_durations(model, optimizer, batches: list[dict], warmup: int, steps: int) -> list[float]:
    """Per-step seconds of a minRF-style loop: sample, interpolate, predict, MSE, backward, step."""
    import torch

    from miro_core.flow import interpolate, per_sample_mse, sample_time, velocity_target
    from miro_core.records.reader import model_input

    generator = torch.Generator().manual_seed(0)
    position = 0

    def step() -> None:
        nonlocal position
        batch = batches[position % len(batches)]
        position += 1
        x0 = model_input(batch["input"])
        noise = torch.randn(x0.shape, generator=generator)
        t = sample_time(x0.shape[0], "logit-normal", generator)
        v = model(interpolate(x0, noise, t), t, batch["tokens"].float(), batch["mask"], batch["levels"])
        loss = per_sample_mse(v, velocity_target(x0, noise)).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return call_durations(step, steps, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backbone", default="hybrid-small")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from miro_core.annotate import AnnotateConfig, Annotator
    from miro_core.bins import fit_bins
    from miro_core.plugins import get_registry
    from miro_core.shapes.dataset import write_shapes_dataset
    from miro_core.train import TrainConfig, Trainer, make_optimizer

    registry = get_registry()
    work = Path(tempfile.mkdtemp(prefix="miro-bench-"))
    rewards = ["shapes-alignment", "shapes-aesthetic", "shapes-sharpness"]
    write_shapes_dataset(str(work / "data"), n=args.samples, progress=False)
    Annotator(
        AnnotateConfig(data=str(work / "data"), out=str(work / "ann"), rewards=rewards),
        [registry.rewards.create(r) for r in rewards],
    ).run()
    fit_bins(str(work / "ann"), num_bins=64, ties="spread", registry=registry).save(str(work / "bins.json"))

    def config(out: str, steps: int) -> TrainConfig:
        return TrainConfig(
            data=str(work / "ann"), bins=str(work / "bins.json"), out=out, backbone=args.backbone,
            batch_size=args.batch_size, steps=steps, warmup_steps=5, save_every=10**9, log_every=10, device="cpu",
        )

    framework_steps: list[float] = []
    bare_steps: list[float] = []
    for repeat in range(args.repeats):
        # Framework: per-step durations measured by the trainer itself, after warm-up.
        full = Trainer(config(str(work / f"full-{repeat}"), args.warmup + args.steps), registry, progress=False)
        full.run()
        framework_steps += full.step_durations[args.warmup :]

        # Bare loop on the same model and data.
        from miro_core.model import ModelSpec, build_model

        spec = ModelSpec(**json.loads((Path(full.run_dir) / "config.json").read_text())["model"])
        torch.manual_seed(0)
        model = build_model(spec, registry)
        optimizer = make_optimizer(config("unused", 1), model)
        batches = preloaded_batches(Path(full.run_dir), registry, args.batch_size)
        bare_steps += bare_loop_durations(model, optimizer, batches, args.warmup, args.steps)

    # Medians are robust to other processes stealing the CPU for a moment.
    framework, bare = 1 / statistics.median(framework_steps), 1 / statistics.median(bare_steps)
    report = {
        "backbone": args.backbone,
        "batch_size": args.batch_size,
        "steps_timed": args.steps,
        "framework_steps_per_second": round(framework, 3),
        "bare_steps_per_second": round(bare, 3),
        "overhead_percent": round(100 * (bare / framework - 1), 2),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
