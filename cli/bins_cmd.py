"""``miro bins fit`` and ``miro bins show``: per-reward edges and the levels MIRO conditions on."""

from __future__ import annotations

import typer

from miro_cli.common import echo, parse_yaml_values, registry, split_names, table_console, user_errors

bins_app = typer.Typer(help="Fit and inspect reward bins.", no_args_is_help=True)


def attach(app: typer.Typer) -> None:
    app.add_typer(bins_app, name="bins")


@bins_app.command("fit")
@user_errors
def fit(
    annotations: str = typer.Argument(
        ..., help="Annotation folder written by `miro annotate`, or records written by `miro encode` (raw scores)."
    ),
    out: str = typer.Option(..., "--out", help="Bins JSON file to write."),
    bins: int = typer.Option(64, "--bins", min=2, max=4096, help="Bins per reward (MIRO: 64)."),
    strategy: str = typer.Option("quantile", "--strategy", help="quantile (MIRO) or uniform, or a plugin binner."),
    sample: int = typer.Option(100_000, "--sample", min=1, help="Rows sampled to estimate the edges."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1),
    rewards: str = typer.Option(None, "--rewards", help="Only these reward columns (default: all)."),
    ties: str = typer.Option("released", "--ties", help="released (MIRO's rule) or spread (for tied scores)."),
    binner_option: list[str] = typer.Option(
        [], "--binner-option", help="KEY=VALUE option of the binner (a plugin binner's own options), repeatable."
    ),
) -> None:
    """Fit per-reward bin edges and write them with summary statistics."""
    from miro_core.bins import fit_bins
    from miro_core.errors import ConfigError

    if ties not in ("released", "spread"):
        raise ConfigError(f"--ties {ties}: choose released or spread")
    fitted = fit_bins(
        annotations,
        num_bins=bins,
        strategy=strategy,
        sample=sample,
        seed=seed,
        rewards=split_names(rewards) or None,
        ties=ties,
        registry=registry(),
        binner_options=parse_yaml_values(binner_option, "--binner-option"),
    )
    fitted.save(out)
    for name, stats in fitted.stats.items():
        warning = f"  [warning: {stats['warning']}]" if "warning" in stats else ""
        echo(
            f"{name}: {stats['count']} scores ({stats['missing']} missing), "
            f"mean {stats.get('mean', float('nan')):.4f}, "
            f"{stats['distinct_levels']} of {bins} levels used{warning}"
        )
    echo(f"wrote {out}")


@bins_app.command("show")
@user_errors
def show(path: str = typer.Argument(..., help="Bins JSON file.")) -> None:
    """Print each reward's statistics, edges and level histogram."""
    from rich.table import Table

    from miro_core.bins import BinsFile

    fitted = BinsFile.load(path, registry(warn=False))
    binner = fitted.meta.get("binner") if isinstance(fitted.meta.get("binner"), dict) else {}
    fitted_by = f" (fitted by {binner.get('distribution')} {binner.get('distribution_version')})" if binner else ""
    table = Table(title=f"{path}: {fitted.strategy}, {fitted.num_bins} bins{fitted_by}")
    for column in ("reward", "count", "missing", "mean", "std", "min", "max", "levels used", "level histogram"):
        table.add_column(column)
    for name, stats in fitted.stats.items():
        counts = stats.get("level_counts") or []
        table.add_row(
            name,
            str(stats.get("count", "")),
            str(stats.get("missing", "")),
            f"{stats.get('mean', float('nan')):.4f}",
            f"{stats.get('std', float('nan')):.4f}",
            f"{stats.get('min', float('nan')):.4f}",
            f"{stats.get('max', float('nan')):.4f}",
            str(stats.get("distinct_levels", "")),
            sparkline(counts),
        )
    table_console().print(table)


def sparkline(counts: list[int], width: int = 32) -> str:
    """A one-line histogram of level counts (grouped down to ``width`` characters)."""
    if not counts:
        return ""
    marks = " ▁▂▃▄▅▆▇█"
    group = max(1, -(-len(counts) // width))
    grouped = [sum(counts[i : i + group]) for i in range(0, len(counts), group)]
    top = max(grouped) or 1
    return "".join(marks[round(c / top * (len(marks) - 1))] for c in grouped)
