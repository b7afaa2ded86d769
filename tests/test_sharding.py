"""Sharded (FSDP2) training: checkpoints gather full tensors and restore into shards; the accelerate config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_fsdp2_checkpoints_round_trip_across_two_cpu_processes(registry, tmp_path: Path):
    """2 gloo processes shard a MiroModel with fully_shard, save a full checkpoint, restore it into new shards;
    the restored run continues exactly as the original, and the gathered weights match unsharded training."""
    pytest.importorskip("miro_backbone_dit")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "tests/fsdp_checkpoint.py",
               str(tmp_path / "run")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["local_shape_of_first_parameter"][0] * 2 == report["full_shape_of_first_parameter"][0]
    assert report["restored_equals_continued"] and report["ema_restored_equals_continued"]

    # The same two steps without sharding (both processes saw the same batches, so the averaged
    # gradients are the single-process gradients).
    from diffusers.training_utils import EMAModel

    sys.path.insert(0, str(ROOT))
    from tests.fsdp_checkpoint import build, step

    model = build(registry)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ema = EMAModel(model.parameters(), decay=0.9)
    for seed in (1, 2):
        step(model, optimizer, ema, seed)
    sharded = torch.load(tmp_path / "run" / "sharded.pt", weights_only=True)
    for name, value in model.state_dict().items():
        assert torch.allclose(sharded["state"][name], value, atol=1e-5), name
    for (name, _), shadow in zip(model.named_parameters(), ema.shadow_params):
        assert torch.allclose(sharded["shadow"][name], shadow, atol=1e-5), name


def test_accelerate_fsdp_config_builds_a_plugin_that_wraps_mmdit_blocks(registry):
    """configs/accelerate/fsdp.yaml is a valid accelerate config whose wrap class is a block of mmdit."""
    pytest.importorskip("miro_backbone_mmdit")
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils import FullyShardedDataParallelPlugin

    from miro_core.backbone import BackboneSpec

    path = ROOT / "configs" / "accelerate" / "fsdp.yaml"
    config = ClusterConfig.from_yaml_file(str(path))
    assert config.distributed_type == "FSDP" and config.fsdp_config["fsdp_version"] == 2
    fsdp = yaml.safe_load(path.read_text())["fsdp_config"]
    names = fsdp["fsdp_transformer_layer_cls_to_wrap"].split(",")
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy=fsdp["fsdp_auto_wrap_policy"].lower(),
        transformer_cls_names_to_wrap=names,
        reshard_after_forward=fsdp["fsdp_reshard_after_forward"],
        state_dict_type=fsdp["fsdp_state_dict_type"],
    )
    assert plugin.fsdp_version == 2
    network = registry.backbones.create("mmdit", {"size": "tiny"}).build(BackboneSpec(4, 8, 32))
    classes = {type(m).__name__ for m in network.modules()}
    assert set(names) <= classes, f"{names} not among the mmdit network's modules"
