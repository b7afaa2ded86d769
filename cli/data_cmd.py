"""``miro data shapes``: write the offline shapes-world dataset as webdataset shards."""

from __future__ import annotations

import typer

from miro_cli.common import echo, user_errors

data_app = typer.Typer(help="Create datasets.", no_args_is_help=True)


def attach(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


@data_app.command("shapes")
@user_errors
def shapes(
    out: str = typer.Option(..., "--out", help="Folder or fsspec URL for the shards."),
    n: int = typer.Option(2000, "--n", min=1, max=10**9, help="Number of samples."),
    seed: int = typer.Option(
        0, "--seed", min=0, max=2**63 - 1, help="Random seed; the same seed gives the same dataset."
    ),
    image_size: int = typer.Option(32, "--image-size", min=8, max=4096, help="Square image size in pixels."),
    samples_per_shard: int = typer.Option(500, "--samples-per-shard", min=1, max=10**7),
    degraded_fraction: float = typer.Option(0.5, "--degraded-fraction", min=0.0, max=1.0),
    mismatched_fraction: float = typer.Option(0.2, "--mismatched-fraction", min=0.0, max=1.0),
    max_objects: int = typer.Option(4, "--max-objects", min=1, max=6, help="Most objects in one image."),
) -> None:
    """Generate the shapes world: coloured shapes, captions, degradations and mismatched captions."""
    from miro_core.shapes.dataset import write_shapes_dataset

    summary = write_shapes_dataset(
        out,
        n=n,
        seed=seed,
        image_size=image_size,
        samples_per_shard=samples_per_shard,
        degraded_fraction=degraded_fraction,
        mismatched_fraction=mismatched_fraction,
        max_objects=max_objects,
    )
    echo(f"wrote {summary['samples']} samples in {len(summary['shards'])} shards to {out}")
