"""Training steps per second of backbone sizes on this machine (flow matching, AdamW, fp32).

Usage::

    .venv/bin/python benchmarks/backbone_speed.py                       # every installed backbone's tiny size
    .venv/bin/python benchmarks/backbone_speed.py dit-tiny rin-tiny --batch 32 --steps 20 --json

One step = forward on ``x_t = (1 - t) x0 + t eps`` + MSE against ``eps - x0`` + backward + AdamW update, on
random data of the given shape (default 32x32x4: SDXL latents of 256x256 images) with ``--cond-len``
conditioning tokens of width ``--cond-dim`` (the last quarter masked as padding). The first ``--warmup``
steps are not timed; each step is timed alone and the median (and the fastest, which on a shared machine is
the better estimate of the hardware) is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics

from timing import call_durations


def measure(backbone, spec, batch: int, cond_len: int, steps: int, warmup: int) -> dict:
    import torch

    from miro_core.conditioning import Conditioning
    from miro_core.model_stats import count_parameters

    torch.manual_seed(0)
    model = backbone.build(spec).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x0 = torch.randn(batch, spec.in_channels, spec.image_size, spec.image_size)
    mask = torch.ones(batch, cond_len, dtype=torch.bool)
    mask[:, cond_len - cond_len // 4 :] = False
    cond = Conditioning(torch.randn(batch, cond_len, spec.cond_dim), mask, torch.randn(batch, spec.cond_dim))

    def step() -> float:
        t = torch.rand(batch)
        eps = torch.randn_like(x0)
        x_t = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * eps
        loss = torch.nn.functional.mse_loss(model(x_t, t, cond), eps - x0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    durations = call_durations(step, steps, warmup)
    median = statistics.median(durations)
    return {
        "backbone": backbone.name,
        "size": backbone.options.size,
        "parameters": count_parameters(model),
        "batch": batch,
        "steps": steps,
        "seconds": round(sum(durations), 3),
        # Median and fastest step: on a shared machine the fastest is the better estimate of the hardware.
        "steps_per_second": round(1 / median, 3),
        "best_steps_per_second": round(1 / min(durations), 3),
        "images_per_second": round(batch / median, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("backbones", nargs="*", help="e.g. dit-tiny rin-tiny (default: every backbone's tiny size)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--cond-dim", type=int, default=64)
    parser.add_argument("--cond-len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    args = parser.parse_args()

    import torch

    from miro_core.backbone import BackboneSpec, parse_backbone_name
    from miro_core.plugins import get_registry

    if args.threads:
        torch.set_num_threads(args.threads)
    known = get_registry().backbones.as_dict()
    names = args.backbones or [f"{name}-tiny" for name in sorted(known) if "tiny" in known[name].sizes]
    spec = BackboneSpec(in_channels=args.channels, image_size=args.image_size, cond_dim=args.cond_dim)
    if not args.json:
        print(
            f"# {args.channels}x{args.image_size}x{args.image_size} inputs, batch {args.batch}, "
            f"{args.cond_len} x {args.cond_dim} conditioning, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}; steps/s from the median step, best from the fastest"
        )
        print(f"{'backbone':<16}{'params':>12}{'steps/s':>10}{'best':>10}{'img/s':>10}")
    for text in names:
        name, options = parse_backbone_name(text, known)
        result = measure(known[name](options), spec, args.batch, args.cond_len, args.steps, args.warmup)
        if args.json:
            print(json.dumps(result))
        else:
            label = f"{result['backbone']}-{result['size']}"
            print(
                f"{label:<16}{result['parameters']:>12,}{result['steps_per_second']:>10.2f}"
                f"{result['best_steps_per_second']:>10.2f}{result['images_per_second']:>10.1f}"
            )


if __name__ == "__main__":
    main()
