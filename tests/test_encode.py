"""``miro encode`` caches latents per shard; training on ``sdxl-vae`` latents reads only the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from miro_cli.main import app
from miro_core.errors import DataError

from .conftest import tiny_train_config

pytest.importorskip("miro_autoencoder_sdxl_vae.plugin")
from miro_autoencoder_sdxl_vae.autoencoder import SDXLVAE  # noqa: E402


def _encode(annotations: Path, vae: Path, out: Path) -> object:
    args = ["encode", str(annotations), "--autoencoder", "sdxl-vae", "--autoencoder-option", f"checkpoint={vae}"]
    args += ["--image-size", "32", "--batch-size", "64", "--out", str(out), "--quiet"]
    return CliRunner().invoke(app, args)


@pytest.fixture(scope="module")
def latent_cache(tiny_annotations, vae_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("latents") / "sdxl-vae-32"
    result = _encode(tiny_annotations, vae_folder, out)
    assert result.exit_code == 0, result.output
    assert "encoded 3 shard(s), skipped 0" in result.output
    return out


def test_encode_writes_one_file_per_shard_and_an_index(latent_cache, tiny_annotations, vae_folder):
    index = json.loads((latent_cache / "index.json").read_text())
    assert index["format"] == "miro-latents" and index["complete"]
    assert index["autoencoder"]["name"] == "sdxl-vae"
    options = index["autoencoder"]["options"]
    assert Path(options["checkpoint"]) == vae_folder.resolve()
    stats = json.loads(Path(options["statistics"]).read_text())  # fitted before encoding, recorded in the index
    assert len(stats["mean"]) == 4 and index["statistics"]["mean"] == stats["mean"]
    assert index["image_size"] == 32 and index["latent_shape"] == [4, 16, 16]
    assert len(index["shards"]) == 3 and index["samples"] == sum(s["samples"] for s in index["shards"].values())
    assert len(index["channel_mean"]) == 4 and all(0.5 < s < 2.0 for s in index["channel_std"])
    files = sorted(latent_cache.glob("*.safetensors"))
    assert len(files) == 3 and not list(latent_cache.glob("*.tmp"))
    with safe_open(str(files[0]), framework="pt") as handle:
        latents = handle.get_tensor("latents")
        keys = json.loads(handle.metadata()["keys"])
    assert latents.dtype == torch.float16 and latents.shape == (len(keys), 4, 16, 16)


def test_second_run_skips_finished_shards(latent_cache, tiny_annotations, vae_folder, monkeypatch):
    before = {p.name: p.stat().st_mtime_ns for p in latent_cache.glob("*.safetensors")}
    first = sorted(before)[0]
    (latent_cache / first).unlink()
    result = _encode(tiny_annotations, vae_folder, latent_cache)
    assert result.exit_code == 0, result.output
    assert "encoded 1 shard(s), skipped 2" in result.output
    after = {p.name: p.stat().st_mtime_ns for p in latent_cache.glob("*.safetensors")}
    assert set(after) == set(before)
    assert all(after[name] == before[name] for name in before if name != first)
    # nothing left to do: the VAE does not encode anything
    monkeypatch.setattr(SDXLVAE, "encode", lambda *a, **k: pytest.fail("encode called on a finished cache"))
    again = _encode(tiny_annotations, vae_folder, latent_cache)
    assert again.exit_code == 0 and "encoded 0 shard(s), skipped 3" in again.output


def test_encode_errors_are_one_line(tiny_annotations, latent_cache, vae_folder, tmp_path):
    runner = CliRunner()
    unknown = runner.invoke(app, ["encode", str(tiny_annotations), "--autoencoder", "nope", "--out", str(tmp_path)])
    assert unknown.exit_code == 1 and "unknown autoencoder 'nope'" in unknown.output
    bad = runner.invoke(app, ["encode", str(tiny_annotations), "--autoencoder-option", "checkpoint"])
    assert bad.exit_code == 1 and "KEY=VALUE" in bad.output
    other_size = runner.invoke(
        app,
        [
            "encode",
            str(tiny_annotations),
            "--autoencoder-option",
            f"checkpoint={vae_folder}",
            "--image-size",
            "16",
            "--out",
            str(latent_cache),
        ],
    )
    assert other_size.exit_code == 1 and "choose another --out" in other_size.output


def test_cache_must_match_the_training_options(latent_cache, tiny_annotations, tiny_bins, registry, tmp_path):
    from miro_core.train import Trainer

    for overrides, message in [
        ({"image_size": 64}, "at 64px"),
        ({"autoencoder_options": {"checkpoint": str(tmp_path)}}, "differ|training asks for checkpoint="),
    ]:
        cfg = tiny_train_config(
            tiny_annotations,
            tiny_bins,
            tmp_path / "run",
            autoencoder="sdxl-vae",
            latent_cache=str(latent_cache),
            **overrides,
        )
        with pytest.raises(DataError, match=message):
            Trainer(cfg, registry, progress=False).run()


def test_missing_cache_says_run_miro_encode(tiny_annotations, tiny_bins, registry, tmp_path):
    from miro_core.train import Trainer

    cfg = tiny_train_config(
        tiny_annotations, tiny_bins, tmp_path / "run", autoencoder="sdxl-vae", latent_cache=str(tmp_path / "none")
    )
    with pytest.raises(DataError, match="run `miro encode"):
        Trainer(cfg, registry, progress=False).run()


@pytest.fixture(scope="module")
def latent_run(latent_cache, tiny_annotations, tiny_bins, vae_folder, tmp_path_factory):
    """`miro train` on the cached latents; the VAE must not encode anything meanwhile."""
    import yaml

    def refuse(*args, **kwargs):
        raise AssertionError("the VAE encoded during training")

    folder = tmp_path_factory.mktemp("latent-run")
    cfg = tiny_train_config(
        tiny_annotations,
        tiny_bins,
        folder / "run",
        steps=2,
        image_size=32,
        autoencoder="sdxl-vae",
        autoencoder_options={"checkpoint": str(vae_folder)},
        latent_cache=str(latent_cache),
    )
    config = folder / "latent.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SDXLVAE, "encode", refuse)
        patch.setattr(SDXLVAE, "encode_raw", refuse)
        result = CliRunner().invoke(app, ["train", "--config", str(config), "--quiet"])
    assert result.exit_code == 0, result.output
    return folder / "run"


def test_train_on_cached_latents_records_the_autoencoder(latent_run, vae_folder):
    run = json.loads((latent_run / "config.json").read_text())
    assert run["model"]["in_channels"] == 4 and run["model"]["image_size"] == 16
    codec = run["autoencoder"]
    assert codec["name"] == "sdxl-vae" and codec["image_size"] == 32 and codec["latent_shape"] == [4, 16, 16]
    assert Path(codec["options"]["checkpoint"]) == vae_folder.resolve()
    assert json.loads(Path(codec["options"]["statistics"]).read_text())["mean"] == codec["statistics"]["mean"]
    assert (latent_run / "latest.json").exists()


def test_pipeline_decodes_latent_runs_to_pixels(latent_run):
    from miro_core.pipeline import MiroPipeline

    pipe = MiroPipeline.from_pretrained(latent_run)
    assert pipe.image_size == 32 and pipe.config["model"]["image_size"] == 16
    images = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert images.shape == (1, 3, 32, 32)
    pil = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert pil[0].size == (32, 32)
