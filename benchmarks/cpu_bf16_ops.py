"""Why `miro_core.low_precision` exists: forward + backward time of single operations in float32 and bf16.

On a CPU with AVX512-BF16 (or AMX), bf16 convolutions and matrix products are several times faster than
float32, but PyTorch's CPU flash-attention backward and GroupNorm's backward on channels-last maps are
slower in bf16. This times each operation at the demo's sizes (batch 32, 32x32 images, 64 image tokens)
in float32, in plain bf16, and through `attention` / `GroupNorm32`, then a whole training step of the
demo model (`hybrid-small`) in float32 and under bf16 autocast.

    .venv/bin/python benchmarks/cpu_bf16_ops.py [--repeats 30] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable

from timing import call_durations


def median_ms(fn: Callable[[], None], repeats: int, warmup: int = 5) -> float:
    return round(1000 * statistics.median(call_durations(fn, repeats, warmup)), 2)


def op_timings(batch: int, repeats: int) -> dict[str, dict[str, float]]:
    """Forward + backward of one convolution, linear layer, attention and GroupNorm per dtype."""
    import torch

    dtypes = (torch.float32, torch.bfloat16)
    return {str(dtype).removeprefix("torch."): ops_in(dtype, batch, repeats) for dtype in dtypes}


def ops_in(dtype: object, batch: int, repeats: int) -> dict[str, float]:
    """Median forward + backward milliseconds of each operation in ``dtype``."""
    import torch
    import torch.nn.functional as F

    from miro_core.low_precision import GroupNorm32, attention

    conv = torch.nn.Conv2d(32, 32, 3, padding=1).to(dtype).to(memory_format=torch.channels_last)
    image = torch.randn(batch, 32, 32, 32, dtype=dtype).contiguous(memory_format=torch.channels_last)
    image.requires_grad_()
    linear = torch.nn.Linear(128, 512).to(dtype)
    rows = torch.randn(batch * 64, 128, dtype=dtype, requires_grad=True)
    q, k, v = (torch.randn(batch, 4, 64, 32, dtype=dtype, requires_grad=True) for _ in range(3))
    norm, norm32 = torch.nn.GroupNorm(8, 32).to(dtype), GroupNorm32(8, 32).to(dtype)
    return {
        "conv3x3_32ch_32x32": median_ms(lambda: conv(image).sum().backward(), repeats),
        "linear_128x512": median_ms(lambda: linear(rows).sum().backward(), repeats),
        "sdpa_64_tokens": median_ms(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward(), repeats),
        "miro_attention_64_tokens": median_ms(lambda: attention(q, k, v).sum().backward(), repeats),
        "group_norm": median_ms(lambda: norm(image).sum().backward(), repeats),
        "group_norm32": median_ms(lambda: norm32(image).sum().backward(), repeats),
    }


def step_timings(batch: int, repeats: int) -> dict[str, float]:
    """One AdamW training step of the demo model in float32 and under bf16 autocast."""
    import torch

    from miro_core.model import ModelSpec, build_model
    from miro_core.plugins import get_registry

    spec = ModelSpec(
        backbone="hybrid", backbone_options={"size": "small"}, in_channels=3, image_size=32, text_dim=384,
        reward_keys=["a", "b", "c"],
    )
    torch.manual_seed(0)
    model = build_model(spec, get_registry())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, t = torch.randn(batch, 3, 32, 32), torch.rand(batch)
    tokens, mask = torch.randn(batch, 16, 384), torch.ones(batch, 16, dtype=torch.bool)
    levels = torch.rand(batch, 3)
    out = {}
    for label, enabled in (("float32", False), ("bf16_autocast", True)):

        def step(enabled: bool = enabled) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
                v = model(x, t, tokens, mask, levels)
            (v.float() - x).pow(2).mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        out[label] = median_ms(step, repeats)
    out["speedup"] = round(out["float32"] / out["bf16_autocast"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import torch

    report = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "ops_forward_backward_ms": op_timings(args.batch_size, args.repeats),
        "hybrid_small_step_ms": step_timings(args.batch_size, args.repeats),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
