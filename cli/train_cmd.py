"""``miro train``: flow-matching training of a reward-conditioned generator (accelerate-aware)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from miro_cli.common import echo, registry, split_names, user_errors


def attach(app: typer.Typer) -> None:
    app.command("train")(train)


@user_errors
def train(
    config: Path = typer.Option(None, "--config", help="YAML config (configs/*.yaml); options below override it."),
    backbone: str = typer.Option(None, "--backbone", help="Backbone and size, e.g. hybrid-small, dit-xl/2."),
    data: str = typer.Option(None, "--data", help="Annotation folder (or shards, with --no-rewards)."),
    bins: str = typer.Option(None, "--bins", help="Bins JSON from `miro bins fit`."),
    out: str = typer.Option(None, "--out", help="Run folder to write."),
    rewards: str = typer.Option(None, "--rewards", help="Condition on these rewards only (default: all in bins)."),
    no_rewards: bool = typer.Option(False, "--no-rewards", help="Plain baseline: no reward conditioning."),
    steps: int = typer.Option(None, "--steps", min=1),
    max_seconds: float = typer.Option(None, "--max-seconds", help="Time budget; the LR schedule is fitted to it."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Per process and micro-batch."),
    lr: float = typer.Option(None, "--lr"),
    optimizer: str = typer.Option(None, "--optimizer", help="adamw or lamb."),
    text_encoder: str = typer.Option(None, "--text-encoder"),
    autoencoder: str = typer.Option(None, "--autoencoder", help="pixels, or a VAE plugin (run `miro encode` first)."),
    latent_cache: str = typer.Option(None, "--latent-cache", help="Folder written by `miro encode` (default: found)."),
    seed: int = typer.Option(None, "--seed"),
    device: str = typer.Option(None, "--device", help="auto (accelerate decides) or cpu."),
    mixed_precision: str = typer.Option(
        None, "--mixed-precision", help="no, fp16, bf16 or auto (bf16 where the device runs it natively)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its latest checkpoint."),
    stop_at_step: int = typer.Option(None, "--stop-at-step", help="Save and exit at this step (resume later)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Train a MIRO model (or a --no-rewards baseline) and write a run folder."""
    from miro_core.config import build_config
    from miro_core.train import TrainConfig, Trainer

    overrides: dict[str, Any] = {
        "backbone": backbone,
        "data": data,
        "bins": bins,
        "out": out,
        "rewards": split_names(rewards) or None,
        "no_rewards": True if no_rewards else None,
        "steps": steps,
        "max_seconds": max_seconds,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": optimizer,
        "text_encoder": text_encoder,
        "autoencoder": autoencoder,
        "latent_cache": latent_cache,
        "seed": seed,
        "device": device,
        "mixed_precision": mixed_precision,
    }
    cfg = build_config(TrainConfig, config, overrides)
    trainer = Trainer(cfg, registry(), progress=not quiet)
    run = trainer.run(resume=resume, stop_at_step=stop_at_step)
    if trainer.accelerator.is_main_process:
        echo(f"trained {trainer.steps_done} steps in {trainer.seconds:.1f}s; run folder: {run}")
