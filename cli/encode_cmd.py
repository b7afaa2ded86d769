"""``miro encode``: cache image latents per shard with an autoencoder, so training never runs the VAE."""

from __future__ import annotations

import typer

from miro_cli.common import echo, parse_key_values, registry, user_errors


def attach(app: typer.Typer) -> None:
    app.command("encode")(encode)


@user_errors
def encode(
    data: str = typer.Argument(..., help="Annotation folder (or shards) whose images to encode."),
    autoencoder: str = typer.Option("sdxl-vae", "--autoencoder", help="Autoencoder plugin, e.g. sdxl-vae."),
    autoencoder_option: list[str] = typer.Option(
        [], "--autoencoder-option", help="KEY=VALUE option of the autoencoder (repeatable), e.g. checkpoint=DIR."
    ),
    image_size: int = typer.Option(256, "--image-size", min=1, help="Images are resized and centre-cropped to it."),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    device: str = typer.Option("cpu", "--device", help="Where the autoencoder runs (cpu, cuda, ...)."),
    out: str = typer.Option(
        None, "--out", help="Cache folder (default: cache/latents/<autoencoder>-<size> next to the annotations)."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Encode every shard's images to latents (one safetensors file per shard); resumable."""
    import os

    from miro_core.encode import EncodeConfig, LatentEncoder

    cfg = EncodeConfig(
        data=data,
        autoencoder=autoencoder,
        autoencoder_options=parse_key_values(autoencoder_option, "--autoencoder-option"),
        image_size=image_size,
        batch_size=batch_size,
        device=device,
        out=out,
    )
    progress = not quiet and not os.environ.get("MIRO_NO_PROGRESS")
    encoder = LatentEncoder(cfg, registry(), progress=progress)
    folder = encoder.run()
    index = encoder.index
    shape = "x".join(str(v) for v in index["latent_shape"])
    echo(
        f"encoded {len(encoder.written)} shard(s), skipped {len(encoder.skipped)} already done; "
        f"{index['samples']} latents of shape {shape} in {folder}"
    )
