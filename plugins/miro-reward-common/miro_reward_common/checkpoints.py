"""Finding weights locally (never downloading) and loading them strictly.

A checkpoint option is a local folder, a local file, or a Hugging Face repo id looked up in the local
Hugging Face cache only (``HF_HOME`` / ``HF_HUB_CACHE``). When something is absent the error names the
missing files and where to put them.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from miro_core.errors import MiroError, MissingWeightsError

#: Weight files of a Hugging Face model folder, in the order transformers looks for them.
HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class CheckpointError(MiroError):
    """Weights were found but do not fit the architecture (missing, unexpected or misshapen keys)."""


def hf_cache_dir() -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return str(HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return os.path.expanduser("~/.cache/huggingface/hub")


_REPO_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def looks_like_repo_id(spec: str) -> bool:
    """A Hugging Face repo id: ``owner/name``, or a name alone as the hub's oldest models have
    (``bert-base-uncased``, ``gpt2``); a candidate for the local cache when no such path exists."""
    if spec.startswith((".", "/", "~")) or "\\" in spec or spec.endswith((".", "-")) or ".." in spec:
        return False
    parts = spec.split("/")
    return 1 <= len(parts) <= 2 and all(_REPO_PART.fullmatch(p) for p in parts)


def cached_snapshot(repo_id: str) -> Path | None:
    """The newest cached snapshot folder of ``repo_id``, or None; never touches the network."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, invalid id, or no hub library: all mean "not here"
        return None


def _placement_hint(repo_id: str | None, files: Iterable[str]) -> str:
    if not repo_id:
        return "put them in a local folder and pass that folder"
    return (
        f"put them in a local folder and pass that folder, or place the repo {repo_id!r} in the Hugging Face "
        f"cache ({hf_cache_dir()}): on a machine with internet run `huggingface-cli download {repo_id}` "
        f"(at least {', '.join(files)}) and copy the cache over"
    )


def resolve_folder(
    spec: str | None,
    *,
    reward: str,
    option: str,
    required: Sequence[Sequence[str]],
    what: str,
) -> Path:
    """A local folder holding every entry of ``required`` (each entry: acceptable alternatives).

    ``spec`` is a folder or a repo id (looked up in the HF cache only).
    """
    need = ["|".join(alts) for alts in required]
    if not spec:
        raise MissingWeightsError(
            f"{reward}: no {what} given; set the `{option}` option (--reward-option {reward}.{option}=PATH) "
            f"to a folder with {', '.join(need)}"
        )
    path = Path(spec).expanduser()
    repo_id = spec if looks_like_repo_id(spec) and not path.exists() else None
    if path.is_dir():
        folder = path
    elif path.exists():
        raise MissingWeightsError(f"{reward}: {option} {spec!r} is a file; a folder with {', '.join(need)} is expected")
    elif repo_id is not None:
        snapshot = cached_snapshot(repo_id)
        if snapshot is None:
            raise MissingWeightsError(
                f"{reward}: {what} {repo_id!r} is not a local folder and is not in the local Hugging Face cache "
                f"({hf_cache_dir()}); nothing is downloaded. Needed files: {', '.join(need)}; "
                + _placement_hint(repo_id, [a[0] for a in required])
            )
        folder = snapshot
    else:
        raise MissingWeightsError(f"{reward}: {what} folder {spec!r} ({option}) does not exist")
    missing = [name for name, alts in zip(need, required) if not any((folder / alt).exists() for alt in alts)]
    if missing:
        raise MissingWeightsError(
            f"{reward}: {what} in {folder} lacks {', '.join(missing)}; " + _placement_hint(repo_id, missing)
        )
    return folder


def resolve_file(spec: str | None, *, reward: str, option: str, filename: str, what: str) -> Path:
    """A local file: ``spec`` itself, ``spec/filename`` for a folder, or ``filename`` of a cached repo."""
    if not spec:
        raise MissingWeightsError(
            f"{reward}: no {what} given; set the `{option}` option (--reward-option {reward}.{option}=PATH) "
            f"to the file {filename} or to a folder containing it"
        )
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if (path / filename).is_file():
            return path / filename
        raise MissingWeightsError(f"{reward}: {what} folder {path} lacks {filename}; put the file there")
    if looks_like_repo_id(spec):
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(spec, filename)
        except Exception:  # noqa: BLE001 - any failure means the file is not cached
            found = None
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
        raise MissingWeightsError(
            f"{reward}: {what} {filename} of {spec!r} is not in the local Hugging Face cache ({hf_cache_dir()}); "
            "nothing is downloaded; " + _placement_hint(spec, [filename]) + f", or pass the file's path as {option}"
        )
    raise MissingWeightsError(f"{reward}: {what} {spec!r} ({option}) does not exist; expected the file {filename}")


def read_state_dict(path: Path, *, reward: str) -> dict[str, Any]:
    """Tensors of a ``.safetensors`` file or a torch pickle read with ``weights_only=True``.

    Pickles are memory-mapped where their format allows (torch's zip format, every file written since
    torch 1.6), so their tensors are paged in from disk as they are used and :func:`assign_load` can
    put them into a model without a second copy.
    """
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    try:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            state = torch.load(str(path), map_location="cpu", weights_only=True)  # a pre-1.6 pickle
    except Exception as err:  # noqa: BLE001 - unpickling errors come in many types
        raise CheckpointError(
            f"{reward}: cannot read {path} with torch.load(weights_only=True): {type(err).__name__}: {err}"
        ) from None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{reward}: {path} holds a {type(state).__name__}, not a state dict")
    return dict(state)


def read_hf_weights(folder: Path, *, reward: str) -> dict[str, Any]:
    """Every tensor of a Hugging Face model folder (single file or sharded with an index)."""
    for name in HF_WEIGHT_FILES:
        path = folder / name
        if not path.exists():
            continue
        if not name.endswith(".index.json"):
            return read_state_dict(path, reward=reward)
        index = json.loads(path.read_text())
        shards = sorted(set(index.get("weight_map", {}).values()))
        absent = [s for s in shards if not (folder / s).exists()]
        if absent:
            raise MissingWeightsError(f"{reward}: {folder} lacks the shards {', '.join(absent)} listed in {name}")
        state: dict[str, Any] = {}
        for shard in shards:
            state.update(read_state_dict(folder / shard, reward=reward))
        return state
    raise MissingWeightsError(f"{reward}: {folder} has none of {', '.join(HF_WEIGHT_FILES)}")


def _listing(keys: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (and {len(keys) - limit} more)" if len(keys) > limit else "")


def check_keys(
    *,
    reward: str,
    source: Any,
    missing: Iterable[str],
    unexpected: Iterable[str],
    ignore_unexpected: Sequence[str] = (),
    ignore_missing: Sequence[str] = (),
) -> None:
    """Raise :class:`CheckpointError` naming every missing and unexpected key (glob patterns excepted)."""
    miss = sorted(k for k in missing if not any(fnmatch.fnmatchcase(k, p) for p in ignore_missing))
    extra = sorted(k for k in unexpected if not any(fnmatch.fnmatchcase(k, p) for p in ignore_unexpected))
    problems = []
    if miss:
        problems.append(f"missing keys: {_listing(miss)}")
    if extra:
        problems.append(f"unexpected keys: {_listing(extra)}")
    if problems:
        raise CheckpointError(f"{reward}: {source} does not match the architecture; " + "; ".join(problems))


def build_empty(factory: Callable[[], Any]) -> Any:
    """``factory()`` with its parameters on the meta device: no memory, no random initialisation.

    Buffers are still created for real (``include_buffers=False``): several are not in any checkpoint
    (open_clip's causal ``attn_mask``, transformers' ``position_ids``) and must hold their values.
    Load the weights with :func:`assign_load`, which puts the checkpoint's own tensors in place.
    """
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return factory()


def strict_load(
    module: Any,
    state_dict: Mapping[str, Any],
    *,
    reward: str,
    source: Any,
    ignore_unexpected: Sequence[str] = (),
    ignore_missing: Sequence[str] = (),
    assign: bool = False,
) -> None:
    """``load_state_dict`` that fails on any missing, unexpected or misshapen key, naming it.

    With ``assign=True`` the checkpoint's tensors become the module's parameters (no copy; what
    :func:`build_empty` needs), and a parameter left on the meta device (a missing key that was
    ignored) is an error: nothing is ever left uninitialised.
    """
    expected = module.state_dict()
    bad_shapes = [
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and hasattr(v, "shape") and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if bad_shapes:
        raise CheckpointError(
            f"{reward}: {source} does not match the architecture; shape mismatch (checkpoint vs model): "
            + _listing(bad_shapes)
        )
    usable = {k: v for k, v in state_dict.items() if k in expected}
    result = module.load_state_dict(usable, strict=False, assign=assign)
    check_keys(
        reward=reward,
        source=source,
        missing=result.missing_keys,
        unexpected=[k for k in state_dict if k not in expected],
        ignore_unexpected=ignore_unexpected,
        ignore_missing=ignore_missing,
    )
    empty = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if empty:
        raise CheckpointError(f"{reward}: {source} leaves these weights unset: {_listing(empty)}")


def assign_load(module: Any, state_dict: Mapping[str, Any], **kwargs: Any) -> None:
    """:func:`strict_load` with ``assign=True``, for a module made by :func:`build_empty`."""
    strict_load(module, state_dict, assign=True, **kwargs)


def load_hf_model(
    cls: Any,
    folder: Path,
    config: Any,
    *,
    reward: str,
    ignore_unexpected: Sequence[str] = ("*position_ids",),
    ignore_missing: Sequence[str] = (),
    rename: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Any:
    """A transformers model built empty from ``config`` and given the folder's tensors in place.

    One copy of the weights in memory (``from_pretrained`` may hold two while it converts), the strict
    key check of :func:`strict_load`, and ``position_ids`` buffers written by transformers < 4.31 skipped.
    """
    model = build_empty(lambda: cls(config))
    state = read_hf_weights(folder, reward=reward)
    if rename is not None:
        state = rename(state)
    assign_load(
        model, state, reward=reward, source=folder, ignore_unexpected=ignore_unexpected, ignore_missing=ignore_missing
    )
    del state
    return model.eval()


def check_loading_info(
    info: Mapping[str, Any],
    *,
    reward: str,
    source: Any,
    ignore_unexpected: Sequence[str] = (),
    ignore_missing: Sequence[str] = (),
) -> None:
    """The strict check for ``from_pretrained(..., output_loading_info=True)``."""
    mismatched = list(info.get("mismatched_keys") or [])
    if mismatched:
        raise CheckpointError(f"{reward}: {source} has misshapen weights: {_listing([str(m) for m in mismatched])}")
    check_keys(
        reward=reward,
        source=source,
        missing=info.get("missing_keys") or [],
        unexpected=info.get("unexpected_keys") or [],
        ignore_unexpected=ignore_unexpected,
        ignore_missing=ignore_missing,
    )


def read_json(path: Path, *, reward: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{reward}: cannot read {path}: {err}") from None


def hf_from_pretrained(
    cls: Any,
    folder: Path,
    *,
    reward: str,
    ignore_unexpected: Sequence[str] = ("*position_ids",),
    ignore_missing: Sequence[str] = (),
    **kwargs: Any,
) -> Any:
    """``cls.from_pretrained`` from a local folder with the strict key check and quiet logging.

    Misshapen, missing and unexpected keys are all refused by :func:`check_loading_info`, naming them
    (transformers would only log most of them).
    """
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model, info = cls.from_pretrained(
            str(folder),
            local_files_only=True,
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # reported below by name (and then refused), not skipped
            **kwargs,
        )
    except RuntimeError as err:
        raise CheckpointError(f"{reward}: {folder} does not match the architecture: {err}") from None
    finally:
        hf_logging.set_verbosity(previous)
        if bars:
            hf_logging.enable_progress_bar()
    check_loading_info(
        info, reward=reward, source=folder, ignore_unexpected=ignore_unexpected, ignore_missing=ignore_missing
    )
    return model
