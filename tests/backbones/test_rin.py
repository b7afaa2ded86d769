"""The ``rin`` backbone plugin: architecture count, forward contract, self-conditioning, training, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from miro_core.backbone import BackboneSpec, parse_backbone_name
from miro_core.errors import ConfigError
from miro_core.model_stats import build_network, count_forward_flops, count_parameters

plugin = pytest.importorskip("miro_backbone_rin.plugin")
from miro_backbone_rin.backbone import RINBackbone  # noqa: E402

#: MIRO's reported size (backbone + conditioning stack); our count is the backbone alone (see README).
MIRO_PARAMS = 360e6


def _spec() -> BackboneSpec:
    return BackboneSpec(in_channels=4, image_size=8, cond_dim=32)


def _expected_parameters(cfg: dict, in_channels: int, image_size: int, cond_dim: int, self_condition: bool) -> int:
    """The architecture of the README, counted by hand (linear: in*out + out; LayerNorm: 2*dim)."""

    def linear(i: int, o: int) -> int:
        return i * o + o

    def mlp(d: int, ratio: float = 4.0) -> int:
        return linear(d, int(d * ratio)) + linear(int(d * ratio), d)

    def cross_block(q: int, kv: int) -> int:  # norms of q, kv and MLP input; q/k/v/out projections; MLP
        return 2 * q + 2 * kv + 2 * q + linear(q, q) + 2 * linear(kv, q) + linear(q, q) + mlp(q)

    def self_block(d: int) -> int:
        return 2 * d + 2 * d + 4 * linear(d, d) + mlp(d)

    p, di, dl = cfg["patch_size"], cfg["interface_dim"], cfg["latent_dim"]
    block = cross_block(dl, dl) + cross_block(dl, di) + cfg["num_layers"] * self_block(dl) + cross_block(di, dl)
    total = cfg["num_blocks"] * block
    total += in_channels * p * p * di + di + 2 * di + (image_size // p) ** 2 * di  # patch conv, norm, positions
    total += cfg["num_latents"] * dl  # learned latents
    total += linear(256, dl) + linear(dl, dl)  # timestep MLP
    total += linear(cond_dim, dl) + linear(dl, dl)  # pooled MLP
    total += 0 if cond_dim == dl else linear(cond_dim, dl)  # token projection
    total += 2 * di + linear(di, p * p * in_channels)  # output norm and head
    if self_condition:
        total += 2 * dl + mlp(dl) + 2 * dl
    return total


def test_registered_and_name_parsing(checks):
    reg = checks.registry_with("rin", plugin)
    assert reg.backbones.get("rin") is RINBackbone
    assert parse_backbone_name("rin-miro/2", reg.backbones.as_dict()) == ("rin", {"size": "miro", "patch_size": 2})


@pytest.mark.parametrize("self_condition", [False, True])
@pytest.mark.parametrize("size", sorted(RINBackbone.sizes))
def test_parameter_count_is_the_documented_architecture(size, self_condition):
    spec = BackboneSpec(in_channels=4, image_size=32, cond_dim=1024)
    network = build_network(RINBackbone({"size": size, "self_condition": self_condition}), spec, "meta")
    cfg = RINBackbone.sizes[size]
    assert count_parameters(network) == _expected_parameters(cfg, 4, 32, 1024, self_condition)


def test_miro_size_is_near_the_reported_360m():
    """MIRO's 360M include its conditioning stack; the backbone alone is within 20% of it (README)."""
    spec = BackboneSpec(in_channels=4, image_size=32, cond_dim=1024)
    params = count_parameters(build_network(RINBackbone({"size": "miro"}), spec, "meta"))
    assert 0.8 * MIRO_PARAMS < params < MIRO_PARAMS


def test_self_conditioning_doubles_eval_flops_unless_disabled():
    spec = BackboneSpec(in_channels=4, image_size=16, cond_dim=64)
    plain = count_forward_flops(build_network(RINBackbone({"size": "tiny"}), spec), spec, 8)
    two_pass = count_forward_flops(build_network(RINBackbone({"size": "tiny", "self_condition": True}), spec), spec, 8)
    no_warm = RINBackbone({"size": "tiny", "self_condition": True, "self_condition_eval": "none"})
    one_pass = count_forward_flops(build_network(no_warm, spec), spec, 8)
    assert two_pass > 1.9 * plain
    assert plain <= one_pass < 1.2 * plain


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="multiple of patch size"):
        RINBackbone({"size": "tiny"}).build(BackboneSpec(4, 9, 32))
    with pytest.raises(ConfigError, match="read_write_heads"):
        RINBackbone({"size": "tiny", "overrides": {"interface_dim": 30}}).build(_spec())
    with pytest.raises(ConfigError, match="self_condition_prob"):
        RINBackbone({"size": "tiny", "self_condition_prob": 1.5})
    with pytest.raises(ConfigError, match="unknown override"):
        RINBackbone({"size": "tiny", "overrides": {"self_condition": True}}).build(_spec())


def test_forward_contract(checks):
    checks.check_forward_contract(RINBackbone({"size": "tiny"}))


def test_forward_contract_with_self_conditioning(checks):
    checks.check_forward_contract(RINBackbone({"size": "tiny", "self_condition": True}))


def test_self_conditioning_passes_and_gradients(checks, monkeypatch):
    torch.manual_seed(0)
    model = checks.perturb(
        RINBackbone({"size": "tiny", "self_condition": True, "self_condition_prob": 1.0}).build(_spec())
    )
    x, t = checks.inputs(_spec())
    cond = checks.conditioning(x.shape[0])
    calls: list[tuple[bool, bool]] = []
    original = model.run

    def spy(x, t, cond, previous):
        calls.append((previous is not None, torch.is_grad_enabled()))
        return original(x, t, cond, previous)

    monkeypatch.setattr(model, "run", spy)
    model.train()
    out = model(x, t, cond)
    # First pass without gradient and without previous latents, second with both.
    assert calls == [(False, False), (True, True)]
    out.square().mean().backward()
    assert model.previous_out.weight.grad is not None and model.previous_out.weight.grad.abs().sum() > 0

    calls.clear()
    model.self_condition_prob = 0.0
    model(x, t, cond)
    assert calls == [(False, True)]

    calls.clear()
    model.eval()
    with torch.no_grad():
        model(x, t, cond)
    assert [warm for warm, _ in calls] == [False, True]


def test_warm_start_changes_the_output(checks):
    torch.manual_seed(0)
    model = checks.perturb(RINBackbone({"size": "tiny", "self_condition": True}).build(_spec())).eval()
    x, t = checks.inputs(_spec())
    cond = checks.conditioning(x.shape[0])
    with torch.no_grad():
        two_pass = model(x, t, cond)
        model.self_condition_eval = "none"
        cold = model(x, t, cond)
    assert (two_pass - cold).abs().max() > 1e-4


@pytest.mark.parametrize("self_condition", [False, True])
def test_flow_matching_loss_goes_down(checks, self_condition):
    losses = checks.flow_matching_losses(RINBackbone({"size": "tiny", "self_condition": self_condition}))
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3


def test_state_dict_round_trip_through_safetensors(checks):
    checks.check_safetensors_round_trip(RINBackbone({"size": "tiny", "self_condition": True}))
