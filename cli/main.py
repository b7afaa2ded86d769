"""The ``miro`` command: each subcommand lives in its own module and is a thin layer over miro_core.

Heavy libraries are imported inside command functions, so ``miro --help`` and ``miro plugins``
answer at once.
"""

from __future__ import annotations

import typer

from miro_cli import (
    annotate_cmd,
    backbones_cmd,
    bins_cmd,
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


@app.callback()
def _root() -> None:
    """MIRO: reward-conditioned text-to-image pretraining."""


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


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
