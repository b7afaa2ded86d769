"""The ``dit`` backbone plugin: sizes against the DiT paper, forward contract, training, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from miro_core.backbone import BackboneSpec, parse_backbone_name
from miro_core.errors import ConfigError
from miro_core.model_stats import build_network, count_forward_flops, count_parameters

plugin = pytest.importorskip("miro_backbone_dit.plugin")
from miro_backbone_dit.backbone import DiTBackbone  # noqa: E402

#: DiT paper (Peebles & Xie 2023), Tables 1 and 4: parameters and Gflops (fvcore: 1 per multiply-add) at
#: 256x256 (32x32x4 latents), patch 2.
DIT_PAPER = {"s": (33.0e6, 6.06), "b": (130.5e6, 23.01), "l": (458.0e6, 80.71), "xl": (675.0e6, 118.64)}


def test_registered_and_name_parsing(checks):
    reg = checks.registry_with("dit", plugin)
    assert reg.backbones.get("dit") is DiTBackbone
    assert parse_backbone_name("dit-xl/2", reg.backbones.as_dict()) == ("dit", {"size": "xl", "patch_size": 2})
    with pytest.raises(ConfigError, match="no size 'xxl'"):
        parse_backbone_name("dit-xxl/2", reg.backbones.as_dict())


@pytest.mark.parametrize("size", ["s", "b", "l", "xl"])
def test_sizes_match_the_dit_paper_without_cross_attention(size):
    """With cross-attention off, parameters within 1% and GFLOPs within 1% of the paper."""
    hidden = DiTBackbone.sizes[size]["hidden_size"]
    spec = BackboneSpec(in_channels=4, image_size=32, cond_dim=hidden)
    backbone = DiTBackbone({"size": size, "overrides": {"cross_attention": False}})
    network = build_network(backbone, spec, "meta")
    params, gflops = DIT_PAPER[size]
    assert count_parameters(network) == pytest.approx(params, rel=0.01)
    macs = count_forward_flops(network, spec, cond_len=16) / 2e9
    assert macs == pytest.approx(gflops, rel=0.01)


@pytest.mark.parametrize("size", ["tiny", "s", "b", "l", "xl"])
def test_cross_attention_adds_exactly_one_attention_layer_per_block(size):
    config = DiTBackbone.sizes[size]
    d, depth, cond_dim = config["hidden_size"], config["depth"], 1024
    spec = BackboneSpec(in_channels=4, image_size=32, cond_dim=cond_dim)
    with_ca = count_parameters(build_network(DiTBackbone({"size": size}), spec))
    without = count_parameters(
        build_network(DiTBackbone({"size": size, "overrides": {"cross_attention": False}}), spec)
    )
    # LayerNorm (2d) + q (d*d + d) + k, v (cond_dim*d + d each) + out (d*d + d), per block.
    per_block = 2 * d + (d * d + d) + 2 * (cond_dim * d + d) + (d * d + d)
    assert with_ca - without == depth * per_block


def test_patch_size_from_name_changes_token_count():
    spec = BackboneSpec(in_channels=4, image_size=32, cond_dim=64)
    flops2 = count_forward_flops(build_network(DiTBackbone({"size": "tiny", "patch_size": 2}), spec), spec, 8)
    flops4 = count_forward_flops(build_network(DiTBackbone({"size": "tiny", "patch_size": 4}), spec), spec, 8)
    assert flops4 < flops2 / 3


def test_bad_options_are_config_errors():
    spec = BackboneSpec(in_channels=4, image_size=9, cond_dim=32)
    with pytest.raises(ConfigError, match="multiple of patch size"):
        DiTBackbone({"size": "tiny"}).build(spec)
    with pytest.raises(ConfigError, match="unknown override"):
        DiTBackbone({"size": "tiny", "overrides": {"widht": 3}}).build(BackboneSpec(4, 8, 32))
    with pytest.raises(ConfigError, match="no size"):
        DiTBackbone({"size": "huge"}).size_config()


def test_zero_initialised_output_like_dit():
    spec = BackboneSpec(in_channels=4, image_size=8, cond_dim=32)
    model = DiTBackbone({"size": "tiny"}).build(spec)
    assert torch.count_nonzero(model.final_layer.linear.weight) == 0
    assert all(torch.count_nonzero(b.ada_ln[-1].weight) == 0 for b in model.blocks)


def test_forward_contract(checks):
    checks.check_forward_contract(DiTBackbone({"size": "tiny"}))


def test_all_tokens_masked_means_no_cross_attention(checks):
    torch.manual_seed(0)
    model = checks.perturb(DiTBackbone({"size": "tiny"}).build(_spec())).eval()
    x, t = checks.inputs(_spec())
    cond = checks.conditioning(x.shape[0], masked=0)
    cond.mask[:] = False
    reference = DiTBackbone({"size": "tiny", "overrides": {"cross_attention": False}}).build(_spec()).eval()
    reference.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, cond), reference(x, t, cond))


def _spec() -> BackboneSpec:
    return BackboneSpec(in_channels=4, image_size=8, cond_dim=32)


def test_flow_matching_loss_goes_down(checks):
    losses = checks.flow_matching_losses(DiTBackbone({"size": "tiny"}))
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3


def test_state_dict_round_trip_through_safetensors(checks):
    checks.check_safetensors_round_trip(DiTBackbone({"size": "tiny"}))
