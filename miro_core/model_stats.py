"""Counting a backbone's parameters and forward FLOPs, without weights and without a training run.

Networks are built on PyTorch's ``meta`` device where they allow it: parameters then have shapes but no
storage, so even a multi-billion-parameter size is counted in well under a second and no memory. FLOPs
are counted with :class:`torch.utils.flop_counter.FlopCounterMode` during one forward pass on a batch of
one image. On ``meta`` tensors, ``scaled_dot_product_attention`` decomposes into the two batched matrix
products it performs, so attention is counted too (on CPU tensors PyTorch uses a fused kernel the counter
does not know; :func:`count_forward_flops` registers a formula for it).

Convention: like PyTorch's counter, one multiply-add is **two** FLOPs and only matrix products and
convolutions are counted. Papers that used fvcore (DiT: 118.6 Gflops for DiT-XL/2 at 256x256) count one
per multiply-add, i.e. half of the numbers reported here.

torch is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from miro_core.backbone import Backbone, BackboneSpec

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class BackboneStats:
    """Size figures of one backbone size for one input shape."""

    backbone: str
    size: str
    patch_size: int | None
    parameters: int
    #: Forward FLOPs (2 per multiply-add) for one image; ``None`` when not counted.
    flops: int | None
    #: Where the network was built and run for counting: ``meta`` or ``cpu``.
    device: str
    reward_conditioning: tuple[str, ...] = ()

    @property
    def gflops(self) -> float | None:
        return None if self.flops is None else self.flops / 1e9

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["gflops"] = self.gflops
        data["reward_conditioning"] = list(self.reward_conditioning)
        return data


def count_parameters(module: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    seen: set[int] = set()
    total = 0
    for param in module.parameters():
        if id(param) in seen or (trainable_only and not param.requires_grad):
            continue
        seen.add(id(param))
        total += param.numel()
    return total


def build_network(backbone: Backbone, spec: BackboneSpec, device: str = "meta") -> torch.nn.Module:
    """Build ``backbone`` for ``spec`` with every tensor created on ``device`` (``meta``: no storage)."""
    import torch

    with torch.device(device):
        return backbone.build(spec)


def example_inputs(
    spec: BackboneSpec, cond_len: int, batch: int = 1, device: str = "cpu", seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Random ``(x, t, cond)`` following the backbone forward contract; the last quarter of tokens is masked."""
    import torch

    from miro_core.conditioning import Conditioning

    if device == "meta":
        x = torch.empty(batch, spec.in_channels, spec.image_size, spec.image_size, device=device)
        t = torch.empty(batch, device=device)
        tokens = torch.empty(batch, cond_len, spec.cond_dim, device=device)
        mask = torch.ones(batch, cond_len, dtype=torch.bool, device=device)
        pooled = torch.empty(batch, spec.cond_dim, device=device)
        return x, t, Conditioning(tokens, mask, pooled)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, spec.in_channels, spec.image_size, spec.image_size, generator=gen)
    t = torch.rand(batch, generator=gen)
    tokens = torch.randn(batch, cond_len, spec.cond_dim, generator=gen)
    mask = torch.ones(batch, cond_len, dtype=torch.bool)
    mask[:, cond_len - cond_len // 4 :] = False
    pooled = torch.randn(batch, spec.cond_dim, generator=gen)
    cond = Conditioning(tokens.to(device), mask.to(device), pooled.to(device))
    return x.to(device), t.to(device), cond


def _cpu_flash_attention_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_forward_flops(module: torch.nn.Module, spec: BackboneSpec, cond_len: int, device: str | None = None) -> int:
    """FLOPs of one forward pass (eval mode, no grad) on a batch of one image."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    if device is None:
        device = _device_of(module)
    custom: dict[Any, Any] = {}
    cpu_flash = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_flash is not None:
        custom[cpu_flash] = _cpu_flash_attention_flops
    x, t, cond = example_inputs(spec, cond_len, batch=1, device=device)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=custom) as counter:
            module(x, t, cond)
    finally:
        module.train(was_training)
    return int(counter.get_total_flops())


def _device_of(module: torch.nn.Module) -> str:
    for tensor in module.parameters():
        return tensor.device.type
    for tensor in module.buffers():
        return tensor.device.type
    return "cpu"


def backbone_stats(backbone: Backbone, spec: BackboneSpec, cond_len: int, flops: bool = True) -> BackboneStats:
    """Parameters and (optionally) forward FLOPs of one configured backbone.

    Counts on ``meta``; a network that cannot be built or run there is built on CPU instead (that needs its
    real memory, so prefer ``meta``-compatible networks).
    """
    config = backbone.size_config()
    try:
        network = build_network(backbone, spec, "meta")
        flop_count = count_forward_flops(network, spec, cond_len, "meta") if flops else None
        device = "meta"
    except (NotImplementedError, RuntimeError):
        network = build_network(backbone, spec, "cpu")
        flop_count = count_forward_flops(network, spec, cond_len, "cpu") if flops else None
        device = "cpu"
    return BackboneStats(
        backbone=backbone.name,
        size=backbone.options.size,
        patch_size=config.get("patch_size"),
        parameters=count_parameters(network),
        flops=flop_count,
        device=device,
        reward_conditioning=tuple(sorted(backbone.reward_conditioning)),
    )


# -- model FLOPs utilisation ---------------------------------------------------------------------------

#: Dense peak tensor FLOP/s of common accelerators, from the vendors' datasheets (no sparsity):
#: ``(bf16/fp16, tf32)``. Matched against ``torch.cuda.get_device_name()`` in order, so longer names
#: come first. Give ``peak_tflops`` in the training config for anything else.
PEAK_FLOPS: tuple[tuple[str, float, float], ...] = (
    ("GB200", 2.5e15, 1.25e15),
    ("B200", 2.25e15, 1.1e15),
    ("H200", 989.4e12, 494.7e12),
    ("H100 PCIe", 756e12, 378e12),
    ("H100", 989.4e12, 494.7e12),
    ("GH200", 989.4e12, 494.7e12),
    ("A100", 312e12, 156e12),
    ("L40S", 362.05e12, 183e12),
    ("L40", 181e12, 90.5e12),
    ("L4", 121e12, 60e12),
    ("A10G", 70e12, 35e12),
    ("A10", 125e12, 62.5e12),
    ("RTX 4090", 165.2e12, 82.6e12),
    ("RTX 3090", 71e12, 35.6e12),
    ("V100", 125e12, 15.7e12),
)


def device_peak_flops(device: Any, mixed_precision: str, peak_tflops: float | None = None) -> float | None:
    """Peak FLOP/s of one device for the run's precision; ``None`` when unknown (CPU without a given peak).

    bf16/fp16 runs use the tensor-core half-precision peak, float32 runs on CUDA the TF32 peak.
    """
    if peak_tflops is not None:
        return float(peak_tflops) * 1e12
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for pattern, half, tf32 in PEAK_FLOPS:
        if pattern in name:
            return half if mixed_precision in ("bf16", "fp16") else tf32
    return None


def training_flops_per_sample(backbone: Backbone, spec: BackboneSpec, cond_len: int) -> int | None:
    """Model FLOPs of one training sample: 3x the counted forward FLOPs (the backward costs twice the
    forward), the convention of MFU as defined by PaLM. The conditioning stack is not counted (a few
    percent at real sizes), nor recomputation by activation checkpointing (that is hardware, not model,
    FLOPs). ``None`` when the backbone cannot be counted."""
    try:
        stats = backbone_stats(backbone, spec, cond_len, flops=True)
    except Exception:  # noqa: BLE001 - a backbone that cannot be counted just gets no MFU figure
        return None
    return None if stats.flops is None else 3 * stats.flops
