"""``miro plugins``: what is installed, what each plugin provides, and what failed to load."""

from __future__ import annotations

import json

import typer

from miro_cli.common import echo, registry, table_console


def attach(app: typer.Typer) -> None:
    app.command("plugins")(plugins)


def plugins(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """List installed plugins: distribution, version, hooks, the names they provide, and load errors."""
    reg = registry(warn=False)
    entries = [p.as_json() for p in reg.plugins]
    if as_json:
        echo(json.dumps(entries, indent=2))
        return
    from rich.table import Table

    table = Table(title="miro plugins")
    for column in ("plugin", "distribution", "version", "hooks", "provides", "error"):
        table.add_column(column, overflow="fold")
    for e in entries:
        provides = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in e["provides"].items())
        hooks = ", ".join(h.removeprefix("register_") for h in e["hooks"])
        error = f"[red]{e['error']}[/]" if e["error"] else ""
        table.add_row(e["name"], e["distribution"], e["version"], hooks, provides, error)
    table_console().print(table)
