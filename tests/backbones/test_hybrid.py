"""The ``hybrid`` backbone plugin (the demo's default): contract, sizes, training, checkpoints."""

from __future__ import annotations

import pytest
import torch

from miro_core.backbone import BackboneSpec, parse_backbone_name
from miro_core.errors import ConfigError
from miro_core.model_stats import build_network, count_parameters

plugin = pytest.importorskip("miro_backbone_hybrid.plugin")
from miro_backbone_hybrid.backbone import HybridBackbone  # noqa: E402

SPEC = BackboneSpec(in_channels=3, image_size=16, cond_dim=32)


def test_registered_and_parsed(checks):
    reg = checks.registry_with("hybrid", plugin)
    assert reg.backbones.get("hybrid") is HybridBackbone
    assert parse_backbone_name("hybrid-small", reg.backbones.as_dict()) == ("hybrid", {"size": "small"})
    with pytest.raises(ConfigError, match="no size"):
        parse_backbone_name("hybrid-huge", reg.backbones.as_dict())


def test_forward_contract(checks):
    checks.check_forward_contract(HybridBackbone({"size": "tiny"}), SPEC)


def test_image_size_must_be_divisible_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        HybridBackbone({"size": "tiny"}).build(BackboneSpec(3, 18, 32))


def test_sizes_grow_and_overrides_apply():
    counts = [
        count_parameters(build_network(HybridBackbone({"size": s}), BackboneSpec(3, 32, 128)))
        for s in HybridBackbone.sizes
    ]
    assert counts == sorted(counts) and counts[0] < 0.5e6 < counts[1]
    wider = HybridBackbone({"size": "tiny", "overrides": {"width": 96}})
    assert count_parameters(build_network(wider, SPEC)) > count_parameters(
        build_network(HybridBackbone({"size": "tiny"}), SPEC)
    )


def test_loss_goes_down(checks):
    losses = checks.flow_matching_losses(HybridBackbone({"size": "tiny"}), SPEC, steps=30)
    assert losses[-1] < 0.6 * losses[0]


def test_channels_last_weights_round_trip(checks):
    checks.check_safetensors_round_trip(HybridBackbone({"size": "tiny"}), SPEC)
    model = HybridBackbone({"size": "tiny"}).build(SPEC)
    assert model.stem.weight.is_contiguous(memory_format=torch.channels_last)


def test_transformer_at_half_resolution(checks):
    backbone = HybridBackbone({"size": "tiny", "overrides": {"transformer_stride": 2}})
    checks.check_forward_contract(backbone, SPEC)
    assert backbone.build(SPEC).pos.shape[1] == (SPEC.image_size // 2) ** 2
    with pytest.raises(ValueError, match="transformer_stride"):
        HybridBackbone({"size": "tiny", "overrides": {"transformer_stride": 3}}).build(SPEC)
