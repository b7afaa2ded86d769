"""``miro encode``: cache image latents per shard with an autoencoder plugin.

The autoencoder runs once, here, and never in the training loop. For every shard referenced by the
annotation tables (or every shard of a bare dataset) one ``<shard>.safetensors`` file holds the
latents ``(N, C, h, w)`` (float16) of its usable samples, with their keys in the file's metadata. Files
are written to a temporary name and renamed, so an interrupted run resumes by skipping finished shards.

``index.json`` in the cache folder records the autoencoder (name and the options that decode these
latents, including a fitted statistics file), the image size, the latent shape, the shards and the
per-channel mean/std of the cached latents. Autoencoders with a ``fit_statistics`` method (``sdxl-vae``)
get per-channel normalisation statistics fitted on a sample of the images first, unless the user gave
a ``statistics`` option.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict

from miro_core.errors import ConfigError, DataError

INDEX_FILENAME = "index.json"
STATISTICS_FILENAME = "latent_statistics.json"
FORMAT = "miro-latents"


class EncodeConfig(BaseModel):
    """Options of ``miro encode``."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    data: str
    autoencoder: str = "sdxl-vae"
    autoencoder_options: dict[str, Any] = {}
    image_size: int = 256
    batch_size: int = 16
    device: str = "cpu"
    out: str | None = None
    #: Images used to fit the normalisation statistics when the autoencoder supports it and none are given.
    statistics_images: int = 512


#: Options whose local paths are recorded absolute, so a run folder decodes from any working directory.
PATH_OPTIONS = ("checkpoint", "statistics")


def absolute_paths(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with existing local ``checkpoint``/``statistics`` paths made absolute."""
    out = dict(options)
    for key in PATH_OPTIONS:
        value = out.get(key)
        if isinstance(value, str) and value and Path(value).expanduser().exists():
            out[key] = str(Path(value).expanduser().resolve())
    return out


def default_cache_dir(data: str, autoencoder: str, image_size: int) -> Path:
    """``cache/latents/<autoencoder>-<size>`` next to the annotations (as the caption cache)."""
    base = Path(data) if Path(data).is_dir() else Path(data).parent
    return base / "cache" / "latents" / f"{autoencoder.replace('/', '_')}-{image_size}"


def shard_file(shard: str) -> str:
    """File name of a shard's latents: its stem plus a short hash of its full URL (no collisions)."""
    from miro_core.data.shards import shard_name

    digest = hashlib.sha256(shard.encode()).hexdigest()[:8]
    return f"{shard_name(shard)}-{digest}.safetensors"


def prepare_image(payload: bytes, image_size: int) -> torch.Tensor:
    """Decode, resize the short side to ``image_size``, centre-crop, and scale to [-1, 1]: ``(3, S, S)``."""
    import numpy as np
    from PIL import Image

    image = Image.open(io.BytesIO(payload)).convert("RGB")
    width, height = image.size
    scale = image_size / min(width, height)
    new_w, new_h = max(image_size, round(width * scale)), max(image_size, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - image_size) // 2, (new_h - image_size) // 2
    image = image.crop((left, top, left + image_size, top + image_size))
    array = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
    return array.float() / 127.5 - 1.0


def group_by_shard(rows: dict[str, Any]) -> dict[str, set[str]]:
    """The wanted keys of every shard, shards in order of first appearance."""
    wanted: dict[str, set[str]] = {}
    for key, shard in zip(rows["keys"], rows["shards"]):
        wanted.setdefault(shard, set()).add(key)
    return wanted


def iter_images(shard: str, keys: set[str], image_size: int) -> Iterator[tuple[str, torch.Tensor]]:
    """``(key, image)`` for the wanted, decodable samples of one shard."""
    from miro_core.data.shards import iter_shard

    for raw in iter_shard(shard):
        if raw.key not in keys or raw.image_bytes is None:
            continue
        try:
            yield raw.key, prepare_image(raw.image_bytes, image_size)
        except Exception:  # noqa: BLE001 - annotation already recorded undecodable images
            continue


def _batches(items: Iterator[tuple[str, torch.Tensor]], size: int) -> Iterator[tuple[list[str], torch.Tensor]]:
    keys: list[str] = []
    images: list[torch.Tensor] = []
    for key, image in items:
        keys.append(key)
        images.append(image)
        if len(keys) == size:
            yield keys, torch.stack(images)
            keys, images = [], []
    if keys:
        yield keys, torch.stack(images)


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


class LatentEncoder:
    """One ``miro encode`` run; ``run()`` returns the cache folder."""

    def __init__(self, cfg: EncodeConfig, registry: Any, progress: bool = True) -> None:
        if cfg.autoencoder == "pixels":
            raise ConfigError("--autoencoder pixels needs no cache: train on pixels directly (autoencoder: pixels)")
        if cfg.image_size < 1 or cfg.batch_size < 1:
            raise ConfigError("--image-size and --batch-size must be positive")
        if cfg.autoencoder not in registry.autoencoders:
            names = ", ".join(registry.autoencoders.names())
            raise ConfigError(f"unknown autoencoder {cfg.autoencoder!r}; installed: {names}")
        self.cfg = cfg.model_copy(update={"autoencoder_options": absolute_paths(cfg.autoencoder_options)})
        self.registry = registry
        self.show_progress = progress
        self.out = Path(cfg.out) if cfg.out else default_cache_dir(cfg.data, cfg.autoencoder, cfg.image_size)
        self.written: list[str] = []
        self.skipped: list[str] = []

    # -- setup ------------------------------------------------------------------------------------
    def _previous_index(self) -> dict[str, Any] | None:
        path = self.out / INDEX_FILENAME
        if not path.exists():
            return None
        index = json.loads(path.read_text())
        cfg = self.cfg
        if index.get("format") != FORMAT:
            raise ConfigError(f"{path} is not a latent cache index; choose another --out")
        previous = index.get("autoencoder", {})
        given = {k: v for k, v in previous.get("options", {}).items() if k in cfg.autoencoder_options}
        if (
            previous.get("name") != cfg.autoencoder
            or index.get("image_size") != cfg.image_size
            or any(str(given.get(k)) != str(v) for k, v in cfg.autoencoder_options.items() if k != "statistics")
        ):
            raise ConfigError(
                f"{self.out} holds latents of {previous.get('name')} at {index.get('image_size')}px with options "
                f"{previous.get('options')}; choose another --out to encode with different settings"
            )
        return index

    def _autoencoder(self, rows: dict[str, Any], previous: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
        """The loaded autoencoder and the options that reproduce it (with fitted statistics, if any)."""
        cfg = self.cfg
        options = dict(cfg.autoencoder_options)
        cls = self.registry.autoencoders.get(cfg.autoencoder)
        fits = hasattr(cls, "fit_statistics") and "statistics" in cls.Options.model_fields
        stats_path = self.out / STATISTICS_FILENAME
        if fits and not options.get("statistics"):
            if previous is not None and previous["autoencoder"]["options"].get("statistics"):
                options["statistics"] = previous["autoencoder"]["options"]["statistics"]
            elif stats_path.exists():
                options["statistics"] = str(stats_path.resolve())
        autoencoder = self.registry.autoencoders.create(cfg.autoencoder, options)
        autoencoder.load(cfg.device)
        if fits and not options.get("statistics"):
            self.out.mkdir(parents=True, exist_ok=True)
            sample = self._sample_images(rows)
            autoencoder.fit_statistics(sample, stats_path)
            options["statistics"] = str(stats_path.resolve())
        return autoencoder, options

    def _sample_images(self, rows: dict[str, Any]) -> Iterator[torch.Tensor]:
        """Up to ``statistics_images`` images, in batches, taken shard by shard."""
        cfg = self.cfg
        left = cfg.statistics_images
        for shard, keys in group_by_shard(rows).items():
            for _, images in _batches(iter_images(shard, keys, cfg.image_size), cfg.batch_size):
                images = images[:left]
                left -= images.shape[0]
                yield images
                if left <= 0:
                    return

    # -- run --------------------------------------------------------------------------------------
    def run(self) -> Path:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        from safetensors.torch import save_file

        from miro_core.training_data import load_rows

        cfg = self.cfg
        rows = load_rows(cfg.data)
        previous = self._previous_index()
        wanted = group_by_shard(rows)
        self.out.mkdir(parents=True, exist_ok=True)
        autoencoder, options = self._autoencoder(rows, previous)
        channels, size = autoencoder.latent_shape(cfg.image_size)
        shards_info: dict[str, Any] = dict(previous.get("shards", {})) if previous else {}
        todo = [s for s in wanted if not (self.out / shard_file(s)).exists()]
        self.skipped = [s for s in wanted if s not in todo]
        index: dict[str, Any] = {
            "format": FORMAT,
            "autoencoder": {"name": cfg.autoencoder, "version": autoencoder.version, "options": options},
            "image_size": cfg.image_size,
            "latent_shape": [channels, size, size],
            "dtype": "float16",
            "statistics": getattr(autoencoder, "statistics", None),
            "shards": shards_info,
        }
        _write_json_atomic(self.out / INDEX_FILENAME, {**index, "complete": False})
        progress = Progress(
            TextColumn("[bold]encoding"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), disable=not self.show_progress,
        )
        with progress:
            total = sum(len(wanted[s]) for s in todo)
            task = progress.add_task("encode", total=total, info=f"{len(self.skipped)} shard(s) already done")
            for shard in todo:
                keys: list[str] = []
                latents: list[torch.Tensor] = []
                for batch_keys, images in _batches(iter_images(shard, wanted[shard], cfg.image_size), cfg.batch_size):
                    with torch.no_grad():
                        z = autoencoder.encode(images)
                    expected = (channels, size, size)
                    if tuple(z.shape[1:]) != expected:
                        raise DataError(f"{cfg.autoencoder} returned latents {tuple(z.shape[1:])}, expected {expected}")
                    keys += batch_keys
                    latents.append(z.detach().to("cpu", torch.float16))
                    progress.advance(task, len(batch_keys))
                stacked = torch.cat(latents) if latents else torch.zeros(0, channels, size, size, dtype=torch.float16)
                target = self.out / shard_file(shard)
                tmp = target.with_name(target.name + ".tmp")
                metadata = {"shard": shard, "keys": json.dumps(keys)}
                save_file({"latents": stacked.contiguous()}, str(tmp), metadata=metadata)
                tmp.replace(target)
                shards_info[shard] = {"file": target.name, "samples": len(keys)}
                self.written.append(shard)
                progress.update(task, info=f"{shard_file(shard)}: {len(keys)} latents")
        for shard in self.skipped:
            shards_info.setdefault(shard, {"file": shard_file(shard), "samples": None})
        index["shards"] = {s: shards_info[s] for s in wanted}
        index.update(channel_statistics(self.out, index["shards"], channels))
        index["complete"] = True
        _write_json_atomic(self.out / INDEX_FILENAME, index)
        self.index = index
        return self.out


def channel_statistics(folder: Path, shards: dict[str, Any], channels: int) -> dict[str, Any]:
    """Per-channel mean and std of every cached latent (what the backbone sees as x0)."""
    from safetensors import safe_open

    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    count = 0
    samples = 0
    for info in shards.values():
        with safe_open(str(folder / info["file"]), framework="pt") as handle:
            latents = handle.get_tensor("latents").double()
            info["samples"] = int(latents.shape[0])
        per_channel = latents.transpose(0, 1).reshape(channels, -1)
        total += per_channel.sum(1)
        total_sq += per_channel.square().sum(1)
        count += per_channel.shape[1]
        samples += latents.shape[0]
    if count == 0:
        raise DataError(f"no decodable images were encoded into {folder}")
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0.0).sqrt()
    return {"samples": samples, "channel_mean": [float(v) for v in mean], "channel_std": [float(v) for v in std]}


def read_index(folder: Path, data: str, autoencoder: str, image_size: int) -> dict[str, Any]:
    """The cache index, or a DataError telling the user to run ``miro encode`` first."""
    command = f"`miro encode {data} --autoencoder {autoencoder} --image-size {image_size}`"
    path = folder / INDEX_FILENAME
    if not path.exists():
        raise DataError(f"no latent cache at {folder} (no {INDEX_FILENAME}); run {command} first")
    index = json.loads(path.read_text())
    if index.get("format") != FORMAT:
        raise DataError(f"{path} is not a latent cache index written by `miro encode`")
    if index["autoencoder"]["name"] != autoencoder or int(index["image_size"]) != image_size:
        raise DataError(
            f"the latent cache at {folder} holds {index['autoencoder']['name']} latents of {index['image_size']}px "
            f"images, but training asks for {autoencoder} at {image_size}px; run {command} or fix latent_cache"
        )
    if not index.get("complete"):
        raise DataError(f"the latent cache at {folder} is unfinished; run {command} again to complete it")
    return index


def load_latents(
    folder: Path, index: dict[str, Any], keys: list[str], shards: list[str], command_hint: str
) -> tuple[torch.Tensor, list[bool]]:
    """Latents aligned with ``keys`` (zeros where absent) and which rows were found in the cache."""
    from safetensors import safe_open

    channels, size, _ = index["latent_shape"]
    out = torch.zeros(len(keys), channels, size, size, dtype=torch.float16)
    ok = [False] * len(keys)
    wanted: dict[str, dict[str, int]] = {}
    for i, (key, shard) in enumerate(zip(keys, shards)):
        wanted.setdefault(shard, {})[key] = i
    for shard, positions in wanted.items():
        info = index["shards"].get(shard)
        if info is None or not (folder / info["file"]).exists():
            raise DataError(f"the latent cache at {folder} has no latents for shard {shard}; run {command_hint}")
        with safe_open(str(folder / info["file"]), framework="pt") as handle:
            stored_keys = json.loads(handle.metadata()["keys"])
            latents = handle.get_tensor("latents")
        for j, key in enumerate(stored_keys):
            i = positions.get(key)
            if i is not None:
                out[i] = latents[j]
                ok[i] = True
    return out, ok
