"""Shared fixtures: a tiny shapes-world dataset, its annotations and bins, built once per session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("MIRO_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# transformers copies remote model code into its module cache; a cache shared between test runs would replay an
# earlier run's copy (with that run's temporary paths baked in), so every test process gets a fresh one.
os.environ["HF_MODULES_CACHE"] = tempfile.mkdtemp(prefix="miro-test-hf-modules-")

SHAPES_REWARDS = ["shapes-alignment", "shapes-aesthetic", "shapes-sharpness"]


@pytest.fixture(scope="session")
def registry():
    from miro_core.plugins import build_registry

    return build_registry()


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 shapes-world samples in 3 shards."""
    from miro_core.shapes.dataset import write_shapes_dataset

    out = tmp_path_factory.mktemp("shapes") / "data"
    write_shapes_dataset(str(out), n=240, seed=1, samples_per_shard=80, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_annotations(tiny_shapes: Path, registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from miro_core.annotate import AnnotateConfig, Annotator

    out = tmp_path_factory.mktemp("ann") / "annotations"
    cfg = AnnotateConfig(data=str(tiny_shapes), out=str(out), rewards=SHAPES_REWARDS, batch_size=64)
    Annotator(cfg, [registry.rewards.create(n) for n in SHAPES_REWARDS]).run()
    return out


@pytest.fixture(scope="session")
def tiny_bins(tiny_annotations: Path, registry) -> Path:
    from miro_core.bins import fit_bins

    path = tiny_annotations.parent / "bins.json"
    fit_bins(str(tiny_annotations), num_bins=16, ties="spread", registry=registry).save(str(path))
    return path


@pytest.fixture(scope="session")
def vae_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random AutoencoderKL (2x downsampling, 4 latent channels) saved in the diffusers layout."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
        scaling_factor=0.13025,
    )
    folder = tmp_path_factory.mktemp("tiny-vae")
    vae.save_pretrained(folder, safe_serialization=True)
    return folder


def tiny_train_config(data: Path, bins: Path | None, out: Path, **overrides):
    """A training config small enough to run a handful of steps in a second or two."""
    from miro_core.train import TrainConfig

    base = dict(
        data=str(data),
        bins=str(bins) if bins else None,
        out=str(out),
        no_rewards=bins is None,
        backbone="hybrid-tiny",
        text_encoder_options={"max_length": 12},
        cond_dim=32,
        cond_heads=2,
        mixer_layers=1,
        registers=4,
        fourier_channels=16,
        batch_size=8,
        steps=4,
        warmup_steps=2,
        save_every=2,
        log_every=1,
        sample_steps=3,
        guidance_scale=1.5,
        device="cpu",
    )
    base.update(overrides)
    return TrainConfig(**base)


def two_cpu_processes() -> list[str]:
    """``accelerate launch`` of ``miro`` in 2 processes; on a CPU-only machine they use the gloo backend."""
    import sys

    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "miro_cli.main",
    ]
