"""``miro annotate``: score a sharded dataset with reward plugins, resumably and in parallel.

Exit codes (docs/cli.md): 0 every readable sample handled; 1 error (bad option or input, environment
fault, a reward that broke its contract or failed on every row); 2 usage error; 3 finished, but some data
was skipped (a shard could not be read to its end: its ``shard`` error row says why).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from miro_cli.common import console, distributed_rank, echo, parse_yaml_values, registry, split_names, user_errors
from miro_core.errors import ConfigError


def attach(app: typer.Typer) -> None:
    app.command("annotate")(annotate)


def parse_reward_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """``pickscore.checkpoint=/w`` -> {"pickscore": {"checkpoint": "/w"}} (values parsed as YAML scalars).

    The key is after the last dot: a qualified reward name may contain dots (``my.dist:reward.key=v``).
    """
    out: dict[str, dict[str, Any]] = {}
    for dotted, value in parse_yaml_values(items, "--reward-option").items():
        reward, sep, key = dotted.rpartition(".")
        if not sep or not key or not reward:
            raise ConfigError(f"--reward-option expects REWARD.KEY=VALUE, got {dotted}={value}")
        out.setdefault(reward, {})[key] = value
    return out


def options_by_reward(options: dict[str, dict[str, Any]], rewards: list[str]) -> dict[str, dict[str, Any]]:
    """Key each reward's options by its name as written in ``--rewards``.

    ``--reward-option colorfulness.scale=2`` applies to ``--rewards dist-b:colorfulness`` too (the bare name
    of one qualified reward); an option naming no reward of ``--rewards`` is an error.
    """
    from miro_core.registry import split_qualified

    matched: dict[str, dict[str, Any]] = {}
    unknown = []
    for name, values in options.items():
        candidates = [name] if name in rewards else [r for r in rewards if split_qualified(r)[1] == name]
        if len(candidates) != 1:
            unknown.append(name)
            continue
        matched.setdefault(candidates[0], {}).update(values)
    if unknown:
        raise ConfigError(
            f"--reward-option names reward(s) not in --rewards: {', '.join(unknown)} (--rewards: {', '.join(rewards)})"
        )
    return matched


@user_errors
def annotate(
    data: str = typer.Argument(..., help="Folder or fsspec URL of .tar shards (or one shard)."),
    rewards: str = typer.Option(None, "--rewards", help="Comma-separated reward names, e.g. shapes-alignment,..."),
    out: str = typer.Option(None, "--out", help="Output folder or fsspec URL for the Parquet tables."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, max=65536, help="Images per batch (default 64)."),
    device: str = typer.Option(None, "--device", help="Device for the reward models (cpu, cuda, cuda:1)."),
    dtype: str = typer.Option(None, "--dtype", help="float32, float16 or bfloat16."),
    reward_option: list[str] = typer.Option([], "--reward-option", help="REWARD.KEY=VALUE, repeatable."),
    reward_loading: str = typer.Option(None, "--reward-loading", help="all | sequential | auto (default)."),
    flush_every: int = typer.Option(None, "--flush-every", min=1, help="Batches between checkpoints of results."),
    workers: int = typer.Option(
        None, "--workers", min=0, max=256,
        help="Worker processes that read, decode and prepare batches while the rewards score (0: in this "
        "process; default: on CPU one per two spare cores (none on 2 cores), up to 8 on an accelerator).",
    ),
    max_pixels: int = typer.Option(
        None, "--max-pixels", min=4096, max=178_956_970,
        help="Cap on decoded pixels per image (default 50000000): larger JPEGs are decoded at a reduced size, "
        "other formats become error rows.",
    ),
    retry_errors: bool = typer.Option(
        False, "--retry-errors", help="Read unreadable shards again and re-score rows that have errors."
    ),
    config: Path = typer.Option(None, "--config", help="YAML config; command-line options override it."),
) -> None:
    """Score every image-caption pair with the chosen rewards; a second run resumes where it stopped."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from miro_core.annotate import AnnotateConfig, Annotator, shard_sample_counts
    from miro_core.config import build_config
    from miro_core.data.shards import shard_name

    overrides: dict[str, Any] = {
        "data": data,
        "out": out,
        "rewards": split_names(rewards) or None,
        "batch_size": batch_size,
        "device": device,
        "dtype": dtype,
        "reward_loading": reward_loading,
        "flush_every": flush_every,
        "workers": workers,
        "max_pixels": max_pixels,
        "retry_errors": retry_errors or None,
        "reward_options": parse_reward_options(reward_option) or None,
    }
    cfg = build_config(AnnotateConfig, config, overrides)
    reg = registry()
    cfg = cfg.model_copy(update={"reward_options": options_by_reward(cfg.reward_options, cfg.rewards)})
    models = [reg.rewards.create(name, cfg.reward_options.get(name)) for name in cfg.rewards]
    rank, world = distributed_rank(cfg.device)
    annotator = Annotator(cfg, models, rank=rank, world_size=world, registry=reg)
    annotator.validate()  # DATA, --out and earlier runs, before the progress bar or any write
    counts = shard_sample_counts(cfg.data)
    with Progress(
        TextColumn("[bold]annotating"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=rank != 0 or os.environ.get("MIRO_NO_PROGRESS") == "1",
    ) as progress:
        total = None
        if counts is not None:
            total = sum(counts.get(shard_name(s), 0) for s in annotator.my_shards())
        task = progress.add_task("annotate", total=total)
        annotator.progress = lambda n: progress.update(task, advance=n)
        result = annotator.run()
    run = result.stats.as_json()
    summary = result.summary
    per_reward = ", ".join(f"{k} {v:.1f}s" for k, v in run["reward_seconds"].items())
    wait = run["device_wait_share"]
    echo(
        f"[rank {rank}] this run: {run['samples']} samples ({run['errors']} error rows) in {run['wall_seconds']:.1f}s: "
        f"{run['images_per_second'] or 0:.1f} images/s; waited for data {100 * (wait or 0):.0f}% of the time; "
        f"decode {run['decode_seconds']:.1f}s; {per_reward}; rewards loaded: {annotator.mode}, "
        f"{annotator.workers} worker(s)"
    )
    echo(
        f"folder: {summary['samples']} samples, {summary['scored']} scored, {summary['errors']} error rows, "
        f"{summary['shards']['finished']}/{summary['shards']['total']} shards finished; tables in {cfg.out}"
    )
    from rich.markup import escape

    for warning in run["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    prefix = {0: "[yellow]note:[/]", 1: "[bold red]error:[/]"}.get(result.status, "[yellow]warning:[/]")
    for message in result.messages:
        console.print(f"{prefix} {escape(message)}", highlight=False)
    if result.status:
        raise typer.Exit(result.status)
