"""The ``rin-release`` backbone plugin: registration, designs, stateful contract, masking, safetensors.

Exact agreement with the authors' network is checked in tests/test_authors_checkpoint.py.
"""

from __future__ import annotations

import pytest
import torch

from miro_core.backbone import BackboneSpec, parse_backbone_name
from miro_core.conditioning import Conditioning
from miro_core.errors import ConfigError

plugin = pytest.importorskip("miro_backbone_rin_release.plugin")
from miro_backbone_rin_release.backbone import RINReleaseBackbone  # noqa: E402

SPEC = BackboneSpec(in_channels=4, image_size=8, cond_dim=64)


def test_registered_names_and_designs(checks, registry):
    reg = checks.registry_with("rin-release", plugin)
    assert reg.backbones.get("rin-release") is RINReleaseBackbone
    known = registry.backbones.as_dict()
    assert parse_backbone_name("rin-release-miro", known) == ("rin-release", {"size": "miro"})
    assert parse_backbone_name("rin-miro", known) == ("rin", {"size": "miro"})
    assert RINReleaseBackbone.designs == frozenset({"released"})


def test_designs_are_checked_when_building(registry):
    from miro_core.model import ModelSpec, build_model

    spec = ModelSpec(
        backbone="rin-release",
        backbone_options={"size": "tiny"},
        in_channels=4,
        image_size=8,
        text_dim=16,
        reward_keys=["a"],
        cond_dim=64,
        design="framework",
    )
    with pytest.raises(ConfigError, match="design released"):
        build_model(spec, registry)
    other = ModelSpec(
        backbone="hybrid",
        backbone_options={"size": "tiny"},
        in_channels=3,
        image_size=32,
        text_dim=16,
        reward_keys=["a"],
        cond_dim=32,
        cond_heads=2,
        design="released",
    )
    with pytest.raises(ConfigError, match="design framework"):
        build_model(other, registry)


def conditioning(batch: int, dim: int = 64, seed: int = 0) -> Conditioning:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, 6, dtype=torch.bool)
    mask[:, 4:] = False
    return Conditioning(torch.randn(batch, 6, dim, generator=gen), mask, None)


def test_stateful_forward_masking_and_state(checks):
    torch.manual_seed(0)
    network = checks.perturb(RINReleaseBackbone({"size": "tiny"}).build(SPEC)).eval()
    assert network.stateful
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([0.9, 0.2])
    cond = conditioning(2)
    with torch.no_grad():
        v, state = network(x, t, cond)
        assert v.shape == x.shape and state.shape == (2, 16, 64)
        padded = Conditioning(cond.tokens.clone(), cond.mask, None)
        padded.tokens[:, 4:] = 100.0
        assert torch.allclose(network(x, t, padded)[0], v, atol=1e-5), "padded tokens must have no effect"
        with_state, _ = network(x, t, cond, torch.randn(2, 16, 64))
        assert (with_state - v).abs().max() > 1e-3, "the previous latents must change the output"
        projected = checks.perturb(RINReleaseBackbone({"size": "tiny"}).build(BackboneSpec(4, 8, 32))).eval()
        assert projected(x, t, conditioning(2, dim=32))[0].shape == x.shape


def test_safetensors_round_trip(checks, tmp_path):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    network = checks.perturb(RINReleaseBackbone({"size": "tiny"}).build(SPEC)).eval()
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(tmp_path / "w.safetensors"))
    again = RINReleaseBackbone({"size": "tiny"}).build(SPEC).eval()
    again.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    x, t, cond = torch.randn(1, 4, 8, 8), torch.tensor([0.5]), conditioning(1)
    with torch.no_grad():
        assert torch.equal(network(x, t, cond)[0], again(x, t, cond)[0])
