"""Checkpoints of sharded (FSDP2) training: full tensors out, shards back in.

Under ``accelerate launch`` with an FSDP config (``configs/accelerate/fsdp.yaml``) every parameter is a
``DTensor`` holding one shard per process. A checkpoint of this project is always *full* tensors in the
usual files (``model.safetensors``, ``model_ema.safetensors``, ``optimizer.pt``), so a sharded run's
checkpoint samples on one device and a run can be resumed on another number of devices. Gathering is a
collective: every process calls these functions, and only the main process writes what they return.
Without sharding they are the plain ``state_dict`` calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def is_sharded(model: nn.Module) -> bool:
    """Whether any parameter of ``model`` is a DTensor (FSDP2)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor on CPU (gathered from every process for a DTensor)."""
    from torch.distributed.tensor import DTensor

    if isinstance(tensor, DTensor):
        tensor = tensor.full_tensor()
    return tensor.detach().to("cpu")


def like(reference: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """``full`` laid out as ``reference``: this process's shard of it for a DTensor, else a plain copy."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(reference, DTensor):
        local = full.to(reference.device, reference.dtype)
        return distribute_tensor(local, reference.device_mesh, reference.placements)
    return full.to(reference.device, reference.dtype).clone()


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full state dict (parameters and buffers) on CPU."""
    if not is_sharded(model):
        return {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict; each process keeps its shard."""
    if not is_sharded(model):
        model.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state: as is without sharding, keyed by parameter name and gathered with it."""
    if not is_sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    if not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    # strict=False: a parameter that never received a gradient (an unused embedding) has no state to restore
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True, strict=False))


def gather_all(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Full CPU copies of ``tensors`` (e.g. EMA shadow parameters)."""
    return [full_tensor(t) for t in tensors]
