"""The ``unet`` backbone plugin: SD2 parameter count, layout, forward contract, masking, training, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from miro_core.backbone import BackboneSpec, parse_backbone_name
from miro_core.conditioning import Conditioning
from miro_core.errors import ConfigError
from miro_core.model_stats import build_network, count_parameters

plugin = pytest.importorskip("miro_backbone_unet.plugin")
from miro_backbone_unet.backbone import UNetBackbone  # noqa: E402

#: Stable Diffusion 2's UNet (865,910,724 parameters, 1024-d OpenCLIP tokens); ``sd`` adds the class embedding.
SD2_UNET_PARAMS = 865_910_724

#: ``miro backbones unet --image-size 32 --channels 4 --cond-dim 1024`` (README and docs/backbones.md).
DOCUMENTED_PARAMS = {"tiny": 1_641_060, "small": 28_477_060, "base": 164_925_956, "sd": 868_862_404}


def _spec() -> BackboneSpec:
    return BackboneSpec(in_channels=4, image_size=8, cond_dim=32)


def test_registered_and_name_parsing(checks):
    reg = checks.registry_with("unet", plugin)
    assert reg.backbones.get("unet") is UNetBackbone
    assert parse_backbone_name("unet-sd", reg.backbones.as_dict()) == ("unet", {"size": "sd"})
    with pytest.raises(ConfigError, match="no size 'xl'"):
        parse_backbone_name("unet-xl", reg.backbones.as_dict())


def test_plugin_import_is_light():
    import subprocess
    import sys

    code = "import sys, miro_backbone_unet.plugin; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("size", sorted(DOCUMENTED_PARAMS))
def test_parameter_counts_on_meta(size):
    spec = BackboneSpec(in_channels=4, image_size=32, cond_dim=1024)
    network = build_network(UNetBackbone({"size": size}), spec, "meta")
    assert count_parameters(network) == DOCUMENTED_PARAMS[size]


def test_sd_size_is_stable_diffusion_2_plus_the_class_embedding():
    spec = BackboneSpec(in_channels=4, image_size=32, cond_dim=1024)
    network = build_network(UNetBackbone({"size": "sd"}), spec, "meta")
    class_embedding = count_parameters(network.unet.class_embedding)
    # Linear(cond_dim, 4*320) + Linear(4*320, 4*320), each with bias.
    assert class_embedding == 1024 * 1280 + 1280 + 1280 * 1280 + 1280
    assert count_parameters(network) - class_embedding == SD2_UNET_PARAMS


def test_attention_only_at_the_lower_levels_by_default():
    model = build_network(UNetBackbone({"size": "base"}), BackboneSpec(4, 32, 64), "meta")
    down = [type(b).__name__ for b in model.unet.down_blocks]
    up = [type(b).__name__ for b in model.unet.up_blocks]
    assert down == ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
    assert up == ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"]
    assert type(model.unet.mid_block).__name__ == "UNetMidBlock2DCrossAttn"
    sd = build_network(UNetBackbone({"size": "sd"}), BackboneSpec(4, 32, 64), "meta")
    assert [type(b).__name__ for b in sd.unet.down_blocks][-1] == "DownBlock2D"
    assert sd.unet.config.class_embed_type == "projection"


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="multiple of 2"):
        UNetBackbone({"size": "tiny"}).build(BackboneSpec(4, 9, 32))
    with pytest.raises(ConfigError, match="unknown override"):
        UNetBackbone({"size": "tiny", "overrides": {"widht": 3}}).build(_spec())
    with pytest.raises(ConfigError, match="attention_levels"):
        UNetBackbone({"size": "tiny", "overrides": {"attention_levels": [2]}}).build(_spec())
    with pytest.raises(ConfigError, match="multiple of 8"):
        UNetBackbone({"size": "tiny", "overrides": {"block_out_channels": [32, 60]}}).build(_spec())
    with pytest.raises(ConfigError, match="head_dim"):
        UNetBackbone({"size": "tiny", "overrides": {"head_dim": 48}}).build(_spec())


def test_forward_contract(checks):
    checks.check_forward_contract(UNetBackbone({"size": "tiny"}))


def test_diffusers_mask_alone_hides_padded_tokens(checks):
    """diffusers' encoder_attention_mask (-10000 bias) hides padded keys even without the plugin's zeroing."""
    torch.manual_seed(0)
    model = checks.perturb(UNetBackbone({"size": "tiny"}).build(_spec())).eval()
    x, t = checks.inputs(_spec())
    cond = checks.conditioning(x.shape[0])
    noisy = cond.tokens.clone()
    noisy[~cond.mask] = 50.0 * torch.randn(int((~cond.mask).sum()), 32)

    def raw(tokens: torch.Tensor) -> torch.Tensor:
        return model.unet(
            x,
            t * 1000,
            encoder_hidden_states=tokens,
            class_labels=cond.pooled,
            encoder_attention_mask=cond.mask,
            return_dict=False,
        )[0]

    with torch.no_grad():
        torch.testing.assert_close(raw(noisy), raw(cond.tokens), atol=1e-5, rtol=1e-5)
        unmasked = model.unet(x, t * 1000, encoder_hidden_states=noisy, class_labels=cond.pooled, return_dict=False)[0]
        assert (unmasked - raw(cond.tokens)).abs().max() > 1e-4


def test_no_real_token_is_finite_and_independent_of_the_padding(checks):
    torch.manual_seed(0)
    model = checks.perturb(UNetBackbone({"size": "tiny"}).build(_spec())).eval()
    x, t = checks.inputs(_spec())
    cond = checks.conditioning(x.shape[0], masked=0)
    empty = torch.zeros_like(cond.mask)
    with torch.no_grad():
        a = model(x, t, Conditioning(cond.tokens, empty, cond.pooled))
        b = model(x, t, Conditioning(torch.randn_like(cond.tokens), empty, cond.pooled))
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b)


def test_flow_matching_loss_goes_down(checks):
    losses = checks.flow_matching_losses(UNetBackbone({"size": "tiny"}))
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3


def test_state_dict_round_trip_through_safetensors(checks):
    checks.check_safetensors_round_trip(UNetBackbone({"size": "tiny"}))
