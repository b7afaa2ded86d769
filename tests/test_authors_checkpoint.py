"""Released MIRO checkpoints (miro-t2i 0.1.4 layout) load, run and sample exactly as the authors' code does.

The fixture ``tests/fixtures/authors-reference`` was recorded with the authors' published package by
``scripts/record_authors_reference.py`` (see docs/backbones.md): a small configuration of the released network
with random weights in their 3-file layout (plus a float16 single-reward variant), with forward outputs and
guided samples of their own sampler (self-conditioning carried per branch).
"""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from miro_core.errors import ConfigError, MissingWeightsError

FIXTURE = Path(__file__).parent / "fixtures" / "authors-reference"
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(FIXTURE / "reference.safetensors"))


@pytest.fixture(scope="module")
def cases() -> dict:
    return json.loads((FIXTURE / "reference.json").read_text())


@pytest.fixture(scope="module")
def pipe(registry):
    from miro_core.pipeline import MiroPipeline

    return MiroPipeline.from_pretrained(
        FIXTURE, registry=registry, autoencoder_options={"checkpoint": str(FIXTURE / "vae")}
    )


def case_kwargs(case: dict, reference: dict) -> dict:
    return dict(
        prompt_embeds=reference["prompt_embeds"][case["prompts"]],
        prompt_attention_mask=reference["prompt_attention_mask"][case["prompts"]],
        num_images_per_prompt=case["num_images_per_prompt"],
        reward_targets=case["reward_targets"],
        negative_reward_targets=case["negative_reward_targets"],
        guidance_scale=case["guidance_scale"],
        num_inference_steps=case["num_inference_steps"],
    )


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a.float() - b.float()).abs().max())


@pytest.mark.parametrize("label", ["zero_state", "state"])
def test_forward_matches_the_authors_network(pipe, reference, label):
    x, t, text, mask, levels, previous = (
        reference[f"forward.{k}"] for k in ("x", "t", "text", "mask", "levels", "previous")
    )
    with torch.no_grad():
        v, latents = pipe.model.step(x, t, text, mask, levels, previous if label == "state" else None)
        logvar = pipe.model.loss_weighting(t)
    assert max_diff(v, reference[f"forward.{label}.velocity"]) <= TOLERANCE
    assert max_diff(latents, reference[f"forward.{label}.latents"]) <= TOLERANCE
    assert max_diff(logvar, reference[f"forward.{label}.logvar"]) <= TOLERANCE


@pytest.mark.parametrize("name", ["guided", "guided_images_per_prompt", "unguided"])
def test_guided_samples_match_the_authors_sampler(pipe, reference, cases, name):
    case = next(c for c in cases["cases"] if c["name"] == name)
    expected = reference[f"{name}.latents"]
    drawn = pipe(
        **case_kwargs(case, reference), generator=torch.Generator().manual_seed(case["seed"]), output_type="latent"
    )
    given = pipe(**case_kwargs(case, reference), latents=reference[f"{name}.noise"], output_type="latent")
    assert max_diff(drawn, expected) <= TOLERANCE
    assert max_diff(given, expected) <= TOLERANCE


def test_images_are_truncated_to_uint8_as_released(pipe, reference, cases):
    case = cases["cases"][0]
    images = pipe(**case_kwargs(case, reference), latents=reference[f"{case['name']}.noise"], output_type="np")
    assert images.dtype.name == "uint8"
    assert torch.equal(torch.from_numpy(images), reference[f"{case['name']}.images"])
    pil = pipe(**case_kwargs(case, reference), latents=reference[f"{case['name']}.noise"])
    assert [tuple(p.size) for p in pil] == [(16, 16), (16, 16)]
    pt = pipe(**case_kwargs(case, reference), latents=reference[f"{case['name']}.noise"], output_type="pt")
    assert pt.shape == (2, 3, 16, 16) and 0.0 <= float(pt.min()) and float(pt.max()) <= 1.0


def fake_hf_cache(root: Path, repo: str) -> Path:
    """The local Hugging Face cache layout (refs/main -> snapshots/<commit>/...) holding the fixture."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = root / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    shutil.copytree(FIXTURE, base / "snapshots" / commit)
    return base


def test_float16_variant_from_the_local_hf_cache(registry, reference, cases, tmp_path, monkeypatch):
    import huggingface_hub.constants

    from miro_core.pipeline import MiroPipeline

    fake_hf_cache(tmp_path, "nicolas-dufour/miro-ablations")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    pipe = MiroPipeline.from_pretrained("nicolas-dufour/miro-ablations", variant="miro-only-clip", registry=registry)
    assert pipe.reward_keys == ["clip_score"]
    case = cases["variant"]["case"]
    out = pipe(
        **case_kwargs(case, reference), generator=torch.Generator().manual_seed(case["seed"]), output_type="latent"
    )
    assert max_diff(out, reference["variant_guided.latents"]) <= TOLERANCE
    with pytest.raises(ConfigError, match="clip_score"):
        pipe(**{**case_kwargs(case, reference), "reward_targets": {"aesthetic_score": 1.0}}, output_type="latent")
    with pytest.raises(MissingWeightsError, match="not in the local Hugging Face cache") as err:
        MiroPipeline.from_pretrained("nicolas-dufour/miro", registry=registry)
    assert f"revision main under {tmp_path / 'models--nicolas-dufour--miro'}" in str(err.value)  # where it looked


def test_missing_files_are_named(registry, tmp_path):
    from miro_core.pipeline import MiroPipeline

    folder = tmp_path / "release"
    shutil.copytree(FIXTURE, folder, ignore=shutil.ignore_patterns("uncond_embedding.npy"))
    with pytest.raises(MissingWeightsError, match=r"lacks uncond_embedding\.npy.*Put the missing file"):
        MiroPipeline.from_pretrained(folder, registry=registry)
    with pytest.raises(MissingWeightsError, match="no variant folder 'miro-no-clip'.*miro-only-clip"):
        MiroPipeline.from_pretrained(FIXTURE, variant="miro-no-clip", registry=registry)


def test_a_sampler_written_for_the_stateless_contract_carries_self_conditioning(registry, reference, cases):
    """A third-party solver that only implements the old ``sample(velocity, noise, num_steps)``."""
    from miro_core.hookspecs import hookimpl
    from miro_core.pipeline import MiroPipeline
    from miro_core.plugins import build_registry
    from miro_core.sampler import Sampler

    class OldEuler(Sampler):
        name = "old-euler"

        def sample(self, velocity, noise, num_steps):
            from miro_core.builtin.samplers import step_size, time_grid

            times, x = time_grid(num_steps), noise
            for step in range(num_steps):
                x = x + step_size(times[step], times[step + 1]) * velocity(x, times[step], step)
            return x

    module = types.ModuleType("old_sampler_plugin")
    module.MIRO_API = ">=1,<2"
    module.register_samplers = hookimpl(lambda register: register(OldEuler))
    local = build_registry(extra_plugins=[("old-sampler", module)])
    pipe = MiroPipeline.from_pretrained(FIXTURE, registry=local)
    case = cases["cases"][0]
    out = pipe(
        **case_kwargs(case, reference), latents=reference["guided.noise"], sampler="old-euler", output_type="latent"
    )
    assert max_diff(out, reference["guided.latents"]) <= TOLERANCE
    heun = pipe(**case_kwargs(case, reference), latents=reference["guided.noise"], sampler="heun", output_type="latent")
    assert torch.isfinite(heun).all() and max_diff(heun, reference["guided.latents"]) > 1e-3


def test_self_conditioning_state_changes_the_samples(pipe, reference, cases):
    """Without the carried state (zeros at every step) the samples differ: the state is really used."""
    case = cases["cases"][0]
    network = pipe.model.network
    original = network.forward
    network.forward = lambda x, t, cond, state=None: original(x, t, cond, None)
    try:
        stateless = pipe(**case_kwargs(case, reference), latents=reference["guided.noise"], output_type="latent")
    finally:
        network.forward = original
    assert max_diff(stateless, reference["guided.latents"]) > 1e-3


def test_call_arguments_are_checked(pipe, reference):
    embeds, mask = reference["prompt_embeds"][:1], reference["prompt_attention_mask"][:1]
    with pytest.raises(ConfigError, match="either prompt or prompt_embeds"):
        pipe("a cat", prompt_embeds=embeds, output_type="latent")
    with pytest.raises(ConfigError, match="latents must be shaped"):
        pipe(prompt_embeds=embeds, prompt_attention_mask=mask, latents=torch.zeros(1, 4, 4, 4), output_type="latent")
    with pytest.raises(ConfigError, match="output_type"):
        pipe(prompt_embeds=embeds, output_type="jpeg")
    with pytest.raises(ConfigError, match=r"\(batch, tokens, 48\)"):
        pipe(prompt_embeds=torch.zeros(1, 3, 7), output_type="latent")
    with pytest.raises(ConfigError, match="unknown reward key"):
        pipe(prompt_embeds=embeds, reward_targets={"clip": 1.0}, output_type="latent")


def test_paper_config_trains_the_released_network(registry):
    """configs/miro-paper.yaml builds the released configuration: 360,411,664 parameters (loss weighting apart)."""
    from miro_core.authors_layout import AUTHORS_REWARD_KEYS
    from miro_core.backbone import parse_backbone_name
    from miro_core.config import build_config
    from miro_core.model import ModelSpec, build_model
    from miro_core.train import TrainConfig

    cfg = build_config(TrainConfig, Path(__file__).parent.parent / "configs" / "miro-paper.yaml", {"data": "d"})
    name, options = parse_backbone_name(cfg.backbone, registry.backbones.as_dict())
    spec = ModelSpec(
        backbone=name,
        backbone_options={**options, **cfg.backbone_options},
        in_channels=4,
        image_size=cfg.image_size // 8,
        text_dim=2048,
        reward_keys=list(AUTHORS_REWARD_KEYS),
        cond_dim=cfg.cond_dim,
        cond_heads=cfg.cond_heads,
        mixer_layers=cfg.mixer_layers,
        registers=cfg.registers,
        fourier_channels=cfg.fourier_channels,
        design=cfg.design,
    )
    with torch.device("meta"):
        model = build_model(spec, registry)
    denoiser = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("loss_weighting."))
    assert denoiser == 360_411_664
    assert sum(p.numel() for p in model.loss_weighting.parameters()) == 129


def test_convert_writes_a_run_folder_that_samples_the_same(registry, reference, cases, tmp_path):
    from miro_cli.main import app
    from miro_core.pipeline import MiroPipeline

    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["convert", str(FIXTURE), "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "latest.json").exists() and (run / "uncond_embedding.npy").exists()
    config = json.loads((run / "config.json").read_text())
    assert config["format"] == "miro-run" and config["model"]["design"] == "released"
    pipe = MiroPipeline.from_pretrained(run, registry=registry)
    case = cases["cases"][0]
    out = pipe(**case_kwargs(case, reference), latents=reference["guided.noise"], output_type="latent")
    assert max_diff(out, reference["guided.latents"]) <= TOLERANCE
    again = CliRunner().invoke(app, ["convert", str(FIXTURE), "--out", str(run)])
    assert again.exit_code == 1 and "--force" in again.output
    variant = CliRunner().invoke(
        app, ["convert", str(FIXTURE), "--variant", "miro-only-clip", "--out", str(run), "--force"]
    )
    assert variant.exit_code == 0, variant.output
    assert json.loads((run / "config.json").read_text())["reward_keys"] == ["clip_score"]


def test_serve_and_eval_accept_a_released_folder():
    from miro_core.evaluation import is_run_folder
    from miro_core.serve_logic import check_run_folder

    assert is_run_folder(FIXTURE)
    assert check_run_folder(FIXTURE) == FIXTURE


TEXT_PLUGIN = '''
"""A stand-in text encoder of width 48 (FLAN-T5-XL is not available offline)."""
import torch

from miro_core.hookspecs import hookimpl
from miro_core.text_encoder import TextEncoder

MIRO_API = ">=1,<2"


class Lookup48(TextEncoder):
    name = "lookup-48"

    def load(self, device="cpu", dtype="float32"):
        pass

    @property
    def dim(self):
        return 48

    def encode(self, captions):
        tokens = torch.stack([torch.randn(self.options.max_length, 48, generator=torch.Generator().manual_seed(len(c)))
                              for c in captions])
        return tokens, torch.ones(len(captions), self.options.max_length, dtype=torch.bool)


@hookimpl
def register_text_encoders(register):
    register(Lookup48)
'''


def test_cli_sample_on_a_converted_release(tmp_path):
    """`miro convert` then `miro sample` end to end (text through a stand-in encoder of the fixture's width)."""
    from PIL import Image

    from miro_cli.main import app

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "lookup48.py").write_text(TEXT_PLUGIN)
    run = tmp_path / "run"
    assert CliRunner().invoke(app, ["convert", str(FIXTURE), "--out", str(run)]).exit_code == 0
    config = json.loads((run / "config.json").read_text())
    config["text_encoder"] = {"name": "lookup-48", "options": {"max_length": 10}}
    config["autoencoder"]["options"]["checkpoint"] = str(FIXTURE / "vae")
    (run / "config.json").write_text(json.dumps(config))
    out = tmp_path / "samples"
    result = CliRunner().invoke(
        app,
        [
            "--plugins-dir",
            str(plugins),
            "sample",
            str(run),
            "--out",
            str(out),
            "--prompt",
            "a red fox",
            "--n",
            "2",
            "--steps",
            "3",
            "--reward",
            "aesthetic_score=0.5",
        ],
    )
    assert result.exit_code == 0, result.output
    assert Image.open(out / "000-01.png").size == (16, 16)


def test_released_keys_are_measured_by_their_reward_plugins(pipe):
    """eval/serve measure a released checkpoint with the plugins behind its keys (clip_score -> jina-clip, ...)."""
    from miro_core.run_rewards import run_rewards

    choice = run_rewards(pipe.config)
    assert pipe.reward_keys and choice.names
    expected = {"clip_score": "jina-clip", "aesthetic_score": "aesthetic", "image_reward_score": "imagereward",
                "pick_a_score_score": "pickscore", "hpsv2_score": "hpsv2", "vqa_score": "vqascore",
                "sciscore_score": "sciscore"}
    assert choice.names == [expected[k] for k in pipe.reward_keys]


def test_cli_sample_takes_a_hub_id_from_the_local_cache_only(tmp_path, monkeypatch):
    """A repo id is looked up in the local HF cache; when absent the error says so and nothing is downloaded."""
    import huggingface_hub.constants

    from miro_cli.main import app

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    result = CliRunner().invoke(
        app, ["sample", "nicolas-dufour/miro", "--variant", "miro-no-aesthetic", "--out", str(tmp_path / "s"),
              "--prompt", "x"]
    )
    assert result.exit_code == 1
    assert "not in the local Hugging Face cache" in result.output
    assert "miro-no-aesthetic/config.json" in result.output
    result = CliRunner().invoke(app, ["sample", str(tmp_path / "no" / "such"), "--out", str(tmp_path / "s"),
                                      "--prompt", "x"])
    assert result.exit_code == 1 and "is not a folder" in result.output


def test_levels_beyond_the_unit_range_are_sampled_as_released(pipe, reference, cases):
    """miro-t2i takes any float as a reward target of a released checkpoint; our own runs keep [0, 1]."""
    from miro_core.guidance import check_reward_keys

    case = next(c for c in cases["cases"] if c["name"] == "targets_beyond_unit_range")
    out = pipe(**case_kwargs(case, reference), latents=reference[f"{case['name']}.noise"], output_type="latent")
    assert max_diff(out, reference[f"{case['name']}.latents"]) <= TOLERANCE
    images = pipe(**case_kwargs(case, reference), latents=reference[f"{case['name']}.noise"], output_type="np")
    assert torch.equal(torch.from_numpy(images), reference[f"{case['name']}.images"])
    with pytest.raises(ConfigError, match="not a finite number"):
        pipe(**{**case_kwargs(case, reference), "reward_targets": {"clip_score": float("nan")}}, output_type="latent")
    with pytest.raises(ConfigError, match=r"outside \[0, 1\]"):
        check_reward_keys({"clip_score": 1.5}, ["clip_score"], "reward_targets")


def test_a_given_negative_text_matches_the_authors_sampler(pipe, reference, cases):
    """Their sampler with a negative text of its own (attended over every position, as they build its mask)."""
    case = next(c for c in cases["direct"] if c["name"] == "given_negative_text")
    out = pipe(
        prompt_embeds=reference["prompt_embeds"][case["prompts"]],
        prompt_attention_mask=reference["prompt_attention_mask"][case["prompts"]],
        negative_prompt_embeds=reference[f"{case['name']}.negative_prompt_embeds"],
        reward_targets=case["reward_targets"],
        negative_reward_targets=case["negative_reward_targets"],
        guidance_scale=case["guidance_scale"],
        num_inference_steps=case["num_inference_steps"],
        latents=reference[f"{case['name']}.noise"],
        output_type="latent",
    )
    assert max_diff(out, reference[f"{case['name']}.latents"]) <= TOLERANCE


def test_bf16_autocast_rounds_where_the_release_rounds(registry, reference, cases, monkeypatch):
    """Under bf16 autocast the released sampler keeps the velocity, the guidance arithmetic, the mixer's token
    sequence and the reward positions in float32, and rounds the reward levels to bf16 before embedding them.

    Recorded with their sampler under a CPU bf16 autocast; the attention runs as on CUDA (plain SDPA: on CPU
    this project computes bf16 attention in float32 for speed, see miro_core.low_precision)."""
    import torch.nn.functional as F

    import miro_core.attention_blocks
    from miro_core.pipeline import MiroPipeline

    def cuda_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    monkeypatch.setattr(miro_core.attention_blocks, "attention", cuda_attention)
    case = next(c for c in cases["direct"] if c["name"] == "guided_bf16_autocast")
    pipe = MiroPipeline.from_pretrained(FIXTURE, registry=registry, autocast="bf16")
    out = pipe(
        prompt_embeds=reference["prompt_embeds"][case["prompts"]],
        prompt_attention_mask=reference["prompt_attention_mask"][case["prompts"]],
        reward_targets=case["reward_targets"],
        negative_reward_targets=case["negative_reward_targets"],
        guidance_scale=case["guidance_scale"],
        num_inference_steps=case["num_inference_steps"],
        latents=reference[f"{case['name']}.noise"],
        output_type="latent",
    )
    # bit for bit on the recording machine; another CPU's bf16 kernels may round a few products differently
    assert max_diff(out, reference[f"{case['name']}.latents"]) <= 2e-3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v, _ = pipe.model.step(
            reference["forward.x"], reference["forward.t"], reference["forward.text"], reference["forward.mask"],
            reference["forward.levels"],
        )
    assert v.dtype == torch.float32


def hf_cache_with_release_dependencies(root: Path) -> None:
    """google/flan-t5-xl (the fixture's tiny T5) and stabilityai/sdxl-vae (its tiny VAE) in a local HF cache."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    for repo, source in (("google/flan-t5-xl", "t5"), ("stabilityai/sdxl-vae", "vae")):
        base = root / f"models--{repo.replace('/', '--')}"
        (base / "refs").mkdir(parents=True)
        (base / "refs" / "main").write_text(commit)
        shutil.copytree(FIXTURE / source, base / "snapshots" / commit)


def test_concatenated_tokens_and_t5_padding_from_prompts(registry, reference, cases, tmp_path, monkeypatch):
    """A configuration that concatenates every conditioning token (masked text positions too) to the latents,
    with self-conditioning, sampled from prompt strings: T5's own states at padding positions are kept, as
    miro-t2i keeps them. Python API and `miro sample` straight on the authors' folder (T5 and VAE from the
    local HF cache)."""
    import huggingface_hub.constants
    import numpy as np
    from PIL import Image

    from miro_cli.main import app
    from miro_core.pipeline import MiroPipeline

    hf_cache_with_release_dependencies(tmp_path / "hf")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    variant = cases["concat_variant"]
    case = variant["case"]
    pipe = MiroPipeline.from_pretrained(FIXTURE, variant=variant["name"], registry=registry)
    assert pipe.reward_keys == ["vqa_score", "clip_score", "hpsv2_score"]
    out = pipe(
        case["prompts"],
        num_images_per_prompt=case["num_images_per_prompt"],
        reward_targets=case["reward_targets"],
        negative_reward_targets=case["negative_reward_targets"],
        guidance_scale=case["guidance_scale"],
        num_inference_steps=case["num_inference_steps"],
        generator=torch.Generator().manual_seed(case["seed"]),
        output_type="latent",
    )
    assert max_diff(out, reference[f"{case['name']}.latents"]) <= TOLERANCE
    args = ["sample", str(FIXTURE), "--variant", variant["name"], "--out", str(tmp_path / "s"), "--n",
            str(case["num_images_per_prompt"]), "--steps", str(case["num_inference_steps"]), "--guidance",
            str(case["guidance_scale"]), "--seed", str(case["seed"])]
    for prompt in case["prompts"]:
        args += ["--prompt", prompt]
    for key, value in case["reward_targets"].items():
        args += ["--reward", f"{key}={value}"]
    for key, value in case["negative_reward_targets"].items():
        args += ["--negative-reward", f"{key}={value}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    n = case["num_images_per_prompt"]
    images = [Image.open(tmp_path / "s" / f"{i // n:03d}-{i % n:02d}.png") for i in range(len(case["prompts"]) * n)]
    pixels = torch.stack([torch.from_numpy(np.array(image)) for image in images]).int()
    expected = reference[f"{case['name']}.images"].int()
    # Truncation to uint8 flips a value sitting within float rounding of an integer by one level when the
    # thread count changes the summation order (the latents above agree to 1e-5); anything more is a real
    # difference (keeping T5's padded states wrong moved pixels by up to 174 levels).
    differ = (pixels - expected).abs()
    assert int(differ.max()) <= 1 and float((differ > 0).float().mean()) < 0.01


def test_eval_and_serve_take_a_hub_id_and_variant_from_the_local_cache(tmp_path, monkeypatch):
    """`miro eval` and `miro serve` take a released checkpoint by repo id (+ --variant) from the local HF cache,
    as `miro sample` and MiroPipeline.from_pretrained do."""
    import huggingface_hub.constants

    import miro_core.webui
    from miro_cli.main import app
    from miro_core.authors_layout import released_folder

    fake_hf_cache(tmp_path, "nicolas-dufour/miro-ablations")
    hf_cache_with_release_dependencies(tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    folder = released_folder("nicolas-dufour/miro-ablations", "concat-tokens")
    assert Path(folder).parent.parent.name == "snapshots" and Path(folder).name == "concat-tokens"
    assert released_folder(str(FIXTURE)) == str(FIXTURE)
    assert released_folder(str(FIXTURE), "miro-only-clip") == str(FIXTURE / "miro-only-clip")

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n")
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app, ["eval", "nicolas-dufour/miro-ablations", "--variant", "concat-tokens", "--out", str(out), "--prompts",
              str(prompts), "--n", "1", "--steps", "1", "--rewards", "shapes-aesthetic"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rewards"]["shapes-aesthetic"]["count"] == 1

    served = {}
    monkeypatch.setattr(miro_core.webui, "serve", lambda session, host, port: served.update(session=session))
    result = CliRunner().invoke(app, ["serve", "nicolas-dufour/miro-ablations", "--variant", "miro-only-clip"])
    assert result.exit_code == 0, result.output
    assert served["session"].reward_keys == ["clip_score"]
    result = CliRunner().invoke(app, ["eval", "nicolas-dufour/miro", "--out", str(tmp_path / "e2")])
    assert result.exit_code == 1 and "not in the local Hugging Face cache" in result.output
