"""The ``sdxl-vae`` autoencoder plugin, on a tiny random AutoencoderKL saved in diffusers layout."""

from __future__ import annotations

import json

import pytest
import torch

from miro_core.errors import DataError, MiroError, MissingWeightsError
from miro_core.plugins import build_registry

plugin = pytest.importorskip("miro_autoencoder_sdxl_vae.plugin")
from miro_autoencoder_sdxl_vae.autoencoder import SDXLVAE, STATISTICS_FILENAME  # noqa: E402


def _images(batch: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, 16, 16, generator=gen) * 2 - 1


def test_registered_through_the_hook():
    reg = build_registry(load_entry_points=False, extra_plugins=[("sdxl-vae", plugin)])
    assert reg.autoencoders.get("sdxl-vae") is SDXLVAE


def test_missing_folder_lists_the_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    vae = SDXLVAE({"checkpoint": str(tmp_path)})
    with pytest.raises(MissingWeightsError) as err:
        vae.load()
    message = str(err.value)
    assert "diffusion_pytorch_model.safetensors" in message and str(tmp_path) in message
    assert "checkpoint=<folder>" in message


def test_repo_id_not_in_local_cache_is_missing_weights(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="not in the local Hugging Face cache"):
        SDXLVAE({"checkpoint": "stabilityai/sdxl-vae"}).load()


def test_latent_shape_before_and_after_load(vae_folder):
    vae = SDXLVAE({"checkpoint": str(vae_folder)})
    assert vae.latent_shape(16) == (4, 8)  # read from config.json before loading
    vae.load()
    assert vae.latent_shape(256) == (4, 128)
    assert SDXLVAE({"checkpoint": "/nonexistent"}).latent_shape(256) == (4, 32)  # SDXL geometry
    with pytest.raises(MiroError, match="multiple"):
        vae.latent_shape(15)


def test_encode_before_load_is_an_error():
    with pytest.raises(MiroError, match="load"):
        SDXLVAE().encode(_images(1, 0))


def test_without_statistics_uses_the_config_scaling_factor(vae_folder):
    vae = SDXLVAE({"checkpoint": str(vae_folder)})
    vae.load()
    images = _images(2, 0)
    torch.testing.assert_close(vae.encode(images), vae.encode_raw(images) * 0.13025)
    decoded = vae.decode(vae.encode(images))
    assert decoded.shape == images.shape and decoded.abs().max() <= 1.0


def test_fit_statistics_normalises_each_channel_and_round_trips(vae_folder, tmp_path):
    vae = SDXLVAE({"checkpoint": str(vae_folder)})
    vae.load()
    batches = [_images(4, seed) for seed in range(3)]
    stats = vae.fit_statistics(iter(batches), tmp_path)
    written = tmp_path / STATISTICS_FILENAME
    assert stats["path"] == str(written)
    data = json.loads(written.read_text())
    assert data["images"] == 12 and len(data["mean"]) == 4 and data["values_per_channel"] == 12 * 8 * 8

    latents = torch.cat([vae.encode(b) for b in batches])
    per_channel = latents.transpose(0, 1).reshape(4, -1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(per_channel.std(1), torch.ones(4), atol=1e-4, rtol=0)

    # The statistics file is used through the options; decode inverts the normalisation exactly.
    other = SDXLVAE({"checkpoint": str(vae_folder), "statistics": str(written)})
    other.load()
    torch.testing.assert_close(other.encode(batches[0]), vae.encode(batches[0]))
    raw = other.encode_raw(batches[0])
    mean = torch.tensor(data["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(data["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        expected = other.vae.decode(raw).sample.clamp(-1, 1)
    torch.testing.assert_close(other.decode((raw - mean) / std), expected, atol=1e-5, rtol=1e-5)


def test_statistics_are_validated(vae_folder, tmp_path):
    bad = tmp_path / "stats.json"
    bad.write_text(json.dumps({"mean": [0.0, 0.0], "std": [1.0, 1.0]}))
    vae = SDXLVAE({"checkpoint": str(vae_folder), "statistics": str(bad)})
    with pytest.raises(DataError, match="2 channels"):
        vae.load()
    bad.write_text(json.dumps({"mean": [0.0], "std": [0.0]}))
    with pytest.raises(DataError, match="non-positive"):
        SDXLVAE({"statistics": str(bad)})
    with pytest.raises(DataError, match="does not exist"):
        SDXLVAE({"statistics": str(tmp_path / "absent.json")})
    loaded = SDXLVAE({"checkpoint": str(vae_folder)})
    loaded.load()
    with pytest.raises(DataError, match="no images"):
        loaded.fit_statistics(iter([]))
    with pytest.raises(DataError, match=r"\(B, 3, H, W\)"):
        loaded.fit_statistics(iter([torch.zeros(3, 16, 16)]))


def test_sampled_posterior_differs_from_mode(vae_folder):
    mode = SDXLVAE({"checkpoint": str(vae_folder)})
    sampled = SDXLVAE({"checkpoint": str(vae_folder), "sample_posterior": True})
    mode.load()
    sampled.load()
    images = _images(1, 3)
    torch.manual_seed(0)
    assert not torch.allclose(mode.encode(images), sampled.encode(images))
