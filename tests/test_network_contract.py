"""Network plugins (backbone, text encoder, autoencoder, sampler) are checked at the engine's boundary: a broken
one stops the command with a message naming it and its distribution, instead of a deep traceback or garbage."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from miro_core.autoencoder import Autoencoder
from miro_core.backbone import Backbone
from miro_core.conditioning import Conditioning
from miro_core.conformance import check_backbone
from miro_core.errors import ConfigError, DataError, PluginError
from miro_core.hookspecs import hookimpl
from miro_core.network_contract import checked_decoded, checked_text_encoding
from miro_core.plugins import build_registry
from miro_core.sampler import Sampler
from miro_core.sampling import Branch, guided_sample
from miro_core.text_encoder import TextEncoder
from tests.conftest import tiny_train_config

DIST = "miro-throwaway-networks"


def registry_with(hook: str, *classes: type, **more_hooks: tuple[type, ...]) -> object:
    """A registry with the built-ins and one throwaway plugin module of distribution DIST."""
    module = types.ModuleType(f"throwaway_{hook}")
    module.MIRO_API = ">=1,<2"
    module.__distribution__ = DIST

    def hook_of(registered: tuple[type, ...]):
        def register_all(register):
            for cls in registered:
                register(cls)

        return hookimpl(register_all)

    for name, registered in {hook: classes, **more_hooks}.items():
        setattr(module, name, hook_of(registered))
    return build_registry(load_entry_points=False, extra_plugins=[(module.__name__, module)])


# -- samplers ----------------------------------------------------------------------------------------------------
def midpoint(update):
    class Broken(Sampler):
        name = "broken-midpoint"

        def integrate(self, velocity, noise, num_steps):
            x, state = noise, None
            for step in range(num_steps):
                t, dt = 1.0 - step / num_steps, -1.0 / num_steps
                v, state = velocity(x, t, step, state)
                x = update(x, dt, v, step, t, velocity, state)
            return x

    return Broken


class Decay(nn.Module):
    def forward(self, x, t, tokens, mask, levels):
        return x * 0.5


class NaNVelocity(nn.Module):
    backbone_label = "backbone 'nan-net' (somewhere 1.0)"

    def forward(self, x, t, tokens, mask, levels):
        return x * float("nan")


def run_sampler(sampler_cls, model=None, steps=3):
    registry = registry_with("register_samplers", sampler_cls)
    branch = Branch(torch.zeros(2, 3, 8), torch.ones(2, 3, dtype=torch.bool), None)
    strategy = registry.guidance.create("cfg", {"scale": 0.0})
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    sampler = registry.samplers.create(sampler_cls.name)
    return guided_sample(model or Decay(), noise, branch, branch, strategy, sampler, steps, registry)


@pytest.mark.parametrize(
    ("update", "message"),
    [
        (lambda x, dt, v, step, t, velocity, state: (x + dt * v)[:, :, :-1], "shaped like the noise"),
        (lambda x, dt, v, step, t, velocity, state: x + dt * v * float("nan"), "NaN or infinite values from finite"),
        (lambda x, dt, v, step, t, velocity, state: x + dt * velocity(x, step, t, state)[0], "step=1.0"),
        (lambda x, dt, v, step, t, velocity, state: x + dt * velocity(x, 2.0, step, state)[0], "t=2.0"),
    ],
    ids=["wrong-shape", "nan", "swapped-arguments", "time-out-of-range"],
)
def test_a_broken_sampler_is_named_with_its_distribution(update, message):
    with pytest.raises(PluginError, match="sampler 'broken-midpoint'") as err:
        run_sampler(midpoint(update))
    assert message in str(err.value) and DIST in str(err.value) and "check_sampler" in str(err.value)


def test_a_backbone_making_nan_is_blamed_not_the_sampler():
    good = midpoint(lambda x, dt, v, step, t, velocity, state: x + dt * v)
    assert torch.isfinite(run_sampler(good)).all()
    with pytest.raises(PluginError, match="backbone 'nan-net' .* NaN or infinite velocities"):
        run_sampler(good, NaNVelocity())


# -- backbones ---------------------------------------------------------------------------------------------------
def backbone(forward, params: bool = True, name: str = "broken-net"):
    class Net(nn.Module):
        def __init__(self, spec):
            super().__init__()
            self.proj = nn.Conv2d(spec.in_channels, spec.in_channels, 1) if params else None
            self.cond = nn.Linear(spec.cond_dim, spec.in_channels) if params else None

        def forward(self, x, t, cond):
            return forward(self, x, t, cond)

    class Broken(Backbone):
        sizes = {"tiny": {}}
        reward_conditioning = frozenset({"tokens", "pooled"})

        def build(self, spec):
            return Net(spec)

    Broken.name = name
    return Broken


def good_forward(net, x, t, cond):
    mask = cond.mask[:, :, None].to(cond.tokens.dtype)
    text = (cond.tokens * mask).sum(1) / mask.sum(1).clamp(min=1)
    return net.proj(x) + net.cond(cond.pooled + text)[:, :, None, None] * t[:, None, None, None]


def model_of(backbone_cls):
    from miro_core.model import ModelSpec, build_model

    registry = registry_with("register_backbones", backbone_cls)
    spec = ModelSpec(backbone=backbone_cls.name, backbone_options={}, in_channels=3, image_size=8, text_dim=16,
                     cond_dim=16, cond_heads=2, mixer_layers=1, registers=2, fourier_channels=8, reward_keys=["a"])
    return build_model(spec, registry)


def call(model):
    x = torch.randn(2, 3, 8, 8)
    return model(x, torch.rand(2), torch.randn(2, 4, 16), torch.ones(2, 4, dtype=torch.bool), torch.rand(2, 1))


@pytest.mark.parametrize(
    ("forward", "message"),
    [
        (lambda net, x, t, cond: good_forward(net, x, t, cond)[:, :, :-1], r"shape \(2, 3, 7, 8\) for x of shape"),
        (lambda net, x, t, cond: (good_forward(net, x, t, cond), None), "returned tuple, not a tensor"),
    ],
    ids=["wrong-shape", "tuple"],
)
def test_a_backbone_breaking_its_output_contract_is_named(forward, message):
    assert call(model_of(backbone(good_forward))).shape == (2, 3, 8, 8)
    with pytest.raises(PluginError, match=message) as err:
        call(model_of(backbone(forward)))
    assert f"backbone 'broken-net' ({DIST}" in str(err.value)


def test_a_backbone_without_parameters_or_with_another_forward_is_refused_at_build():
    with pytest.raises(PluginError, match="without trainable parameters"):
        model_of(backbone(lambda net, x, t, cond: -x, params=False))

    class OneArgument(Backbone):
        name = "one-argument"
        sizes = {"tiny": {}}

        def build(self, spec):
            return nn.Conv2d(spec.in_channels, spec.in_channels, 1)

    with pytest.raises(PluginError, match=r"forward does not accept \(x, t, cond\)"):
        model_of(OneArgument)


def test_nan_from_the_first_step_names_the_backbone(tiny_annotations, tiny_bins, tmp_path):
    from miro_core.train import Trainer

    nan = backbone(lambda net, x, t, cond: good_forward(net, x, t, cond) * float("nan"), name="nan-net")
    registry = registry_with("register_backbones", nan, register_text_encoders=(Words,))
    cfg = tiny_train_config(tiny_annotations, tiny_bins, tmp_path / "run", backbone="nan-net", steps=2,
                            text_encoder="words", text_encoder_options={})
    with pytest.raises(DataError, match=f"before any update: backbone 'nan-net' \\({DIST}"):
        Trainer(cfg, registry, progress=False).run()


def test_the_kit_fails_a_backbone_that_ignores_its_conditioning():
    from miro_core.conformance import ConformanceError

    ignoring = backbone(lambda net, x, t, cond: net.proj(x), name="ignoring")
    report = check_backbone(ignoring, raise_on_failure=False, light_import=False, in_channels=3, cond_dim=16)
    assert "the output depends on the conditioning" in report.failed
    assert "text and reward tokens" in report.failed["the output depends on the conditioning"]
    with pytest.raises(ConformanceError):
        report.raise_for_failures()
    report = check_backbone(backbone(good_forward, name="uses-cond"), raise_on_failure=False, light_import=False,
                            in_channels=3, cond_dim=16)
    assert "the output depends on the conditioning" in report.passed, str(report)
    report = check_backbone(backbone(lambda net, x, t, cond: -x, params=False, name="empty"),
                            raise_on_failure=False, light_import=False, in_channels=3, cond_dim=16)
    assert report.failed["gradients reach the parameters"] == "the network has no trainable parameters"


def test_options_of_a_plain_pydantic_model_still_reject_unknown_keys():
    import pydantic

    class LooseOptions(pydantic.BaseModel):
        size: str = "tiny"
        width: int = 8

    class Loose(Backbone):
        name = "loose"
        sizes = {"tiny": {}}
        Options = LooseOptions

        def build(self, spec):
            return nn.Conv2d(spec.in_channels, spec.in_channels, 1)

    with pytest.raises(ConfigError, match="invalid options for backbone 'loose': widht"):
        Loose({"widht": 3})
    assert Loose({"width": 3}).options.width == 3
    with pytest.raises(PluginError, match="must extend miro_core.backbone.BackboneOptions"):
        Loose({}).size_config()


def test_the_backbone_boundary_accepts_a_stateful_network():
    class Stateful(nn.Module):
        stateful = True

        def __init__(self):
            super().__init__()
            self.proj = nn.Conv2d(3, 3, 1)

        def forward(self, x, t, cond, state):
            return self.proj(x), x

    from miro_core.model import MiroModel, ModelSpec

    spec = ModelSpec(backbone="s", backbone_options={}, in_channels=3, image_size=8, text_dim=16, cond_dim=16,
                     cond_heads=2, mixer_layers=1, registers=2, fourier_channels=8, precondition=False)
    model = MiroModel(spec, Stateful())
    cond = Conditioning(torch.randn(2, 4, 16), torch.ones(2, 4, dtype=torch.bool), torch.randn(2, 16))
    x = torch.randn(2, 3, 8, 8)
    v, state = model.velocity(x, torch.rand(2), cond, None)
    assert v.shape == x.shape and torch.equal(state, x)
    model.network.forward = lambda x, t, cond, state: x  # noqa: ARG005 - not (velocity, state)
    with pytest.raises(PluginError, match="not \\(velocity, state\\)"):
        model.velocity(x, torch.rand(2), cond, None)


# -- text encoders -----------------------------------------------------------------------------------------------
class Words(TextEncoder):
    name = "words"
    broken = ""

    def load(self, device="cpu", dtype="float32"):
        pass

    @property
    def dim(self):
        return 8 + (self.broken == "dim")

    def encode(self, captions):
        length = self.options.max_length
        tokens = torch.ones(len(captions), length, 8)
        mask = torch.zeros(len(captions), length, dtype=torch.bool)
        mask[:, 0] = True
        if self.broken == "nan":
            tokens[0, 0] = float("nan")
        if self.broken == "mask-shape":
            mask = mask[:, :-1]
        if self.broken == "mask-dtype":
            mask = mask.float()
        if self.broken == "no-token":
            mask[:] = False
        if self.broken == "one-tensor":
            return tokens
        return tokens, mask


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("dim", r"expected \(2, L, 9\)"),
        ("nan", "NaN or infinite"),
        ("mask-shape", r"torch.bool \(2, 31\); expected torch.bool \(2, 32\)"),
        ("mask-dtype", "the mask is torch.float32"),
        ("no-token", "no real token"),
        ("one-tensor", "returned Tensor, not \\(tokens, mask\\)"),
    ],
)
def test_a_broken_text_encoder_is_named(broken, message):
    cls = type("Words", (Words,), {"broken": broken})
    registry = registry_with("register_text_encoders", cls)
    encoder = registry.text_encoders.create("words")
    tokens, mask = checked_text_encoding(Words(), 2, Words().encode(["a", "b"]), registry)
    assert tokens.shape == (2, 32, 8)
    with pytest.raises(PluginError, match=message) as err:
        checked_text_encoding(encoder, 2, encoder.encode(["a", "b"]), registry)
    assert f"text encoder 'words' ({DIST}" in str(err.value) and "check_text_encoder" in str(err.value)


def test_miro_encode_stops_on_a_broken_text_encoder(tiny_annotations, tmp_path):
    from miro_core.encode import EncodeConfig, RecordEncoder

    registry = registry_with("register_text_encoders", type("Words", (Words,), {"broken": "nan"}))
    cfg = EncodeConfig(data=str(tiny_annotations), out=str(tmp_path / "records"), autoencoder="pixels",
                       text_encoder="words", image_size=16, workers=0)
    with pytest.raises(PluginError, match=f"text encoder 'words' \\({DIST}.*NaN"):
        RecordEncoder(cfg, registry, progress=False).run()


# -- autoencoders ------------------------------------------------------------------------------------------------
class Half(Autoencoder):
    name = "half"
    broken = ""

    def latent_shape(self, image_size, channels=3):
        return channels, image_size // 2 + (self.broken == "latents")

    def encode(self, images):
        return torch.nn.functional.avg_pool2d(images, 2)

    def decode(self, latents):
        images = torch.nn.functional.interpolate(latents, scale_factor=2)
        if self.broken == "range":
            return images * 3
        if self.broken == "shape":
            return latents
        if self.broken == "nan":
            return images * float("nan")
        return images.clamp(-1, 1)


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("range", r"values up to .* must lie in \[-1, 1\]"),
        ("shape", r"returned \(2, 3, 4, 4\); expected \(2, 3, 8, 8\)"),
        ("nan", "NaN or infinite pixels"),
    ],
)
def test_a_broken_decoder_is_named(broken, message):
    registry = registry_with("register_autoencoders", type("Half", (Half,), {"broken": broken}))
    codec = registry.autoencoders.create("half")
    latents = torch.rand(2, 3, 4, 4) * 2 - 1
    assert checked_decoded(Half(), Half().decode(latents), latents, 8).shape == (2, 3, 8, 8)
    with pytest.raises(PluginError, match=message) as err:
        checked_decoded(codec, codec.decode(latents), latents, 8, registry)
    assert f"autoencoder 'half' ({DIST}" in str(err.value) and "check_autoencoder" in str(err.value)


def test_miro_encode_names_an_autoencoder_whose_latents_break_latent_shape(tiny_annotations, tmp_path):
    from miro_core.encode import EncodeConfig, RecordEncoder

    registry = registry_with("register_autoencoders", type("Half", (Half,), {"broken": "latents"}),
                             register_text_encoders=(Words,))
    cfg = EncodeConfig(data=str(tiny_annotations), out=str(tmp_path / "records"), autoencoder="half",
                       text_encoder="words", image_size=16, workers=0)
    with pytest.raises(PluginError, match=f"autoencoder 'half' \\({DIST}.*latent_shape"):
        RecordEncoder(cfg, registry, progress=False).run()

