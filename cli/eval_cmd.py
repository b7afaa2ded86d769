"""``miro eval``: score a run's samples (or a folder of images) with reward plugins and the compositional
benchmark, with best-of-N curves."""

from __future__ import annotations

from pathlib import Path

import typer

from miro_cli.common import (
    echo,
    local_path,
    parse_float_map,
    parse_yaml_values,
    registry,
    split_names,
    user_errors,
)
from miro_core.errors import ConfigError


def attach(app: typer.Typer) -> None:
    app.command("eval")(evaluate)


@user_errors
def evaluate(
    source: Path = typer.Argument(
        ...,
        help="Run folder (`miro train`), image folder (`miro sample` output), or a released MIRO checkpoint: a "
        "folder in the authors' layout or a Hugging Face repo id found in the local cache (nothing is downloaded).",
    ),
    out: Path = typer.Option(..., "--out", help="Folder for rows, summary tables, config and images."),
    rewards: str = typer.Option(
        None, "--rewards",
        help="Comma-separated reward plugins (default: the rewards the run was trained on, when they load offline; "
        "else the shapes-world rewards, saying so).",
    ),
    prompts: Path = typer.Option(None, "--prompts", help="Prompt file: one per line, or JSON lines."),
    benchmark: str = typer.Option(
        None, "--benchmark", help="Built-in prompt set: compositional (the default without --prompts)."
    ),
    per_category: int = typer.Option(8, "--per-category", min=1, max=10_000, help="Benchmark prompts per category."),
    n: int = typer.Option(4, "--n", min=1, max=10_000, help="Images per prompt."),
    best_of: int = typer.Option(
        None, "--best-of", min=1, max=10_000, help="Samples per prompt for the best-of-N curve."
    ),
    best_by: str = typer.Option(None, "--best-by", help="Reward that picks the best sample (default: the first)."),
    guidance: float = typer.Option(None, "--guidance", min=0, help="Guidance weight w (default: the run's)."),
    strategy: str = typer.Option(
        None, "--strategy", help="Guidance strategy: none, cfg, miro, isolate, tradeoff, or a plugin "
        "(default: miro, or cfg for a run without rewards)."
    ),
    strategy_option: list[str] = typer.Option(
        [], "--strategy-option", help="KEY=VALUE for the strategy (repeatable); scale= must agree with --guidance."
    ),
    steps: int = typer.Option(50, "--steps", min=1, max=10_000, help="ODE steps."),
    sampler: str = typer.Option("euler", "--sampler", help="euler or heun (or a plugin sampler)."),
    reward: list[str] = typer.Option([], "--reward", help="KEY=VALUE positive target in [0, 1] (default 1)."),
    negative_reward: list[str] = typer.Option([], "--negative-reward", help="KEY=VALUE negative target (default 0)."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1),
    step: int = typer.Option(None, "--step", help="Evaluate this checkpoint of the run (default: the latest)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, max=65536, help="Images per sampling call."),
    device: str = typer.Option("cpu", "--device"),
    weights: str = typer.Option("ema", "--weights", help="ema or raw."),
    no_images: bool = typer.Option(False, "--no-images", help="Do not save the generated images."),
    variant: str = typer.Option(None, "--variant", help="Variant subfolder of a released checkpoint (miro-no-...)."),
) -> None:
    """Generate images for a prompt set (or read an image folder), score them, and write summary tables."""
    from miro_core.authors_layout import released_folder
    from miro_core.config import build_config
    from miro_core.evaluation import COMPOSITIONAL, EvalConfig, run_eval

    cfg = build_config(
        EvalConfig,
        None,
        {
            "source": released_folder(local_path(str(source)) or str(source), variant),
            "out": local_path(str(out)),
            "rewards": split_names(rewards) if rewards is not None else None,
            "prompts": str(prompts) if prompts is not None else None,
            "benchmark": benchmark,
            "per_category": per_category,
            "n": n,
            "best_of": best_of,
            "best_by": best_by,
            "guidance": guidance,
            "strategy": strategy,
            "strategy_options": parse_yaml_values(strategy_option, "--strategy-option"),
            "steps": steps,
            "sampler": sampler,
            "reward_targets": parse_float_map(reward, "--reward"),
            "negative_reward_targets": parse_float_map(negative_reward, "--negative-reward"),
            "seed": seed,
            "checkpoint_step": step,
            "batch_size": batch_size,
            "device": device,
            "weights": weights,
            "save_images": not no_images,
        },
    )
    if rewards is not None and not cfg.rewards:
        raise ConfigError("--rewards is empty; name at least one reward, or leave it out to use the run's")
    summary = run_eval(cfg, registry(), log=echo)
    for name, entry in summary["rewards"].items():
        echo(f"{name}: mean {entry['mean']:.4f} (std {entry['std']:.4f}, {entry['count']} images)")
    bench = summary.get(COMPOSITIONAL)
    if bench:
        parts = ", ".join(f"{c} {v['accuracy']:.3f}" for c, v in bench["categories"].items())
        echo(f"{COMPOSITIONAL}: overall {bench['overall']:.3f} ({parts})")
    recognition = summary.get("recognised_shapes")
    if recognition and recognition["share"] is not None:
        echo(f"recognisable shapes: {recognition['recognised']} of {recognition['objects']} objects "
             f"({100 * recognition['share']:.1f}%)")
    best = summary.get("best_of_n")
    if best:
        curve = best["curves"][best["best_by"]]
        echo(f"best-of-N by {best['best_by']}: " + ", ".join(f"N={s} {v:.4f}" for s, v in zip(best["sizes"], curve)))
    echo(f"wrote rows.parquet, summary.parquet, summary.json, summary.md and config.json to {out}")
