"""``miro backbones``: every installed backbone size with its counted parameters and forward GFLOPs."""

from __future__ import annotations

import json

import typer

from miro_cli.common import echo, registry, user_errors
from miro_core.errors import ConfigError


def attach(app: typer.Typer) -> None:
    app.command("backbones")(backbones)


@user_errors
def backbones(
    names: list[str] | None = typer.Argument(
        None, help="Backbones or sizes to show (dit, dit-xl/2, rin-miro); all installed if omitted."
    ),
    image_size: int = typer.Option(
        32, "--image-size", min=1, max=65536,
        help="Side of the backbone's input (the latent side for VAE latents: 32 for 256px SDXL)."
    ),
    channels: int = typer.Option(
        4, "--channels", min=1, max=65536, help="Input channels (4 for SDXL VAE latents, 3 for pixels)."
    ),
    cond_dim: int = typer.Option(
        1024, "--cond-dim", min=1, max=65536, help="Width of the conditioning tokens and pooled vector."
    ),
    cond_len: int = typer.Option(
        55, "--cond-len", min=1, max=65536,
        help="Conditioning tokens per image (default: 7 rewards + 16 registers + 32 text tokens)."
    ),
    flops: bool = typer.Option(True, "--flops/--no-flops", help="Count forward FLOPs (a meta-device forward pass)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """Count each backbone size's parameters and forward GFLOPs per image (2 FLOPs per multiply-add).

    Networks are built on PyTorch's meta device, so even billion-parameter sizes are counted in a moment.
    """
    from miro_core.backbone import BackboneSpec, parse_backbone_name
    from miro_core.model_stats import backbone_stats

    known = registry().backbones.as_dict()
    selected: list[tuple[str, dict]] = []
    for text in names or sorted(known):
        name, options = parse_backbone_name(text, known)
        sizes = [options["size"]] if "size" in options else list(known[name].sizes)
        for size in sizes:
            selected.append((name, {**options, "size": size}))

    spec = BackboneSpec(in_channels=channels, image_size=image_size, cond_dim=cond_dim)
    rows = []
    for name, options in selected:
        backbone = known[name](options)
        try:
            stats = backbone_stats(backbone, spec, cond_len=cond_len, flops=flops)
        except ValueError as err:  # the backbone's own check of the shape (a patch size that does not divide it)
            raise ConfigError(f"{name} size {options['size']}: {err} (--image-size {image_size})") from None
        rows.append(stats.as_json())

    if as_json:
        echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    title = f"miro backbones at {channels}x{image_size}x{image_size} input, {cond_len} x {cond_dim} conditioning"
    table = Table(title=title)
    for column in ("backbone", "size", "patch", "parameters", "GFLOPs/image", "rewards enter as", "counted on"):
        table.add_column(column, justify="right" if column in {"parameters", "GFLOPs/image", "patch"} else "left")
    for row in rows:
        gflops = "-" if row["gflops"] is None else f"{row['gflops']:.2f}"
        patch = "-" if row["patch_size"] is None else str(row["patch_size"])
        table.add_row(
            row["backbone"],
            row["size"],
            patch,
            f"{row['parameters'] / 1e6:,.1f}M",
            gflops,
            " + ".join(row["reward_conditioning"]),
            row["device"],
        )
    Console().print(table)
