"""Run under ``torch.distributed.run`` with 2 CPU processes: FSDP2-shard a tiny MiroModel (gloo), train two
steps with EMA, write a checkpoint through ``miro_core.sharding``, load it into a freshly sharded model and
optimizer, and write what tests/test_sharding.py compares.

accelerate enables FSDP only on GPUs (on CPUs it falls back to DDP), so this drives PyTorch's
``fully_shard`` directly: the same DTensor parameters the trainer sees under ``accelerate launch`` with
configs/accelerate/fsdp.yaml, and the same save/restore code the trainer runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def build(registry):
    from miro_core.model import ModelSpec, build_model

    spec = ModelSpec(backbone="dit", backbone_options={"size": "tiny"}, in_channels=4, image_size=8, text_dim=16,
                     reward_keys=["a", "b"], cond_dim=32, cond_heads=2, mixer_layers=1, registers=2,
                     fourier_channels=16)
    torch.manual_seed(0)
    return build_model(spec, registry)


def shard(model, mesh):
    from torch.distributed.fsdp import fully_shard

    for block in model.network.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def step(model, optimizer, ema, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 4, 8, 8, generator=generator)
    t = torch.rand(4, generator=generator)
    tokens = torch.randn(4, 5, 16, generator=generator)
    mask = torch.ones(4, 5, dtype=torch.bool)
    levels = torch.rand(4, 2, generator=generator)
    loss = model(x, t, tokens, mask, levels).pow(2).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    ema.step(model.parameters())


def main(out: str) -> None:
    from diffusers.training_utils import EMAModel
    from torch.distributed.device_mesh import init_device_mesh

    from miro_core import sharding
    from miro_core.plugins import build_registry
    from miro_core.run_folder import load_optimizer_state, load_weights, save_checkpoint

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    registry = build_registry()
    model = shard(build(registry), mesh)
    assert sharding.is_sharded(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ema = EMAModel(model.parameters(), decay=0.9)
    for seed in (1, 2):
        step(model, optimizer, ema, seed)

    state = sharding.model_state(model)
    shadow = sharding.gather_all(ema.shadow_params)
    optim = sharding.optimizer_state(model, optimizer)
    names = [n for n, _ in model.named_parameters()]
    run = Path(out)
    if rank == 0:
        save_checkpoint(run, 2, state, {**state, **dict(zip(names, shadow))}, optim, {"step": 2})
    dist.barrier()

    fresh = shard(build(registry), mesh)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    fresh_ema = EMAModel(fresh.parameters(), decay=0.9)
    checkpoint = run / "checkpoints" / "step-00000002"
    sharding.load_model_state(fresh, load_weights(checkpoint / "model.safetensors"))
    sharding.load_optimizer_state(fresh, fresh_optimizer, load_optimizer_state(checkpoint / "optimizer.pt"))
    ema_weights = load_weights(checkpoint / "model_ema.safetensors")
    fresh_ema.shadow_params = [sharding.like(p, ema_weights[n]) for n, p in fresh.named_parameters()]
    fresh_ema.optimization_step = ema.optimization_step
    for m, o, e in ((model, optimizer, ema), (fresh, fresh_optimizer, fresh_ema)):
        step(m, o, e, 3)
    continued = sharding.model_state(model)
    restored = sharding.model_state(fresh)
    restored_ema = sharding.gather_all(fresh_ema.shadow_params)
    continued_ema = sharding.gather_all(ema.shadow_params)
    local = next(iter(model.parameters())).to_local().shape
    if rank == 0:
        report = {
            "local_shape_of_first_parameter": list(local),
            "full_shape_of_first_parameter": list(state[names[0]].shape),
            "restored_equals_continued": all(torch.equal(continued[k], restored[k]) for k in continued),
            "ema_restored_equals_continued": all(torch.equal(a, b) for a, b in zip(continued_ema, restored_ema)),
            "optimizer_state_keys": sorted(optim["state"])[:3],
        }
        torch.save({"state": state, "shadow": dict(zip(names, shadow))}, run / "sharded.pt")
        (run / "report.json").write_text(json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
