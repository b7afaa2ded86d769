"""The run folder: ``config.json`` + checkpoints of safetensors weights, optimizer state and step.

Layout::

    RUN/config.json                      train config, model spec, reward keys, text encoder, bins
    RUN/bins.json                        copy of the bins the run was trained with
    RUN/latest.json                      {"step": N, "path": "checkpoints/step-000000N"}
    RUN/checkpoints/step-N/model.safetensors       raw weights
    RUN/checkpoints/step-N/model_ema.safetensors   EMA weights (used for sampling)
    RUN/checkpoints/step-N/optimizer.pt            optimizer state (loaded with weights_only=True)
    RUN/checkpoints/step-N/trainer_state.json      step, scheduler, EMA and schedule horizon
    RUN/logs/                            tensorboard
    RUN/samples/step-N.png               sample grids at milestones
    RUN/uncond_embedding.npy             optional fixed negative-text embedding (runs converted from a release)

A checkpoint is written into a temporary folder and renamed into place, then ``latest.json`` is
replaced atomically, so a crash at any point leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from miro_core.errors import DataError


def write_json_atomic(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def save_checkpoint(
    run: Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    ema_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any] | None,
    trainer_state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write one checkpoint atomically; ``optimizer_state`` None writes weights only (converted releases)."""
    from safetensors.torch import save_file

    checkpoints = run / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    final = checkpoints / f"step-{step:08d}"
    tmp = checkpoints / f".tmp-step-{step:08d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    meta = {"step": str(step)}
    for name, state in (("model.safetensors", model_state), ("model_ema.safetensors", ema_state)):
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp / name), meta)
    if optimizer_state is not None:
        torch.save(optimizer_state, tmp / "optimizer.pt")
    (tmp / "trainer_state.json").write_text(json.dumps({**trainer_state, "step": step}, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_json_atomic(run / "latest.json", {"step": step, "path": f"checkpoints/{final.name}"})
    older = sorted(p for p in checkpoints.glob("step-*") if p != final)
    for stale in older[: max(0, len(older) - (keep - 1))]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def latest_checkpoint(run: Path) -> Path | None:
    pointer = run / "latest.json"
    if not pointer.exists():
        return None
    try:
        target = json.loads(pointer.read_text())["path"]
        if not isinstance(target, str):
            raise TypeError("'path' is not text")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(
            f"{pointer} is damaged ({type(err).__name__}: {err}); write it again as "
            '{"step": N, "path": "checkpoints/step-0000000N"} naming an intact checkpoint of the run'
        ) from None
    path = run / target
    if not (path / "trainer_state.json").exists():
        raise DataError(
            f"{pointer} points to {path}, which is incomplete; point it at an intact checkpoints/step-N of the run "
            "(or delete latest.json to start over)"
        )
    return path


_DAMAGED = (
    "the checkpoint is damaged: use another checkpoint of the run (point latest.json at an intact "
    "checkpoints/step-N, or `miro eval --step N`), or train again"
)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a damaged file or one holding NaN or infinity is a DataError naming it.

    Non-finite weights are never a valid model (a diverged run or damaged bytes): sampling from them writes
    blank images without any error, and fine-tuning from them reports a divergence far from the cause.
    """
    from safetensors.torch import load_file

    if not path.exists():
        raise DataError(f"weights file {path} does not exist")
    try:
        tensors = load_file(str(path))
    except Exception as err:  # noqa: BLE001 - safetensors reports damage with its own exception types
        raise DataError(f"weights file {path} cannot be read ({err}); {_DAMAGED}") from None
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise DataError(f"weights file {path} holds NaN or infinite values in {name}; {_DAMAGED}")
    return tensors


def load_optimizer_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"optimizer state {path} does not exist; {_DAMAGED}") from None
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file
        reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        if "Weights only load failed" in reason:  # torch's paragraphs suggest weights_only=False: never here
            reason = "not a file of plain tensors: damaged, or it holds pickled objects, which are never loaded"
        raise DataError(f"optimizer state {path} cannot be read ({reason}); {_DAMAGED}") from None


def load_model_weights(model: torch.nn.Module, path: Path) -> None:
    """Load a checkpoint's weights into ``model``; tensors that do not fit its network are a DataError naming the
    file (a checkpoint of another run, or a config.json edited since the checkpoint was written)."""
    try:
        model.load_state_dict(load_weights(path))
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        raise DataError(
            f"weights file {path} does not fit the network its run's config.json describes ({detail[:300]}); "
            "use the checkpoint with the config.json it was trained with"
        ) from None


def read_run_config(run: Path) -> dict[str, Any]:
    config = run / "config.json"
    if not config.exists():
        raise DataError(f"{run} is not a miro run folder (no config.json); train one with `miro train`")
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{config} is damaged ({err}); restore it from a copy, or train the run again") from None
    if not isinstance(data, dict):
        raise DataError(f"{config} is damaged (not a JSON object); restore it from a copy, or train the run again")
    for key in ("model", "text_encoder"):  # what every reader of a run needs (the network and its text input)
        if not isinstance(data.get(key), dict):
            raise DataError(f"{config} is damaged (no {key!r} object); restore it from a copy, or train the run again")
    return data


NEGATIVE_TEXT_FILE = "uncond_embedding.npy"


def load_negative_text(run: Path, config: dict[str, Any]) -> torch.Tensor | None:
    """The run's fixed ``(L, D)`` negative-text embedding, when its config says it has one."""
    if config.get("negative_text") != "uncond_embedding":
        return None
    import numpy as np

    path = run / NEGATIVE_TEXT_FILE
    if not path.exists():
        raise DataError(f"{run}/config.json names a fixed negative text, but {path} is missing")
    try:
        array = np.load(path, allow_pickle=False)
        if array.ndim == 0 or array.size == 0 or not np.isfinite(np.asarray(array, dtype=np.float64)).all():
            raise ValueError(f"not a finite (tokens, width) embedding: shape {array.shape}")
        width = config.get("model", {}).get("text_dim")
        if width is not None and array.shape[-1] != int(width):
            raise ValueError(f"width {array.shape[-1]}, the network's text width is {width}")
    except (OSError, ValueError) as err:
        reason = "damaged, or it holds pickled objects, which are never loaded" if "pickle" in str(err) else err
        raise DataError(
            f"{path} cannot be used ({reason}); copy it again from the released checkpoint (`miro convert --force`)"
        ) from None
    return torch.from_numpy(np.asarray(array, dtype=np.float32)).reshape(-1, array.shape[-1])
