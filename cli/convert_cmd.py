"""``miro convert``: turn a released MIRO checkpoint (miro-t2i's 3-file layout) into a run folder."""

from __future__ import annotations

from pathlib import Path

import typer

from miro_cli.common import echo, registry, user_errors


def attach(app: typer.Typer) -> None:
    app.command("convert")(convert)


@user_errors
def convert(
    source: str = typer.Argument(
        ...,
        help="Folder with config.json, model.safetensors and uncond_embedding.npy, or a Hugging Face repo id "
        "found in the local cache (never downloaded), e.g. nicolas-dufour/miro.",
    ),
    out: Path = typer.Option(..., "--out", help="The run folder to write."),
    variant: str = typer.Option(None, "--variant", help="Subfolder of SOURCE, e.g. miro-only-clip."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty --out."),
) -> None:
    """Convert released MIRO weights into a run folder for sample, eval, serve and `train --init-from`."""
    from miro_core.convert import convert_release

    run = convert_release(source, out, variant=variant, registry=registry(), force=force)
    echo(f"wrote {run} (released EMA weights as step 0; reward keys and negative text as released)")
