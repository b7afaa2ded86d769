"""The authors' checkpoint layout (miro-t2i 0.1.4): read it into this project's model and run config.

A released MIRO checkpoint is a folder of three files (a variant is a subfolder of the same three):

- ``config.json``: ``network`` (the released network's constructor arguments), ``preconditioning``,
  ``data_preprocessing``, ``postprocessing``, ``data_resolution`` (latent side), optional ``scheduler``,
  ``max_text_len`` (77) and ``coherence_keys``;
- ``model.safetensors``: EMA weights under ``network.*``, ``preconditioning.*`` (the loss weighting) and the
  latent normalisation buffers ``data_preprocessing.{scale,bias}`` / ``postprocessing.{scale,bias}``;
  possibly float16;
- ``uncond_embedding.npy``: the one-token FLAN-T5-XL embedding of the empty prompt (the negative text).

The released network is this project's ``rin-release`` backbone with ``ModelSpec.design = "released"``. Its
backbone tensors keep their names; the conditioning stack's are renamed by :data:`RENAMES`. Folders come from
a local path or the local Hugging Face cache, never from the network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miro_core.errors import ConfigError, DataError, MissingWeightsError

AUTHORS_FILES = ("config.json", "model.safetensors", "uncond_embedding.npy")
#: The released reward keys, in the released order (``MiroPipeline.COHERENCE_KEYS`` of miro-t2i).
AUTHORS_REWARD_KEYS = (
    "clip_score",
    "aesthetic_score",
    "image_reward_score",
    "pick_a_score_score",
    "hpsv2_score",
    "vqa_score",
    "sciscore_score",
)
#: The released reward keys and this project's reward plugins that compute the same scores.
REWARD_ALIASES = {
    "clip_score": "jina-clip",
    "aesthetic_score": "aesthetic",
    "image_reward_score": "imagereward",
    "pick_a_score_score": "pickscore",
    "hpsv2_score": "hpsv2",
    "vqa_score": "vqascore",
    "sciscore_score": "sciscore",
}
#: SDXL latent statistics of the release (channel-wise normalisation to std 0.5 and the plain 0.13025 scale).
SDXL_SCALE_CHANNEL_WISE = (7.8518, 5.8465, 6.8716, 5.3140)
SDXL_BIAS_CHANNEL_WISE = (-0.3480, 0.3754, 0.0419, 2.4331)
SDXL_SCALE = 0.13025
#: Released checkpoint prefix -> this project's module path (every other ``network.*`` key keeps its name).
RENAMES = (
    ("network.transformers_blocks.", "mixer.blocks."),
    ("network.map_text_tokens.", "mixer.text_proj."),
    ("network.text_registers", "mixer.registers"),
    ("network.coherence_positional_embedding", "reward_encoder.position"),
    ("preconditioning.logvar_proj.", "loss_weighting.proj."),
)
#: Constant all-True masks the released network stores as parameters; nothing to load.
CONSTANT_KEYS = ("attention_mask_dummy", "network.registers_coherence_mask", "network.cond_mask")
#: The released network's constructor defaults (``RINBackbone`` / ``CADRINTextCond``), used for keys a
#: config.json leaves out.
NETWORK_DEFAULTS: dict[str, Any] = {
    "read_write_heads": 16,
    "compute_heads": 16,
    "latent_mlp_multiplier": 4,
    "data_mlp_multiplier": 4,
    "compute_dropout": 0.0,
    "rw_stochastic_depth": 0.0,
    "compute_stochastic_depth": 0.0,
    "use_cond_rin_block": False,
    "concat_cond_token_to_latents": True,
    "use_self_conditioning": False,
}
NETWORK_REQUIRED = (
    "data_size",
    "data_dim",
    "num_input_channels",
    "num_latents",
    "latents_dim",
    "label_dim",
    "num_processing_layers",
    "num_blocks",
    "patch_size",
)
#: Network arguments that are not backbone options (they become ModelSpec fields or are training-only).
NETWORK_CONDITIONING = ("num_text_registers", "coherence_keys", "coherence_dropout", "dropout_strategy")
MIXER_HEADS = 16


@dataclass
class AuthorsCheckpoint:
    """A released checkpoint read into this project's terms."""

    folder: Path
    files: dict[str, Path]
    authors_config: dict[str, Any]
    spec: Any
    #: ``(L, D)`` float32 negative-text embedding.
    uncond_embedding: Any
    latent_mean: list[float]
    latent_std: list[float]
    latent_size: int
    max_text_len: int
    accepted_reward_keys: list[str] = field(default_factory=list)

    def run_config(self) -> dict[str, Any]:
        """A run config (``RUN/config.json`` format) describing this checkpoint."""
        from miro_core import __version__

        spec = self.spec
        return {
            "format": "miro-run",
            "miro_version": __version__,
            "imported_from": {"folder": str(self.folder), "layout": "miro-t2i 0.1.4", "config": self.authors_config},
            "model": spec.as_json(),
            "reward_keys": list(spec.reward_keys),
            "accepted_reward_keys": self.accepted_reward_keys,
            # The reward plugins that measure each released key (``miro eval`` and ``miro serve`` use them).
            "reward_plugins": {key: REWARD_ALIASES[key] for key in spec.reward_keys if key in REWARD_ALIASES},
            "text_encoder": {
                "name": "t5",
                # miro-t2i keeps T5's states at padding positions (see LocalTextEncoderOptions.zero_padding)
                "options": {"checkpoint": "google/flan-t5-xl", "max_length": self.max_text_len, "zero_padding": False},
            },
            "autoencoder": {
                "name": "sdxl-vae",
                "options": {
                    "checkpoint": "stabilityai/sdxl-vae",
                    "statistics": {"mean": self.latent_mean, "std": self.latent_std},
                },
                "image_size": self.latent_size * 8,
                "latent_shape": [spec.in_channels, self.latent_size, self.latent_size],
            },
            "num_bins": 64,
            "guidance_scale": 7.0,
            "negative_text": "uncond_embedding",
            "image_rounding": "truncate",
            "example_prompts": [],
        }


def _missing(what: str, where: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"{what}. A released MIRO checkpoint is a folder with {', '.join(AUTHORS_FILES)} (a variant is a subfolder "
        f"with the same files). {where}"
    )


def resolve_files(
    source: str | Path, variant: str | None = None, cache_dir: str | Path | None = None, revision: str | None = None
) -> tuple[Path, dict[str, Path]]:
    """The three files of a local folder (``variant`` = subfolder) or of a repo in the local HF cache."""
    path = Path(source).expanduser()
    if path.is_dir():
        folder = path / variant if variant else path
        if not folder.is_dir():
            variants = sorted(p.name for p in path.iterdir() if (p / "config.json").is_file())
            raise _missing(
                f"{path} has no variant folder {variant!r}",
                f"Variants found there: {', '.join(variants) or 'none'}.",
            )
        absent = [name for name in AUTHORS_FILES if not (folder / name).is_file()]
        if absent:
            raise _missing(f"{folder} lacks {', '.join(absent)}", f"Put the missing file(s) into {folder}.")
        return folder, {name: folder / name for name in AUTHORS_FILES}
    if path.exists():
        raise ConfigError(f"{source} is a file; give the folder that holds {', '.join(AUTHORS_FILES)}")
    text = str(source)
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise _missing(f"checkpoint folder {text!r} does not exist", "Give a local folder or a Hugging Face repo id.")
    from huggingface_hub import try_to_load_from_cache

    files: dict[str, Path] = {}
    absent = []
    for name in AUTHORS_FILES:
        filename = f"{variant}/{name}" if variant else name
        found = try_to_load_from_cache(
            text, filename, cache_dir=str(cache_dir) if cache_dir else None, revision=revision
        )
        if isinstance(found, str):
            files[name] = Path(found)
        else:
            absent.append(filename)
    if absent:
        from huggingface_hub import constants

        include = f" --include '{variant}/*'" if variant else ""
        cache = Path(cache_dir or constants.HF_HUB_CACHE) / f"models--{text.replace('/', '--')}"
        raise _missing(
            f"there is no folder {text!r} here, and {text} is not in the local Hugging Face cache (missing "
            f"{', '.join(absent)} at revision {revision or 'main'} under {cache}); nothing is downloaded",
            f"On a machine with network access run `hf download {text}{include} --local-dir FOLDER`, copy FOLDER "
            "here and pass it instead of the repo id (or fill the local Hugging Face cache: HF_HUB_CACHE).",
        )
    return files["config.json"].parent, files


def released_folder(source: str, variant: str | None = None) -> str:
    """``source`` as it is, or, for a ``variant`` or a Hugging Face repo id, the local folder of that released
    checkpoint (its subfolder, or its snapshot in the local cache): for commands that take a folder."""
    text = str(source)
    if variant is None and (Path(text).expanduser().exists() or text.count("/") != 1 or text.startswith((".", "~"))):
        return text
    return str(resolve_files(text, variant)[0])


def is_authors_folder(source: str | Path, variant: str | None = None) -> bool:
    """Whether ``source`` (+ ``variant``) is a local folder whose config.json is in the authors' format."""
    path = Path(source).expanduser()
    folder = path / variant if variant else path
    config = folder / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and "network" in data and "model" not in data


def _clean(mapping: Any, what: str, file: Path) -> dict[str, Any]:
    if not isinstance(mapping, dict):
        raise DataError(f"{file}: '{what}' must be a mapping")
    return {k: v for k, v in mapping.items() if not k.startswith("_")}  # Hydra's _target_ / _partial_


def read_config(files: dict[str, Path]) -> dict[str, Any]:
    file = files["config.json"]
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as err:  # not JSON, or not UTF-8 text
        raise DataError(f"{file} is not valid JSON: {err}") from None
    if not isinstance(config, dict) or "network" not in config:
        raise DataError(f"{file} has no 'network' section; it is not a miro-t2i checkpoint config")
    return config


def spec_from_config(config: dict[str, Any], file: Path) -> Any:
    """The :class:`~miro_core.model.ModelSpec` of the released network described by ``config``."""
    from miro_core.model import ModelSpec

    network = _clean(config["network"], "network", file)
    missing = [key for key in NETWORK_REQUIRED if key not in network]
    if missing:
        raise DataError(f"{file}: network lacks {', '.join(missing)}")
    keys = list(network.get("coherence_keys") or [])
    if not keys:
        raise DataError(f"{file}: network.coherence_keys is empty; the released network needs at least one reward")
    options = {**NETWORK_DEFAULTS, **{k: v for k, v in network.items() if k not in NETWORK_CONDITIONING}}
    image_size, channels, text_dim = (
        options.pop("data_size"),
        options.pop("num_input_channels"),
        options.pop("label_dim"),
    )
    if not options.get("concat_cond_token_to_latents"):
        options.pop("num_cond_tokens", None)
    latents_dim = int(options["latents_dim"])
    pre = _clean(config.get("preconditioning", {}), "preconditioning", file)
    normalisation = pre.get("do_normalization", "noise_driven")
    scheduler = config.get("scheduler") or {}
    if (
        float(scheduler.get("start", 1)) != 1
        or float(scheduler.get("end", 0)) != 0
        or float(scheduler.get("shift", 1.0)) > 1
    ):
        raise ConfigError(f"{file}: scheduler {scheduler} is not the linear 1 -> 0 schedule this project samples")
    dropout = float(network.get("coherence_dropout", 0.0))
    return ModelSpec(
        backbone="rin-release",
        backbone_options={"size": "miro", "overrides": options},
        in_channels=int(channels),
        image_size=int(image_size),
        text_dim=int(text_dim),
        reward_keys=keys,
        cond_dim=latents_dim,
        cond_heads=MIXER_HEADS,
        mixer_layers=2,
        registers=int(network.get("num_text_registers", 16)),
        fourier_channels=latents_dim // 4,
        missing_reward="zero",
        reward_dropout=dropout if network.get("dropout_strategy", "binomial") != "none" else 0.0,
        precondition=normalisation == "noise_driven" or normalisation is True,
        sigma_data=float(pre.get("sigma_data", 0.5)),
        loss_weighting="learned" if pre.get("do_gradnorm_reweighting", True) else "none",
        design="released",
        logvar_channels=int(pre.get("logvar_channels", 128)),
        logvar_mlp_layers=int(pre.get("logvar_mlp_layers", 0)),
    )


def latent_statistics(config: dict[str, Any], state: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Per-channel ``(mean, std)`` with ``normalised = (vae_latent - mean) / std``, as the release normalises.

    From the checkpoint's ``postprocessing.{scale,bias}`` buffers when present (``normalised = z * scale +
    bias``), else from the release's fixed SDXL statistics and ``channel_wise_normalisation``.
    """
    for prefix in ("postprocessing", "data_preprocessing"):
        scale, bias = state.get(f"{prefix}.scale"), state.get(f"{prefix}.bias")
        if scale is not None and bias is not None:
            scale64, bias64 = scale.double().flatten(), bias.double().flatten()
            return [float(-b / s) for s, b in zip(scale64, bias64)], [float(1 / s) for s in scale64]
    post = config.get("postprocessing") or config.get("data_preprocessing") or {}
    if post.get("model_type", "sdxl") != "sdxl":
        raise ConfigError(f"latent statistics for model_type {post.get('model_type')!r} are unknown (only sdxl)")
    if post.get("channel_wise_normalisation", False):
        return list(SDXL_BIAS_CHANNEL_WISE), [2.0 * s for s in SDXL_SCALE_CHANNEL_WISE]
    return [0.0] * 4, [SDXL_SCALE] * 4


def convert_state_dict(state: dict[str, Any], reward_keys: list[str]) -> dict[str, Any]:
    """The released tensors under this project's names, as float32; constants and VAE buffers are dropped."""
    converted: dict[str, Any] = {}
    index = {f"{key}_coherence": i for i, key in enumerate(reward_keys)}
    for name, tensor in state.items():
        if name.startswith(("data_preprocessing.", "postprocessing.")) or any(c in name for c in CONSTANT_KEYS):
            continue
        target = None
        if name.startswith("network.coherence_embedder."):
            key, _, rest = name.removeprefix("network.coherence_embedder.").partition(".")
            if key not in index:
                raise DataError(f"model.safetensors has an embedder for {key!r}, not a reward of config.json")
            target = f"reward_encoder.embedders.{index[key]}.{rest}"
        else:
            for old, new in RENAMES:
                if name.startswith(old):
                    target = new + name[len(old) :]
                    break
        if target is None:
            if not name.startswith("network."):
                raise DataError(f"model.safetensors has an unexpected tensor {name!r}")
            target = name
        converted[target] = tensor.float() if tensor.is_floating_point() else tensor
    return converted


def load_checkpoint(
    source: str | Path, variant: str | None = None, cache_dir: str | Path | None = None, revision: str | None = None
) -> tuple[AuthorsCheckpoint, dict[str, Any]]:
    """Read a released checkpoint: its description and its state dict under this project's names."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    folder, files = resolve_files(source, variant, cache_dir, revision)
    config = read_config(files)
    try:
        spec = spec_from_config(config, files["config.json"])
    except (TypeError, ValueError, AttributeError) as err:  # a value of the wrong type (an edited config.json)
        raise DataError(
            f"{files['config.json']} holds a value of the wrong type ({type(err).__name__}: {err}); restore the "
            "checkpoint's config.json"
        ) from None
    try:
        state = load_file(str(files["model.safetensors"]))
    except Exception as err:  # noqa: BLE001 - safetensors raises several types for a bad file
        raise DataError(f"{files['model.safetensors']} is not a readable safetensors file: {err}") from None
    for name, tensor in state.items():  # NaN weights would sample blank images without any error
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise DataError(
                f"{files['model.safetensors']} holds NaN or infinite values in {name}: the file is damaged; "
                "download the checkpoint again"
            )
    mean, std = latent_statistics(config, state)
    try:
        uncond = np.load(files["uncond_embedding.npy"], allow_pickle=False)
    except (OSError, ValueError) as err:
        reason = "damaged, or it holds pickled objects, which are never loaded" if "pickle" in str(err) else err
        raise DataError(f"{files['uncond_embedding.npy']} is not a readable .npy array ({reason})") from None
    if uncond.ndim == 0 or uncond.size == 0 or not np.isfinite(np.asarray(uncond, dtype=np.float64)).all():
        raise DataError(
            f"{files['uncond_embedding.npy']} is not a finite (tokens, width) embedding (shape {uncond.shape}); "
            "the file is damaged: download the checkpoint again"
        )
    uncond_tensor = torch.from_numpy(np.asarray(uncond, dtype=np.float32)).reshape(-1, uncond.shape[-1])
    if uncond_tensor.shape[-1] != spec.text_dim:
        raise DataError(
            f"{files['uncond_embedding.npy']} has width {uncond_tensor.shape[-1]}, the network's text width is "
            f"{spec.text_dim}"
        )
    accepted = list(config.get("coherence_keys") or AUTHORS_REWARD_KEYS)
    checkpoint = AuthorsCheckpoint(
        folder=folder,
        files=files,
        authors_config=config,
        spec=spec,
        uncond_embedding=uncond_tensor,
        latent_mean=mean,
        latent_std=std,
        latent_size=int(config.get("data_resolution", spec.image_size)),
        max_text_len=int(config.get("max_text_len", 77)),
        accepted_reward_keys=sorted(set(accepted) | set(spec.reward_keys), key=_released_order),
    )
    return checkpoint, convert_state_dict(state, list(spec.reward_keys))


def _released_order(key: str) -> tuple[int, str]:
    return (AUTHORS_REWARD_KEYS.index(key) if key in AUTHORS_REWARD_KEYS else len(AUTHORS_REWARD_KEYS), key)


def build_model(checkpoint: AuthorsCheckpoint, state: dict[str, Any], registry: Any) -> Any:
    """The released network with the checkpoint's weights, in eval mode."""
    from miro_core.model import build_model as build

    try:
        model = build(checkpoint.spec, registry)
    except (TypeError, ValueError) as err:  # a network option of the wrong type or value (an edited config.json)
        raise DataError(
            f"{checkpoint.files['config.json']} describes a network that cannot be built ({type(err).__name__}: "
            f"{err}); restore the checkpoint's config.json"
        ) from None
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise DataError(
            f"{checkpoint.files['model.safetensors']} does not match its config.json: "
            f"missing {', '.join(missing[:8]) or 'none'}{' ...' if len(missing) > 8 else ''}; "
            f"unexpected {', '.join(unexpected[:8]) or 'none'}{' ...' if len(unexpected) > 8 else ''}"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        raise DataError(
            f"{checkpoint.files['model.safetensors']} does not match its config.json: {detail[:400]}"
        ) from None
    return model.eval()
