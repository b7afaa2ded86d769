"""Labelled image grids (PNG), for sample milestones, ``miro sample`` and the demo report."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """``(B, 3, H, W)`` in [-1, 1] -> PIL images, rounded to uint8 (as rewards expect)."""
    array = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a.permute(1, 2, 0).cpu().numpy()) for a in array]


def make_grid(
    images: Sequence[Image.Image],
    columns: int,
    labels: Sequence[str] | None = None,
    scale: int = 4,
    label_height: int = 12,
) -> Image.Image:
    """Tile images (upscaled ``scale`` times, nearest) with an optional label under each row."""
    if not images:
        raise ValueError("no images for the grid")
    w, h = images[0].size
    cell_w, cell_h = w * scale, h * scale
    rows = -(-len(images) // columns)
    extra = label_height if labels else 0
    grid = Image.new("RGB", (columns * cell_w, rows * (cell_h + extra)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        tile = image.convert("RGB").resize((cell_w, cell_h), Image.Resampling.NEAREST)
        grid.paste(tile, (c * cell_w, r * (cell_h + extra)))
    if labels:
        for r, label in enumerate(labels[:rows]):
            draw.text((2, r * (cell_h + extra) + cell_h), label[: columns * cell_w // 6], fill=(0, 0, 0))
    return grid


def stack_grid(grids: Sequence[Image.Image], titles: Sequence[str], title_height: int = 14) -> Image.Image:
    """Stack grids vertically, each under a title line."""
    width = max(g.width for g in grids)
    height = sum(g.height + title_height for g in grids)
    out = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    y = 0
    for grid, title in zip(grids, titles):
        draw.text((2, y + 1), title, fill=(0, 0, 0))
        out.paste(grid, (0, y + title_height))
        y += grid.height + title_height
    return out
