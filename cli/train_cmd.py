"""``miro train``: flow-matching training of a reward-conditioned generator (accelerate-aware)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from miro_cli.common import echo, local_path, refuse_memory_url, registry, split_names, user_errors


def attach(app: typer.Typer) -> None:
    app.command("train")(train)


@user_errors
def train(
    config: Path = typer.Option(None, "--config", help="YAML config (configs/*.yaml); options below override it."),
    backbone: str = typer.Option(None, "--backbone", help="Backbone and size, e.g. hybrid-small, dit-xl/2."),
    data: str = typer.Option(
        None, "--data", help="Records from `miro encode`, or an annotation folder (encoded into a records cache)."
    ),
    bins: str = typer.Option(None, "--bins", help="Bins JSON from `miro bins fit`."),
    out: str = typer.Option(None, "--out", help="Run folder to write."),
    rewards: str = typer.Option(None, "--rewards", help="Condition on these rewards only (default: all in bins)."),
    no_rewards: bool = typer.Option(False, "--no-rewards", help="Plain baseline: no reward conditioning."),
    steps: int = typer.Option(None, "--steps", min=1),
    max_seconds: float = typer.Option(
        None, "--max-seconds", min=0, help="Time budget in seconds; the LR schedule is fitted to it."
    ),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Per process and micro-batch."),
    lr: float = typer.Option(None, "--lr"),
    optimizer: str = typer.Option(None, "--optimizer", help="adamw or lamb."),
    text_encoder: str = typer.Option(None, "--text-encoder"),
    autoencoder: str = typer.Option(None, "--autoencoder", help="pixels or a VAE plugin, for encoding annotations."),
    data_workers: int = typer.Option(None, "--data-workers", min=0, help="DataLoader processes reading records."),
    seed: int = typer.Option(None, "--seed"),
    device: str = typer.Option(None, "--device", help="auto (accelerate decides) or cpu."),
    mixed_precision: str = typer.Option(
        None, "--mixed-precision", help="no, fp16, bf16 or auto (bf16 where the device runs it natively)."
    ),
    compile_model: bool = typer.Option(None, "--compile/--no-compile", help="torch.compile the model."),
    activation_checkpointing: bool = typer.Option(
        None, "--activation-checkpointing/--no-activation-checkpointing",
        help="Recompute each block's activations in the backward pass (less memory, about 1/3 more compute).",
    ),
    peak_tflops: float = typer.Option(None, "--peak-tflops", help="Peak TFLOP/s of one device, for the MFU figure."),
    init_from: str = typer.Option(
        None, "--init-from",
        help="Start from these weights: a released MIRO checkpoint (folder or repo id in the local HF cache) or a "
        "run folder; the architecture comes from there (docs/training.md, Fine-tuning).",
    ),
    init_from_variant: str = typer.Option(None, "--init-from-variant", help="Subfolder of --init-from."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its latest checkpoint."),
    stop_at_step: int = typer.Option(
        None, "--stop-at-step", min=1, help="Save and exit at this step (resume later)."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Train a MIRO model (or a --no-rewards baseline) and write a run folder."""
    from miro_core.config import build_config
    from miro_core.train import TrainConfig, Trainer

    overrides: dict[str, Any] = {
        "backbone": backbone,
        "data": local_path(data),
        "bins": local_path(bins),
        "out": local_path(out),
        "rewards": split_names(rewards) or None,
        "no_rewards": True if no_rewards else None,
        "steps": steps,
        "max_seconds": max_seconds,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": optimizer,
        "text_encoder": text_encoder,
        "autoencoder": autoencoder,
        "data_workers": data_workers,
        "compile": compile_model,
        "activation_checkpointing": activation_checkpointing,
        "peak_tflops": peak_tflops,
        "seed": seed,
        "device": device,
        "mixed_precision": mixed_precision,
        "init_from": init_from,
        "init_from_variant": init_from_variant,
    }
    cfg = build_config(TrainConfig, config, overrides)  # every range check, before any data is loaded
    cfg = cfg.model_copy(update={k: local_path(getattr(cfg, k)) for k in ("data", "bins", "out")})
    refuse_memory_url(cfg.out, "--out" if out else f"`out` in {config}")
    trainer = Trainer(cfg, registry(), progress=not quiet)
    run = trainer.run(resume=resume, stop_at_step=stop_at_step)
    if trainer.accelerator.is_main_process:
        speed = ""
        if trainer.samples_per_second is not None:
            speed = f" ({trainer.samples_per_second:.1f} samples/s"
            speed += f", MFU {100 * trainer.mfu:.1f}%)" if trainer.mfu is not None else ", MFU n/a)"
        echo(f"trained {trainer.steps_done} steps in {trainer.seconds:.1f}s{speed}; run folder: {run}")
