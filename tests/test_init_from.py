"""``miro train --init-from``: released or converted weights seed a new run; a new reward gets a fresh embedder."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from miro_core.errors import ConfigError

FIXTURE = Path(__file__).parent / "fixtures" / "authors-reference"


def data_spec(source_spec, reward_keys):
    """What the trainer derives from data and config before --init-from adapts it (another architecture)."""
    return replace(
        source_spec,
        backbone="hybrid",
        backbone_options={"size": "tiny"},
        design="framework",
        cond_dim=32,
        reward_keys=reward_keys,
    )


def test_released_weights_with_a_new_reward(registry):
    from miro_core import init_from
    from miro_core.model import build_model

    source = init_from.load_init_source(str(FIXTURE))
    assert source.spec.reward_keys[0] == "clip_score" and source.latent_std is not None
    spec = init_from.adapt_spec(data_spec(source.spec, ["jina-clip", "my-reward", "hpsv2_score"]), source)
    assert spec.backbone == "rin-release" and spec.design == "released" and spec.cond_dim == 64
    torch.manual_seed(0)
    model = build_model(spec, registry)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = init_from.initialise(model, source).as_json()
    assert report["rewards_from_checkpoint"] == {"jina-clip": "clip_score", "hpsv2_score": "hpsv2_score"}
    assert report["new_rewards"] == ["my-reward"]
    assert "aesthetic_score" in report["rewards_left_out"]
    state = model.state_dict()
    released = source.state
    hpsv2 = source.spec.reward_keys.index("hpsv2_score")
    for name in (
        "network.rin_blocks.0.retrieve_cond.ca.q.weight",
        "mixer.blocks.1.sa.qkv.weight",
        "loss_weighting.proj.0.freqs",
    ):
        assert torch.equal(state[name], released[name])
    assert torch.equal(
        state["reward_encoder.embedders.0.map_time_input.weight"],
        released["reward_encoder.embedders.0.map_time_input.weight"],
    )
    assert torch.equal(
        state["reward_encoder.embedders.2.encode_time.freqs"],
        released[f"reward_encoder.embedders.{hpsv2}.encode_time.freqs"],
    )
    assert torch.equal(state["reward_encoder.position"][2], released["reward_encoder.position"][hpsv2])
    # The new reward keeps its fresh initialisation.
    assert torch.equal(
        state["reward_encoder.embedders.1.map_time_output.weight"],
        fresh["reward_encoder.embedders.1.map_time_output.weight"],
    )
    assert torch.equal(state["reward_encoder.position"][1], fresh["reward_encoder.position"][1])


def test_float16_variant_and_input_mismatch(registry):
    from miro_core import init_from
    from miro_core.model import build_model

    source = init_from.load_init_source(str(FIXTURE), "miro-only-clip")
    spec = init_from.adapt_spec(data_spec(source.spec, ["clip_score"]), source)
    model = build_model(spec, registry)
    init_from.initialise(model, source)
    assert model.state_dict()["mixer.text_proj.weight"].dtype == torch.float32
    with pytest.raises(ConfigError, match="text_dim is 48, the training data gives 384"):
        init_from.adapt_spec(replace(data_spec(source.spec, ["clip_score"]), text_dim=384), source)


def test_latent_statistics_must_match():
    from miro_core import init_from

    source = init_from.load_init_source(str(FIXTURE))
    same = {"name": "sdxl-vae", "options": {"statistics": {"mean": source.latent_mean, "std": source.latent_std}}}
    init_from.check_latent_statistics(source, same)
    other = {"name": "sdxl-vae", "options": {}, "statistics": {"mean": [0.0] * 4, "std": [1.0] * 4}}
    with pytest.raises(ConfigError, match="latent_statistics.json"):
        init_from.check_latent_statistics(source, other)


def test_float16_buffers_match_the_release_statistics(tmp_path):
    """A float16 copy stores its normalisation buffers rounded; data encoded with the release's statistics
    (configs/sdxl-release-statistics.json, what docs/training.md says to use) is still accepted."""
    import shutil

    from safetensors.torch import load_file, save_file

    from miro_core import init_from

    folder = tmp_path / "fp16"
    shutil.copytree(FIXTURE, folder, ignore=shutil.ignore_patterns("miro-only-clip", "concat-tokens", "t5", "vae"))
    state = load_file(str(folder / "model.safetensors"))
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    save_file(half, str(folder / "model.safetensors"))
    source = init_from.load_init_source(str(folder))
    released = json.loads((Path(__file__).parents[1] / "configs" / "sdxl-release-statistics.json").read_text())
    init_from.check_latent_statistics(source, {"name": "sdxl-vae", "options": {"statistics": released}})
    plain_scale = {"mean": [0.0] * 4, "std": [1 / 0.13025] * 4}  # the release's other (not channel-wise) statistics
    with pytest.raises(ConfigError, match="latent_statistics.json"):
        init_from.check_latent_statistics(source, {"name": "sdxl-vae", "options": {"statistics": plain_scale}})


def test_converted_run_folder_is_a_source(registry, tmp_path):
    from miro_core import init_from
    from miro_core.convert import convert_release

    run = convert_release(FIXTURE, tmp_path / "converted", registry=registry)
    stats = json.loads((run / "latent_statistics.json").read_text())
    source = init_from.load_init_source(str(run))
    assert source.latent_mean == pytest.approx(stats["mean"]) and source.spec.design == "released"
    direct = init_from.load_init_source(str(FIXTURE))
    assert all(torch.equal(direct.state[k], source.state[k]) for k in direct.state)


@pytest.mark.slow
def test_train_released_design_then_fine_tune_with_a_new_reward(tiny_annotations, tiny_bins, registry, tmp_path):
    """A tiny released-design run trains; a second run starts from it (--init-from) with one more reward."""
    from safetensors.torch import load_file

    from miro_core.train import Trainer
    from tests.conftest import tiny_train_config

    tiny = dict(backbone="rin-release-tiny", design="released", cond_dim=64, cond_heads=4, fourier_channels=16)
    base = tiny_train_config(
        tiny_annotations, tiny_bins, tmp_path / "base", rewards=["shapes-alignment", "shapes-aesthetic"], **tiny
    )
    first = Trainer(base, registry, progress=False).run()
    tuned_cfg = tiny_train_config(
        tiny_annotations,
        tiny_bins,
        tmp_path / "tuned",
        steps=1,
        save_every=1,
        init_from=str(first),
        seed=1,
        rewards=["shapes-alignment", "shapes-aesthetic", "shapes-sharpness"],
        backbone="hybrid-tiny",
    )
    trainer = Trainer(tuned_cfg, registry, progress=False)
    tuned = trainer.run()
    config = json.loads((tuned / "config.json").read_text())
    assert config["model"]["backbone"] == "rin-release" and config["model"]["design"] == "released"
    assert config["init_from"]["new_rewards"] == ["shapes-sharpness"]
    assert set(config["init_from"]["rewards_from_checkpoint"]) == {"shapes-alignment", "shapes-aesthetic"}
    before = load_file(str(first / json.loads((first / "latest.json").read_text())["path"] / "model_ema.safetensors"))
    after = load_file(str(tuned / json.loads((tuned / "latest.json").read_text())["path"] / "model_ema.safetensors"))
    assert after["reward_encoder.position"].shape[0] == 3
    # Another seed would start elsewhere; one small step moves the weights only a little from the first run's.
    name = "network.rin_blocks.0.retriever_ca.ca.q.weight"
    assert (after[name] - before[name]).abs().max() < 0.05 * before[name].abs().max()
