"""Speed options of a training run on an accelerator: TF32, channels-last, activation checkpointing, compile.

Each is a plain PyTorch switch; this module decides where it applies so the trainer stays readable.
None of them changes what a step computes beyond floating-point rounding (TF32 and compile reorder
arithmetic; checkpointing recomputes the same forward), and all are no-ops where they do not help.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def enable_tf32(enabled: bool) -> None:
    """TF32 matrix products and convolutions on CUDA (float32 runs and float32 parts of autocast)."""
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def wants_channels_last(choice: str, model: nn.Module, device_type: str) -> bool:
    """``auto``: on CUDA, for networks built mostly of 2D convolutions (UNet-like backbones), where
    cuDNN's NHWC kernels are faster; transformers (a single patch-embedding convolution) are left alone."""
    if choice in ("always", "never"):
        return choice == "always"
    convolutions = sum(1 for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1))
    return device_type == "cuda" and convolutions >= 4


def checkpoint_blocks(network: nn.Module) -> int:
    """Recompute each block's activations in the backward pass instead of storing them.

    A block is an element of an ``nn.ModuleList`` (how every backbone here, and the conventional
    transformer/UNet layout, holds its repeated layers); the outermost lists are wrapped, never a block
    inside an already wrapped block. The wrapper replaces ``forward`` on the instance, so parameter names,
    state dicts and checkpoints are unchanged. Returns the number of wrapped blocks.
    """
    from torch.utils.checkpoint import checkpoint

    wrapped = 0

    def wrap(block: nn.Module) -> None:
        forward = block.forward

        def checkpointed(*args: Any, **kwargs: Any) -> Any:
            if not torch.is_grad_enabled():
                return forward(*args, **kwargs)
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)

        block.forward = checkpointed  # type: ignore[method-assign]

    def visit(module: nn.Module) -> None:
        nonlocal wrapped
        for child in module.children():
            if isinstance(child, nn.ModuleList):
                for block in child:
                    wrap(block)
                    wrapped += 1
            else:
                visit(child)

    visit(network)
    return wrapped


def compile_model(model: nn.Module, options: dict[str, Any]) -> None:
    """``torch.compile`` in place (``nn.Module.compile``: parameter names and state dicts stay as they are)."""
    model.compile(**options)


def fused_optimizer_supported(device_type: str) -> bool:
    """Fused AdamW (one kernel for the whole update) is used on CUDA."""
    return device_type == "cuda"
