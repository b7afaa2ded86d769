"""``sdxl-vae``: the SDXL VAE (diffusers ``AutoencoderKL``) with channel-wise latent normalisation.

Weights come from a local folder in diffusers layout (``config.json`` + ``diffusion_pytorch_model.safetensors``)
or from the local Hugging Face cache (never the network). Latents are normalised per channel with statistics
fitted on the training images (:meth:`SDXLVAE.fit_statistics`, saved as a small JSON file); without them the
VAE config's ``scaling_factor`` (and ``shift_factor``) is used, as diffusers pipelines do.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from miro_core.autoencoder import Autoencoder, AutoencoderOptions
from miro_core.component import ComponentOptions
from miro_core.errors import ConfigError, DataError, MiroError, MissingWeightsError

if TYPE_CHECKING:
    import torch

DEFAULT_REPO = "stabilityai/sdxl-vae"
REQUIRED_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
#: File name used when ``fit_statistics`` is given a folder.
STATISTICS_FILENAME = "latent_statistics.json"
#: SDXL VAE geometry, used by ``latent_shape`` before the weights are loaded.
SDXL_LATENT_CHANNELS = 4
SDXL_DOWNSAMPLING = 8


class SDXLVAEOptions(AutoencoderOptions):
    #: Local folder (diffusers layout) or a Hugging Face repo id looked up in the local cache only.
    checkpoint: str | None = DEFAULT_REPO
    #: Folder inside the checkpoint holding the VAE, e.g. "vae" for a full SDXL pipeline folder.
    subfolder: str | None = None
    #: JSON file written by ``fit_statistics``, or the statistics themselves (``{mean: [...], std: [...]}``,
    #: e.g. a released MIRO checkpoint's fixed ones); null uses the config's scaling_factor/shift_factor.
    statistics: str | dict[str, Any] | None = None
    #: Encode with a posterior sample (true) or its mean (false).
    sample_posterior: bool = False


def _missing(what: str, folder: str | None = None, files: Iterable[str] = REQUIRED_FILES) -> MissingWeightsError:
    listed = ", ".join(files)
    where = f" in {folder}" if folder else ""
    return MissingWeightsError(
        f"sdxl-vae: {what}. Needed{where}: {listed}. Get them on a machine with network access, e.g. "
        f"`hf download {DEFAULT_REPO} {' '.join(REQUIRED_FILES)} --local-dir <folder>`, copy the folder here "
        "and pass it as the autoencoder option checkpoint=<folder> (or fill the local Hugging Face cache)"
    )


def resolve_checkpoint(checkpoint: str, subfolder: str | None = None) -> Path:
    """The local folder holding config.json and the safetensors weights, or a MissingWeightsError."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        folder = path / subfolder if subfolder else path
    elif path.exists():
        raise ConfigError(f"sdxl-vae: checkpoint {checkpoint!r} is a file; give the folder that holds it")
    elif checkpoint.count("/") == 1 and not checkpoint.startswith((".", "/", "~")):
        from huggingface_hub import snapshot_download

        try:
            snapshot = snapshot_download(checkpoint, local_files_only=True)
        except Exception as err:  # noqa: BLE001 - any cache miss is the same missing-weights problem
            raise _missing(f"{checkpoint!r} is not in the local Hugging Face cache ({type(err).__name__})") from None
        folder = Path(str(snapshot)) / subfolder if subfolder else Path(str(snapshot))
    else:
        raise _missing(f"checkpoint folder {checkpoint!r} does not exist")
    absent = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if absent:
        raise _missing(f"{folder} lacks {', '.join(absent)}", str(folder))
    return folder


class SDXLVAE(Autoencoder):
    """SDXL's KL autoencoder: 256x256x3 images <-> 32x32x4 latents (8x downsampling)."""

    name = "sdxl-vae"
    version = "1"
    description = "SDXL VAE (diffusers AutoencoderKL, local weights) with per-channel latent normalisation"
    Options: ClassVar[type[ComponentOptions]] = SDXLVAEOptions

    def __init__(self, options: ComponentOptions | dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.vae: Any = None
        self.folder: Path | None = None
        #: ``{"mean": [...], "std": [...], ...}`` per latent channel, or None.
        self.statistics: dict[str, Any] | None = None
        if isinstance(self.options.statistics, dict):
            self.statistics = check_statistics(dict(self.options.statistics), "the statistics option")
        elif self.options.statistics:
            self.statistics = load_statistics(self.options.statistics)

    # -- loading ---------------------------------------------------------------------------------------------
    def load(self, device: str = "cpu", dtype: str = "float32") -> None:
        import torch
        from diffusers import AutoencoderKL

        if not self.options.checkpoint:
            raise _missing("no checkpoint given")
        folder = resolve_checkpoint(self.options.checkpoint, self.options.subfolder)
        try:
            torch_dtype = getattr(torch, dtype)
        except AttributeError:
            raise ConfigError(f"sdxl-vae: unknown dtype {dtype!r}") from None
        try:
            vae = AutoencoderKL.from_pretrained(
                str(folder), local_files_only=True, use_safetensors=True, torch_dtype=torch_dtype
            )
        except (OSError, ValueError) as err:
            raise _missing(f"could not load AutoencoderKL from {folder}: {err}", str(folder)) from None
        vae.requires_grad_(False)
        self.vae = vae.to(device).eval()
        self.folder = folder
        if self.statistics is not None:
            self._check_statistics(self.statistics)

    def _require(self) -> Any:
        if self.vae is None:
            raise MiroError("sdxl-vae: call load() before encode/decode")
        return self.vae

    # -- geometry --------------------------------------------------------------------------------------------
    def _geometry(self) -> tuple[int, int]:
        config: dict[str, Any] | None = None
        if self.vae is not None:
            config = dict(self.vae.config)
        elif self.options.checkpoint and Path(self.options.checkpoint).expanduser().is_dir():
            folder = Path(self.options.checkpoint).expanduser() / (self.options.subfolder or "")
            if (folder / "config.json").is_file():
                config = json.loads((folder / "config.json").read_text())
        if config is None:
            return SDXL_LATENT_CHANNELS, SDXL_DOWNSAMPLING
        return int(config["latent_channels"]), 2 ** (len(config["block_out_channels"]) - 1)

    def latent_shape(self, image_size: int, channels: int = 3) -> tuple[int, int]:
        latent_channels, factor = self._geometry()
        if image_size % factor:
            raise ConfigError(f"sdxl-vae: image size {image_size} is not a multiple of the VAE's downsampling {factor}")
        return latent_channels, image_size // factor

    # -- raw latents -----------------------------------------------------------------------------------------
    def encode_raw(self, images: torch.Tensor) -> torch.Tensor:
        """Un-normalised VAE latents of ``(B, 3, H, W)`` images in [-1, 1]."""
        import torch

        vae = self._require()
        param = next(vae.parameters())
        with torch.no_grad():
            posterior = vae.encode(images.to(param.device, param.dtype)).latent_dist
            latents = posterior.sample() if self.options.sample_posterior else posterior.mode()
        return latents.float()

    # -- normalisation ---------------------------------------------------------------------------------------
    def _scale_shift(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``(mean, std)`` as ``(1, C, 1, 1)`` tensors such that normalised = (z - mean) / std."""
        import torch

        if self.statistics is not None:
            mean = torch.tensor(self.statistics["mean"], dtype=latents.dtype, device=latents.device)
            std = torch.tensor(self.statistics["std"], dtype=latents.dtype, device=latents.device)
        else:
            config = self._require().config
            channels = latents.shape[1]
            shift = float(config.get("shift_factor") or 0.0)
            mean = torch.full((channels,), shift, dtype=latents.dtype, device=latents.device)
            std = torch.full(
                (channels,), 1.0 / float(config["scaling_factor"]), dtype=latents.dtype, device=latents.device
            )
        return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        latents = self.encode_raw(images)
        mean, std = self._scale_shift(latents)
        return (latents - mean) / std

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        import torch

        vae = self._require()
        latents = latents.float()
        # z = (x - bias) / scale with scale = 1 / std and bias = -mean / std rounded to float32: the map
        # x * std + mean, computed as the released MIRO pipeline computes it, so that its truncated uint8
        # images come out bit for bit (x * std + mean flips the odd pixel by one level).
        mean, std = self._scale_shift(latents.double())
        scale, bias = (1.0 / std).to(latents.dtype), (-mean / std).to(latents.dtype)
        param = next(vae.parameters())
        with torch.no_grad():
            images = vae.decode(((latents - bias) / scale).to(param.device, param.dtype)).sample
        return images.float().clamp(-1.0, 1.0)

    # -- statistics ------------------------------------------------------------------------------------------
    def fit_statistics(
        self, images_iter: Iterable[torch.Tensor], path: str | Path | None = None, max_batches: int | None = None
    ) -> dict[str, Any]:
        """Per-channel mean/std of the raw latents of ``images_iter`` (batches ``(B, 3, H, W)`` in [-1, 1]).

        The statistics are used by ``encode``/``decode`` from then on; with ``path`` they are also written as
        JSON (a folder gets ``latent_statistics.json``) and the written path is returned under ``"path"``.
        """
        import torch

        total: torch.Tensor | None = None
        total_sq: torch.Tensor | None = None
        count = 0
        images_seen = 0
        for index, images in enumerate(images_iter):
            if max_batches is not None and index >= max_batches:
                break
            if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
                raise DataError("sdxl-vae: fit_statistics expects batches of images shaped (B, 3, H, W)")
            latents = self.encode_raw(images).double()
            per_channel = latents.transpose(0, 1).reshape(latents.shape[1], -1)
            total = per_channel.sum(1) if total is None else total + per_channel.sum(1)
            total_sq = per_channel.square().sum(1) if total_sq is None else total_sq + per_channel.square().sum(1)
            count += per_channel.shape[1]
            images_seen += images.shape[0]
        if total is None or total_sq is None or count < 2:
            raise DataError("sdxl-vae: fit_statistics got no images")
        mean = total / count
        var = (total_sq / count - mean.square()).clamp_min(0.0) * count / (count - 1)
        statistics: dict[str, Any] = {
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in var.sqrt().clamp_min(1e-6)],
            "images": images_seen,
            "values_per_channel": count,
            "checkpoint": self.options.checkpoint,
            "sample_posterior": self.options.sample_posterior,
            "autoencoder": f"{self.name}@{self.version}",
        }
        self._check_statistics(statistics)
        self.statistics = statistics
        if path is not None:
            target = Path(path)
            if target.is_dir():
                target = target / STATISTICS_FILENAME
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(statistics, indent=2) + "\n")
            statistics = {**statistics, "path": str(target)}
        return statistics

    def _check_statistics(self, statistics: dict[str, Any]) -> None:
        channels, _ = self._geometry()
        if len(statistics["mean"]) != channels or len(statistics["std"]) != channels:
            raise DataError(
                f"sdxl-vae: statistics have {len(statistics['mean'])} channels, the VAE has {channels} latent channels"
            )


def load_statistics(path: str | Path) -> dict[str, Any]:
    """Read a statistics JSON written by :meth:`SDXLVAE.fit_statistics`."""
    file = Path(path).expanduser()
    if file.is_dir():
        file = file / STATISTICS_FILENAME
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise DataError(f"sdxl-vae: statistics file {file} does not exist (run fit_statistics first)") from None
    except json.JSONDecodeError as err:
        raise DataError(f"sdxl-vae: statistics file {file} is not valid JSON: {err}") from None
    return check_statistics(data, f"statistics file {file}")


def check_statistics(data: Any, where: str) -> dict[str, Any]:
    """Equal-length, non-empty ``mean`` and positive ``std`` lists, or a DataError naming ``where``."""
    if not isinstance(data, dict):
        raise DataError(f"sdxl-vae: {where} must be a mapping with 'mean' and 'std' lists")
    mean, std = data.get("mean"), data.get("std")
    if not isinstance(mean, list) or not isinstance(std, list) or len(mean) != len(std) or not mean:
        raise DataError(f"sdxl-vae: {where} needs equal-length 'mean' and 'std' lists")
    if any(float(s) <= 0 for s in std):
        raise DataError(f"sdxl-vae: {where} has a non-positive std")
    return data
