"""The ``miro`` command: each subcommand lives in its own module and is a thin layer over miro_core.

Heavy libraries are imported inside command functions, so ``miro --help`` and ``miro plugins``
answer at once.
"""

from __future__ import annotations

from pathlib import Path

import typer

from miro_cli import (
    annotate_cmd,
    backbones_cmd,
    bins_cmd,
    convert_cmd,
    data_cmd,
    demo_cmd,
    encode_cmd,
    eval_cmd,
    plugins_cmd,
    sample_cmd,
    serve_cmd,
    train_cmd,
)

app = typer.Typer(
    name="miro",
    help="MIRO: reward-conditioned text-to-image pretraining. Score data, fit bins, train, sample, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    """``miro --version``: the installed distribution's version (its one source is pyproject.toml)."""
    if value:
        from miro_core import API_VERSION, __version__

        typer.echo(f"miro {__version__} (plugin API {API_VERSION})")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    plugins_dir: list[Path] = typer.Option(
        [],
        "--plugins-dir",
        help="Also load the plugins in this folder (its *.py modules, or the entry points of its pyproject.toml), "
        "without installing them; repeatable. Same as MIRO_PLUGINS_DIR.",
    ),
    debug: bool = typer.Option(
        False, "--debug", help="Print the full traceback after an error message (same as MIRO_DEBUG=1)."
    ),
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version,
        help="Print miro's version and its plugin API version, then exit.",
    ),
) -> None:
    """MIRO: reward-conditioned text-to-image pretraining."""
    _scoped_environment(ctx, debug=debug, plugins_dir=plugins_dir)


def _scoped_environment(ctx: typer.Context, *, debug: bool, plugins_dir: list[Path]) -> None:
    """Apply --debug and --plugins-dir for this invocation only (restored when the command ends).

    They travel as environment variables so that worker processes (accelerate, data loaders) see them too.
    """
    import os

    from miro_cli.common import DEBUG_ENV
    from miro_core.plugins import PLUGINS_DIR_ENV, reset_registry

    changes: dict[str, str] = {}
    if debug:
        changes[DEBUG_ENV] = "1"
    if plugins_dir:
        existing = os.environ.get(PLUGINS_DIR_ENV, "")
        changes[PLUGINS_DIR_ENV] = os.pathsep.join([p for p in existing.split(os.pathsep) if p] +
                                                   [str(d) for d in plugins_dir])
    if not changes:
        return
    previous = {key: os.environ.get(key) for key in changes}
    os.environ.update(changes)
    if PLUGINS_DIR_ENV in changes:
        reset_registry()

    def restore() -> None:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if PLUGINS_DIR_ENV in changes:
            reset_registry()

    ctx.call_on_close(restore)


plugins_cmd.attach(app)
backbones_cmd.attach(app)
data_cmd.attach(app)
annotate_cmd.attach(app)
bins_cmd.attach(app)
encode_cmd.attach(app)
train_cmd.attach(app)
sample_cmd.attach(app)
eval_cmd.attach(app)
demo_cmd.attach(app)
serve_cmd.attach(app)
convert_cmd.attach(app)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
