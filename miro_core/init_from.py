"""``miro train --init-from FOLDER``: start training from released or converted weights.

FOLDER is a released MIRO checkpoint (the authors' layout, a local folder or a repo id in the local Hugging
Face cache; ``--init-from-variant`` picks a subfolder) or a run folder (its latest EMA weights, e.g. one
written by ``miro convert``). Only weights are taken (EMA, possibly float16); the optimizer, schedule and EMA
start fresh.

The network's architecture comes from FOLDER (backbone and its options, design, conditioning widths,
preconditioning); the training data must match its input (channels, latent size, text width), and latents
must be normalised with the same statistics. Rewards are matched by key, with the released keys also matching
this project's reward plugins (``clip_score`` = ``jina-clip``, ...; :data:`REWARD_ALIASES`): a reward of the
training data that FOLDER lacks gets a freshly initialised embedder and position, a reward of FOLDER that
the data lacks is left out, and every other tensor is loaded (the "add a reward to a released model" case).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from miro_core.authors_layout import REWARD_ALIASES
from miro_core.errors import ConfigError

#: ModelSpec fields that describe the architecture, taken from the checkpoint.
ARCHITECTURE_FIELDS = (
    "backbone",
    "backbone_options",
    "design",
    "cond_dim",
    "cond_heads",
    "mixer_layers",
    "registers",
    "fourier_channels",
    "precondition",
    "sigma_data",
    "loss_weighting",
    "logvar_channels",
    "logvar_mlp_layers",
)
#: ModelSpec fields the training data decides, which must equal the checkpoint's.
INPUT_FIELDS = ("in_channels", "image_size", "text_dim")
#: Per-reward tensors (row ``i`` or submodule ``i`` belongs to reward ``i``).
PER_REWARD_PREFIXES = ("reward_encoder.embedders.",)
PER_REWARD_ROWS = ("reward_encoder.position", "reward_encoder.null")


@dataclass
class InitSource:
    """The weights and architecture a training run starts from."""

    where: str
    spec: Any
    state: dict[str, Any]
    latent_mean: list[float] | None = None
    latent_std: list[float] | None = None


@dataclass
class InitReport:
    """What was loaded: for the run's config.json and the log."""

    source: str
    loaded_tensors: int = 0
    reward_map: dict[str, str | None] = field(default_factory=dict)
    dropped_rewards: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "loaded_tensors": self.loaded_tensors,
            "rewards_from_checkpoint": {k: v for k, v in self.reward_map.items() if v is not None},
            "new_rewards": [k for k, v in self.reward_map.items() if v is None],
            "rewards_left_out": self.dropped_rewards,
        }


def load_init_source(source: str, variant: str | None = None) -> InitSource:
    """Read FOLDER: a run folder (latest checkpoint's EMA weights) or a released checkpoint."""
    from miro_core.model import ModelSpec
    from miro_core.pipeline import _is_run_folder

    path = Path(source).expanduser()
    folder = path / variant if variant else path
    if _is_run_folder(folder):
        from miro_core.run_folder import latest_checkpoint, load_weights, read_run_config

        config = read_run_config(folder)
        checkpoint = latest_checkpoint(folder)
        if checkpoint is None:
            raise ConfigError(f"--init-from {folder}: the run has no checkpoint yet (no latest.json)")
        state = {
            k: v.float() if v.is_floating_point() else v
            for k, v in load_weights(checkpoint / "model_ema.safetensors").items()
        }
        stats = ((config.get("autoencoder") or {}).get("options") or {}).get("statistics")
        mean, std = _statistics(stats)
        return InitSource(f"{folder} ({checkpoint.name})", ModelSpec(**config["model"]), state, mean, std)
    from miro_core.authors_layout import load_checkpoint

    checkpoint, state = load_checkpoint(source, variant)
    return InitSource(str(checkpoint.folder), checkpoint.spec, state, checkpoint.latent_mean, checkpoint.latent_std)


def _statistics(stats: Any) -> tuple[list[float] | None, list[float] | None]:
    if isinstance(stats, str) and Path(stats).expanduser().is_file():
        stats = json.loads(Path(stats).expanduser().read_text())
    if isinstance(stats, dict) and "mean" in stats and "std" in stats:
        return [float(v) for v in stats["mean"]], [float(v) for v in stats["std"]]
    return None, None


def adapt_spec(spec: Any, source: InitSource) -> Any:
    """The spec to train: the checkpoint's architecture with the data's rewards (and training options)."""
    for name in INPUT_FIELDS:
        ours, theirs = getattr(spec, name), getattr(source.spec, name)
        if ours != theirs:
            raise ConfigError(
                f"--init-from {source.where}: the checkpoint's {name} is {theirs}, the training data gives {ours}; "
                "encode the data as the checkpoint was trained (see docs/training.md, Fine-tuning)"
            )
    return replace(spec, **{name: getattr(source.spec, name) for name in ARCHITECTURE_FIELDS})


def check_latent_statistics(source: InitSource, autoencoder: dict[str, Any] | None) -> None:
    """Refuse data whose latents were normalised with other statistics than the checkpoint's."""
    if source.latent_mean is None or not autoencoder:
        return
    mean, std = _statistics((autoencoder.get("options") or {}).get("statistics") or autoencoder.get("statistics"))
    if mean is None or std is None:
        return
    # A float16 checkpoint stores its normalisation buffers rounded (relative error up to ~1e-3 once inverted),
    # so the release's own statistics must still match it; other statistics differ by far more.
    if len(mean) != len(source.latent_mean) or any(
        abs(a - b) > 2e-3 * max(1.0, abs(b)) for a, b in zip(mean + std, source.latent_mean + source.latent_std)
    ):
        raise ConfigError(
            f"--init-from {source.where}: the training latents were normalised with mean {mean} / std {std}, the "
            f"checkpoint with mean {source.latent_mean} / std {source.latent_std}; encode the data with the "
            "checkpoint's statistics (`miro convert` writes them to RUN/latent_statistics.json)"
        )


def match_rewards(train_keys: list[str], source_keys: list[str]) -> dict[str, str | None]:
    """For every training reward, the checkpoint's reward it continues (same key or alias), or None."""
    mapping: dict[str, str | None] = {}
    for key in train_keys:
        found = next(
            (s for s in source_keys if s == key or REWARD_ALIASES.get(s) == key or REWARD_ALIASES.get(key) == s), None
        )
        mapping[key] = found
    return mapping


def initialise(model: Any, source: InitSource) -> InitReport:
    """Copy the checkpoint's tensors into ``model`` (built from :func:`adapt_spec`'s spec)."""
    import torch

    train_keys, source_keys = list(model.spec.reward_keys), list(source.spec.reward_keys)
    report = InitReport(source.where, reward_map=match_rewards(train_keys, source_keys))
    report.dropped_rewards = [k for k in source_keys if k not in report.reward_map.values()]
    index = {key: source_keys.index(found) for key, found in report.reward_map.items() if found is not None}
    target = model.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    for name, tensor in target.items():
        if name.startswith(PER_REWARD_PREFIXES):
            prefix = next(p for p in PER_REWARD_PREFIXES if name.startswith(p))
            position, _, rest = name[len(prefix) :].partition(".")
            key = train_keys[int(position)]
            if key in index:
                loaded[name] = _take(source, f"{prefix}{index[key]}.{rest}", tensor)
        elif name in PER_REWARD_ROWS:
            if name in source.state:
                rows = tensor.clone()
                for i, key in enumerate(train_keys):
                    if key in index:
                        rows[i] = _take(source, name, tensor, row=index[key])
                loaded[name] = rows
        else:
            loaded[name] = _take(source, name, tensor)
    model.load_state_dict({**target, **loaded})
    report.loaded_tensors = len(loaded)
    return report


def _take(source: InitSource, name: str, like: Any, row: int | None = None) -> Any:
    if name not in source.state:
        raise ConfigError(f"--init-from {source.where}: the checkpoint has no tensor {name!r} for this network")
    tensor = source.state[name] if row is None else source.state[name][row]
    expected = like.shape if row is None else like.shape[1:]
    if tuple(tensor.shape) != tuple(expected):
        raise ConfigError(
            f"--init-from {source.where}: {name} is shaped {tuple(tensor.shape)} there, {tuple(expected)} here"
        )
    return tensor.to(like.dtype)
