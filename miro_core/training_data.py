"""Training data in memory: images (or latents), cached caption embeddings and reward levels.

Reads only what earlier stages wrote: the annotation tables (keys, shards, captions, scores), the
shards (images) and the bins file. Caption embeddings are computed once per unique caption and cached
next to the annotations (``cache/text-<encoder>-<hash>.safetensors``), so the text encoder never runs
in the training loop. Everything is held in memory, which suits the shapes world and datasets up to a
few hundred thousand small images; larger sets should be encoded to latents first.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from miro_core.errors import DataError


@dataclass
class TrainingData:
    """Aligned arrays, one row per usable sample."""

    keys: list[str]
    images: torch.Tensor  # (N, C, H, W) uint8 pixels, or float latents
    caption_index: torch.Tensor  # (N,) index into text_tokens
    text_tokens: torch.Tensor  # (U, L, D) float16, row 0 is the empty caption
    text_mask: torch.Tensor  # (U, L) bool
    levels: torch.Tensor | None  # (N, R) float32 in [0, 1], NaN = missing
    reward_keys: list[str]
    captions: list[str]  # unique captions, aligned with text_tokens
    #: For latents: the autoencoder that decodes them (name, options, image size, latent shape, statistics).
    autoencoder: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def x0(self, index: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (pixels) or latents for a batch of row indices."""
        batch = self.images[index]
        if batch.dtype == torch.uint8:
            return batch.float() / 127.5 - 1.0
        return batch.float()


def load_rows(data: str) -> dict[str, Any]:
    """Keys, shards, captions and score columns from an annotation folder (or bare shards)."""
    from miro_core.bins import read_annotations

    if (Path(data) / "scores").is_dir():
        return read_annotations(data)
    from miro_core.data.shards import iter_shard, list_shards

    keys: list[str] = []
    shards: list[str] = []
    captions: list[str] = []
    for shard in list_shards(data):
        for raw in iter_shard(shard):
            if raw.image_bytes is None or not (raw.caption or "").strip():
                continue
            keys.append(raw.key)
            shards.append(shard)
            captions.append(raw.caption.strip())
    if not keys:
        raise DataError(f"{data} holds no annotation tables and no usable shards")
    return {"keys": keys, "shards": shards, "captions": captions, "scores": {}}


def load_images(keys: list[str], shards: list[str], image_size: int) -> tuple[torch.Tensor, list[bool]]:
    """Decode the wanted samples shard by shard into a uint8 tensor; returns also which decoded."""
    from PIL import Image

    from miro_core.data.shards import iter_shard

    wanted: dict[str, dict[str, int]] = {}
    for i, (key, shard) in enumerate(zip(keys, shards)):
        wanted.setdefault(shard, {})[key] = i
    out = torch.zeros(len(keys), 3, image_size, image_size, dtype=torch.uint8)
    ok = [False] * len(keys)
    for shard, index in wanted.items():
        for raw in iter_shard(shard):
            i = index.get(raw.key)
            if i is None or raw.image_bytes is None:
                continue
            try:
                image = Image.open(io.BytesIO(raw.image_bytes)).convert("RGB")
            except Exception:  # noqa: BLE001 - annotation already recorded undecodable images
                continue
            if image.size != (image_size, image_size):
                image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
            out[i] = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
            ok[i] = True
    return out, ok


def caption_cache_path(data: str, encoder_name: str, options: dict[str, Any], captions: list[str]) -> Path:
    digest = hashlib.sha256(json.dumps([encoder_name, options, captions], sort_keys=True).encode()).hexdigest()[:16]
    base = Path(data) if Path(data).is_dir() else Path(data).parent
    return base / "cache" / f"text-{encoder_name}-{digest}.safetensors"


def encode_captions(
    captions: list[str], encoder: Any, cache: Path, batch_size: int = 256, progress: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode unique captions once (cached as safetensors, written atomically)."""
    from safetensors.torch import load_file, save_file

    if cache.exists():
        stored = load_file(str(cache))
        return stored["tokens"], stored["mask"].bool()
    from rich.progress import Progress

    encoder.load()
    tokens: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("encoding captions", total=len(captions))
        for start in range(0, len(captions), batch_size):
            chunk = captions[start : start + batch_size]
            t, m = encoder.encode(chunk)
            tokens.append(t.to(torch.float16).cpu())
            masks.append(m.cpu())
            bar.advance(task, len(chunk))
    all_tokens, all_masks = torch.cat(tokens), torch.cat(masks)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    save_file({"tokens": all_tokens.contiguous(), "mask": all_masks.to(torch.uint8).contiguous()}, str(tmp))
    tmp.replace(cache)
    return all_tokens, all_masks


def load_training_data(
    data: str,
    reward_keys: list[str],
    bins: Any,
    encoder: Any,
    encoder_options: dict[str, Any],
    image_size: int,
    progress: bool = True,
    autoencoder: str = "pixels",
    latent_cache: str | None = None,
    autoencoder_options: dict[str, Any] | None = None,
) -> TrainingData:
    """Pixels decoded from the shards, or (``autoencoder`` other than ``pixels``) latents cached by ``miro encode``."""
    rows = load_rows(data)
    missing = [k for k in reward_keys if k not in rows["scores"]]
    if missing:
        raise DataError(
            f"{data} has no score column(s) {', '.join(missing)}; annotate with them or choose --rewards from "
            f"{', '.join(rows['scores']) or 'none'}"
        )
    codec = None
    if autoencoder == "pixels":
        images, ok = load_images(rows["keys"], rows["shards"], image_size)
    else:
        images, ok, codec = _cached_latents(
            data, rows, autoencoder, autoencoder_options or {}, latent_cache, image_size
        )
    keep = [i for i, good in enumerate(ok) if good]
    if not keep:
        raise DataError(f"no decodable images for the annotated samples of {data}")
    captions_all = [rows["captions"][i] for i in keep]
    unique = [""] + sorted(set(captions_all) - {""})
    position = {c: i for i, c in enumerate(unique)}
    tokens, mask = encode_captions(
        unique, encoder, caption_cache_path(data, encoder.name, encoder_options, unique), progress=progress
    )
    levels = None
    if reward_keys:
        columns = [bins.levels(k, rows["scores"][k][keep]) for k in reward_keys]
        levels = torch.from_numpy(np.stack(columns, axis=1).astype(np.float32))
    keep_tensor = torch.tensor(keep, dtype=torch.long)
    return TrainingData(
        keys=[rows["keys"][i] for i in keep],
        images=images[keep_tensor],
        caption_index=torch.tensor([position[c] for c in captions_all], dtype=torch.long),
        text_tokens=tokens,
        text_mask=mask,
        levels=levels,
        reward_keys=list(reward_keys),
        captions=unique,
        autoencoder=codec,
    )


def _cached_latents(
    data: str,
    rows: dict[str, Any],
    autoencoder: str,
    options: dict[str, Any],
    latent_cache: str | None,
    image_size: int,
) -> tuple[torch.Tensor, list[bool], dict[str, Any]]:
    """Latents from the ``miro encode`` cache (float16), which rows have one, and how to decode them."""
    from miro_core.encode import absolute_paths, default_cache_dir, load_latents, read_index

    folder = Path(latent_cache) if latent_cache else default_cache_dir(data, autoencoder, image_size)
    index = read_index(folder, data, autoencoder, image_size)
    hint = f"`miro encode {data} --autoencoder {autoencoder} --image-size {image_size} --out {folder}`"
    encoded_with = index["autoencoder"]["options"]
    options = absolute_paths(options)
    differ = [k for k, v in options.items() if k != "statistics" and str(encoded_with.get(k)) != str(v)]
    if differ:
        raise DataError(
            f"the latent cache at {folder} was encoded with {autoencoder} options {encoded_with}, but training asks "
            f"for {', '.join(f'{k}={options[k]}' for k in differ)}; re-encode with {hint} or drop those options"
        )
    latents, ok = load_latents(folder, index, rows["keys"], rows["shards"], hint)
    codec = {
        "name": autoencoder,
        "options": {**encoded_with, **options},
        "image_size": image_size,
        "latent_shape": index["latent_shape"],
        "statistics": index.get("statistics"),
        "latent_cache": str(folder),
    }
    return latents, ok, codec
