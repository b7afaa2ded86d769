"""The ``mmdit`` backbone plugin: SD3 sizes, masked joint attention, forward contract, training, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from miro_core.backbone import BackboneSpec, parse_backbone_name
from miro_core.conditioning import Conditioning
from miro_core.errors import ConfigError
from miro_core.model_stats import build_network, count_parameters

plugin = pytest.importorskip("miro_backbone_mmdit.plugin")
from miro_backbone_mmdit.backbone import MMDiTBackbone  # noqa: E402
from miro_backbone_mmdit.network import MaskedJointAttnProcessor  # noqa: E402

#: Published transformer sizes with SD3's inputs (16 latent channels, 4096-d context, 2048-d pooled):
#: SD3-medium 2,028,328,000 (diffusers config of stabilityai/stable-diffusion-3-medium), SD3.5-large "8.1B".
#: Here the pooled vector is cond_dim wide (4096), which adds 2048 x width to the pooled projection.
PUBLISHED = {"medium": (2_028_328_000, 0.005), "large": (8.1e9, 0.01)}


def _spec() -> BackboneSpec:
    return BackboneSpec(in_channels=4, image_size=8, cond_dim=32)


def test_registered_and_name_parsing(checks):
    reg = checks.registry_with("mmdit", plugin)
    assert reg.backbones.get("mmdit") is MMDiTBackbone
    assert parse_backbone_name("mmdit-medium", reg.backbones.as_dict()) == ("mmdit", {"size": "medium"})


@pytest.mark.parametrize("size", sorted(PUBLISHED))
def test_sizes_match_published_sd3_transformers(size):
    spec = BackboneSpec(in_channels=16, image_size=128, cond_dim=4096)
    network = build_network(MMDiTBackbone({"size": size}), spec, "meta")
    expected, tolerance = PUBLISHED[size]
    assert count_parameters(network) == pytest.approx(expected, rel=tolerance)


@pytest.mark.parametrize("size", sorted(MMDiTBackbone.sizes))
def test_every_size_builds_and_follows_the_width_rule(size):
    config = MMDiTBackbone.sizes[size]
    network = build_network(MMDiTBackbone({"size": size}), BackboneSpec(4, 32, 1024), "meta")
    inner = network.transformer.inner_dim
    assert inner == config["num_heads"] * config["head_dim"]
    assert len(network.transformer.transformer_blocks) == config["num_layers"]
    assert network.transformer.context_embedder.in_features == 1024
    processors = set(map(type, network.transformer.attn_processors.values()))
    assert processors == {MaskedJointAttnProcessor}


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="multiple of patch size"):
        MMDiTBackbone({"size": "tiny"}).build(BackboneSpec(4, 9, 32))
    with pytest.raises(ConfigError, match="qk_norm"):
        MMDiTBackbone({"size": "tiny", "overrides": {"qk_norm": "weird"}}).build(_spec())
    with pytest.raises(ConfigError, match="unknown override"):
        MMDiTBackbone({"size": "tiny", "overrides": {"depth": 3}}).build(_spec())


def test_forward_contract(checks):
    checks.check_forward_contract(MMDiTBackbone({"size": "tiny"}))


@pytest.mark.parametrize("overrides", [{"qk_norm": "rms_norm"}, {"dual_attention_layers": [0]}])
def test_masking_holds_with_sd35_options(checks, overrides):
    """SD3.5 adds q/k RMS norms and an image-only second attention; padding must stay invisible."""
    checks.check_forward_contract(MMDiTBackbone({"size": "tiny", "overrides": overrides}))


def test_masked_processor_matches_stock_sd3_attention_without_padding(checks):
    """With every token real, the masked processor computes exactly what diffusers' own processor does."""
    from diffusers.models.attention_processor import JointAttnProcessor2_0

    torch.manual_seed(0)
    model = checks.perturb(MMDiTBackbone({"size": "tiny"}).build(_spec())).eval()
    x, t = checks.inputs(_spec())
    cond = checks.conditioning(x.shape[0], masked=0)
    with torch.no_grad():
        ours = model(x, t, cond)
        model.transformer.set_attn_processor(JointAttnProcessor2_0())
        stock = model.transformer(
            hidden_states=x,
            encoder_hidden_states=cond.tokens,
            pooled_projections=cond.pooled,
            timestep=t * 1000,
            return_dict=False,
        )[0]
    torch.testing.assert_close(ours, stock, atol=1e-5, rtol=1e-5)


def test_padding_equals_dropping_the_padded_tokens(checks):
    """Masked tokens behave as if they were not in the sequence at all."""
    torch.manual_seed(0)
    model = checks.perturb(MMDiTBackbone({"size": "tiny"}).build(_spec())).eval()
    x, t = checks.inputs(_spec(), batch=1)
    cond = checks.conditioning(1, masked=2)
    kept = cond.mask[0]
    short = Conditioning(cond.tokens[:, kept], cond.mask[:, kept], cond.pooled)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, cond), model(x, t, short), atol=1e-5, rtol=1e-5)


def test_flow_matching_loss_goes_down(checks):
    losses = checks.flow_matching_losses(MMDiTBackbone({"size": "tiny"}))
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3


def test_state_dict_round_trip_through_safetensors(checks):
    checks.check_safetensors_round_trip(MMDiTBackbone({"size": "tiny"}))
