"""The two operations that bf16 autocast makes *slower* on CPU, kept in float32.

Measured with torch 2.14 on a 2-core AVX512-BF16 CPU (forward + backward at the demo's sizes, batch 32;
``benchmarks/cpu_bf16_ops.py``): bf16 convolutions and matrix products run 3-3.5x faster than float32, but
PyTorch's CPU flash-attention runs 3x *slower* in bf16 than in float32 (9.4 ms against 3.0 ms at 64
tokens), and GroupNorm on a bf16 channels-last map is slower than in float32 as well. Autocast sends both
to bf16, so a bf16 training step of the demo model was only about 1.05x faster than float32; computing
exactly these two in float32 (the projections and convolutions around them stay bf16) makes it 1.5x faster.

Backbones call :func:`attention` instead of ``F.scaled_dot_product_attention`` and use
:class:`GroupNorm32` instead of ``nn.GroupNorm``; on a GPU or in float32 both are the plain operations
(GroupNorm32 always normalises in float32, as in OpenAI's guided-diffusion, which autocast on CUDA does
anyway). :func:`resolve_mixed_precision` turns ``mixed_precision: auto`` into bf16 only where the hardware
runs it natively.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOW_PRECISION = (torch.bfloat16, torch.float16)


def attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``F.scaled_dot_product_attention``, computed in float32 for low-precision tensors on CPU."""
    if query.device.type == "cpu" and query.dtype in LOW_PRECISION:
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(query.float(), key.float(), value.float(), attn_mask=mask)
        return out.to(query.dtype)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm that normalises in float32 and returns the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        with torch.autocast(x.device.type, enabled=False):
            out = F.group_norm(x.float(), self.num_groups, weight, bias, self.eps)
        return out.to(x.dtype)


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has bf16 instructions (AVX512-BF16 or AMX-BF16), from ``/proc/cpuinfo`` on Linux.

    Without them oneDNN emulates bf16 and autocast can be slower than float32, so ``auto`` stays in
    float32 there (and on systems without ``/proc/cpuinfo``).
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as handle:
                cpuinfo = handle.read()
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_mixed_precision(choice: str, device_type: str) -> str:
    """``auto`` -> ``bf16`` where the device runs bf16 natively (CUDA with bf16 support, CPUs with bf16
    instructions), else ``no``; any other choice is returned unchanged."""
    if choice != "auto":
        return choice
    if device_type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_has_native_bf16() else "no"
