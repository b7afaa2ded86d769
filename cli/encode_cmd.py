"""``miro encode``: write training records (model input, text tokens, raw scores) once, per input shard."""

from __future__ import annotations

import typer

from miro_cli.common import echo, parse_key_values, registry, user_errors

#: Exit code when the records were written but some input could not be read (docs/cli.md).
EXIT_DATA_SKIPPED = 3


def attach(app: typer.Typer) -> None:
    app.command("encode")(encode)


@user_errors
def encode(
    data: str = typer.Argument(..., help="Annotation folder (or bare shards) to encode; local or any fsspec URL."),
    out: str = typer.Option(
        None, "--out", help="Records folder (default: cache/records/<settings> next to the annotations)."
    ),
    autoencoder: str = typer.Option(
        "sdxl-vae", "--autoencoder", help="pixels (small images) or an autoencoder plugin, e.g. sdxl-vae."
    ),
    autoencoder_option: list[str] = typer.Option(
        [], "--autoencoder-option", help="KEY=VALUE option of the autoencoder (repeatable), e.g. checkpoint=DIR."
    ),
    image_size: int = typer.Option(
        256, "--image-size", min=1, max=16384, help="Images are resized and centre-cropped to it."
    ),
    text_encoder: str = typer.Option("minilm", "--text-encoder", help="Text encoder plugin, e.g. t5, clip-text."),
    text_encoder_option: list[str] = typer.Option(
        [], "--text-encoder-option", help="KEY=VALUE option of the text encoder (repeatable), e.g. max_length=64."
    ),
    batch_size: int = typer.Option(64, "--batch-size", min=1, max=65536),
    workers: int = typer.Option(
        2, "--workers", min=0, max=256, help="DataLoader processes decoding and resizing images."
    ),
    device: str = typer.Option("cpu", "--device", help="Where the autoencoder and text encoder run (cpu, cuda)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Encode every input shard into a records shard; resumable, split across `accelerate launch` processes."""
    import os

    from miro_cli.common import distributed_rank, parse_yaml_values
    from miro_core.encode import EncodeConfig, RecordEncoder

    rank, world = distributed_rank(device)
    if world > 1 and device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"  # one device per launched process
    cfg = EncodeConfig(
        data=data,
        out=out,
        autoencoder=autoencoder,
        autoencoder_options=parse_key_values(autoencoder_option, "--autoencoder-option"),
        image_size=image_size,
        text_encoder=text_encoder,
        text_encoder_options=parse_yaml_values(text_encoder_option, "--text-encoder-option"),
        batch_size=batch_size,
        workers=workers,
        device=device,
    )
    barrier = _barrier(device) if world > 1 else (lambda: None)
    progress = not quiet and not os.environ.get("MIRO_NO_PROGRESS")
    encoder = RecordEncoder(cfg, registry(), progress=progress, rank=rank, world_size=world, barrier=barrier)
    folder = encoder.run()
    summary = encoder.summary.as_json()
    prefix = f"[rank {rank}] " if world > 1 else ""
    waited = 100 * (summary["device_wait_share"] or 0)
    echo(
        f"{prefix}encoded {summary['shards_written']} shard(s), skipped {summary['shards_skipped']} already done; "
        f"{summary['samples']} samples ({summary['skipped']} skipped: undecodable, no caption, a repeated key "
        "or not in its shard) in "
        f"{summary['wall_seconds']:.1f}s: {summary['images_per_second'] or 0:.1f} images/s, device waited "
        f"{waited:.0f}% of the time; records in {folder}"
    )
    unreadable = summary["unreadable_shards"]
    if unreadable and rank == 0:
        from rich.markup import escape

        from miro_cli.common import console

        names = ", ".join(list(unreadable)[:5]) + (" ..." if len(unreadable) > 5 else "")
        console.print(
            "[yellow]warning:[/] " + escape(
                f"{len(unreadable)} input shard(s) could not be read to the end ({names}); their records hold the "
                f"samples before the fault, the reasons are in {folder}/summary.json (`unreadable_shards`). After "
                "repairing a shard, delete its records shard (shards/NAME.*) and rerun"
            ),
            highlight=False, soft_wrap=True,
        )
        raise typer.Exit(EXIT_DATA_SKIPPED)


def _barrier(device: str):  # noqa: ANN202 - a plain callable
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu" or not torch.cuda.is_available())
    return state.wait_for_everyone
