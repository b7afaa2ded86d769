"""``miro demo``: the whole pipeline on the offline shapes world, with a report."""

from __future__ import annotations

from pathlib import Path

import typer

from miro_cli.common import echo, registry, user_errors


def attach(app: typer.Typer) -> None:
    app.command("demo")(demo)


@user_errors
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for data, run, grid and report."),
    samples: int = typer.Option(6000, "--samples", min=100, max=10**8, help="Shapes-world samples to generate."),
    steps: int = typer.Option(
        None, "--steps", min=1, max=10**9, help="Training steps (default: configs/demo.yaml, 3000)."
    ),
    max_seconds: float = typer.Option(None, "--max-seconds", help="Also stop training after this many seconds."),
    config: Path = typer.Option(None, "--config", help="Training config (default: configs/demo.yaml)."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1),
) -> None:
    """Generate data, annotate, fit bins, train, sample high vs low rewards, and write a report."""
    from miro_core.demo import run_demo

    report = run_demo(
        out, registry(), samples=samples, seed=seed, config=config, max_seconds=max_seconds, train_steps=steps,
        log=echo,
    )
    for name, values in report["rewards"].items():
        echo(f"{name}: high {values['high']:.4f} vs low {values['low']:.4f}")
    echo(f"total {sum(report['seconds'].values()):.0f}s; wrote {out / 'grid.png'}, {out / 'report.md'}, "
         f"{out / 'report.json'}")
