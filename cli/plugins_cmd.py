"""``miro plugins``: what is installed, what each plugin provides, what failed, conflicts and slow loads.

``miro plugins new KIND NAME`` writes a working plugin package to start from.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from miro_cli.common import EXIT_ERROR, echo, print_error, table_console, user_errors

plugins_app = typer.Typer(
    help="List installed plugins (what they provide, load errors, conflicts, load time), or create one.",
    invoke_without_command=True,
    no_args_is_help=False,
)


def attach(app: typer.Typer) -> None:
    app.add_typer(plugins_app, name="plugins")


@plugins_app.callback()
def plugins(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """List installed plugins: distribution, version, hooks, the names they provide, load errors, conflicting
    names, warnings and load time (slow plugins are flagged). Under MIRO_STRICT_PLUGINS=1, exits 1 after the
    table when any plugin has a problem."""
    if ctx.invoked_subcommand is not None:
        return
    _list(as_json)


@user_errors
def _list(as_json: bool) -> None:
    from miro_core.plugins import loaded_registry, strict_mode

    reg = loaded_registry()
    entries = [p.as_json() for p in reg.plugins]
    if as_json:
        echo(json.dumps(entries, indent=2))
    else:
        _table(entries)
    problems = reg.problems()
    if strict_mode() and problems:
        print_error(
            f"MIRO_STRICT_PLUGINS=1 and {len(problems)} plugin problem(s): " + "; ".join(problems)
        )
        raise typer.Exit(EXIT_ERROR)


def _table(entries: list[dict]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="miro plugins")
    for column in ("plugin", "distribution", "version", "hooks", "provides", "load", "problems"):
        table.add_column(column, overflow="fold")
    for e in entries:
        provides = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in e["provides"].items())
        hooks = ", ".join(h.removeprefix("register_") for h in e["hooks"])
        load = f"{e['load_seconds'] * 1000:.0f} ms"
        if e["slow"]:
            load = f"[yellow]{load} SLOW[/]"
        notes = []
        if e["error"]:
            notes.append(f"[red]error: {escape(e['error'])}[/]")
        notes += [f"[magenta]conflict: {escape(c)}[/]" for c in e["conflicts"]]
        notes += [f"[yellow]warning: {escape(w)}[/]" for w in e["warnings"]]
        if e["slow"]:
            notes.append(f"[yellow]slow: {escape(e['slow'])}[/]")
        source = "" if e["source"] in ("entry point", "built-in", "module") else f" ({escape(e['source'])})"
        table.add_row(escape(e["name"]) + source, escape(e["distribution"]), escape(e["version"]), hooks,
                      escape(provides), load, "\n".join(notes))
    table_console().print(table)


@plugins_app.command("new")
@user_errors
def new(
    kind: str = typer.Argument(..., help="reward, binner, guidance or backbone."),
    name: str = typer.Argument(..., help="The component's name, e.g. colorfulness."),
    out: Path = typer.Option(Path("."), "--out", help="Folder to create the package in."),
    force: bool = typer.Option(False, "--force", help="Write into an existing, non-empty package folder."),
) -> None:
    """Write a working plugin package (pyproject with the entry point, component, hook, conformance test)."""
    from miro_core.scaffold import new_plugin

    folder = new_plugin(kind, name, out, force=force)
    echo(f"wrote {folder}")
    echo(f"try it without installing: miro --plugins-dir {folder} plugins")
    echo(f"test it: cd {folder} && pytest tests   (or pip install -e {folder})")
