"""``clip-text``: token states of a CLIP text transformer, from a local folder or the local Hugging Face cache.

Returns one state per token (not the pooled EOS vector): the last layer after CLIP's final LayerNorm
(``hidden_layer = -1``) or an earlier layer's raw output (``-2`` is the penultimate layer SDXL uses).
Padding positions are zeroed and False in the mask. The tokenizer is read from the same folder and checked
against the model's embedding table (offline, a hub-name tokenizer can come back silently empty).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from miro_core import local_weights
from miro_core.component import ComponentOptions
from miro_core.errors import ConfigError, MiroError, MissingWeightsError
from miro_core.text_encoder import TextEncoder, TextEncoderOptions

if TYPE_CHECKING:
    import torch

DEFAULT_REPO = "openai/clip-vit-large-patch14"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
MIN_VOCABULARY = 32


class CLIPTextOptions(TextEncoderOptions):
    #: Local folder (transformers layout) or a Hugging Face repo id resolved in the local cache only.
    checkpoint: str | None = DEFAULT_REPO
    #: Folder of the text model inside the checkpoint (e.g. "text_encoder" of an SD pipeline).
    subfolder: str | None = None
    #: Folder of the tokenizer inside the checkpoint (e.g. "tokenizer"); defaults to ``subfolder``.
    tokenizer_subfolder: str | None = None
    #: -1: last layer after the final LayerNorm; -k: the raw output of the k-th layer from the end.
    hidden_layer: int = Field(-1, le=-1)
    #: Captions per forward pass in ``encode``.
    batch_size: int = Field(64, ge=1)


def _missing(message: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"clip-text: {message}. A CLIP text folder needs config.json, model.safetensors, tokenizer_config.json and "
        "tokenizer.json (or vocab.json + merges.txt). Get them on a machine with network access, e.g. "
        f"`hf download {DEFAULT_REPO} --local-dir <folder>`, copy the folder here and pass checkpoint=<folder> "
        "(or fill the local Hugging Face cache)"
    )


def resolve_checkpoint(checkpoint: str | None) -> Path:
    """A local folder for ``checkpoint`` (a folder, or a repo id already in the local HF cache)."""
    return local_weights.resolve_checkpoint(checkpoint, _missing)


def check_vocabulary(tokenizer: Any, model_vocab_size: int, where: Path) -> None:
    """Fail loudly on an empty or mismatched tokenizer instead of encoding garbage."""
    local_weights.check_vocabulary(tokenizer, model_vocab_size, where, _missing, "clip-text", MIN_VOCABULARY)


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The text part of a CLIPTextConfig or of a full CLIPConfig."""
    return config.get("text_config", config)


class CLIPTextEncoder(TextEncoder):
    """Frozen CLIP text transformer; ``encode`` returns ``(B, max_length, hidden_size)`` token states."""

    name = "clip-text"
    version = "1"
    description = "CLIP text transformer token states (transformers, local weights only)"
    Options: ClassVar[type[ComponentOptions]] = CLIPTextOptions

    def __init__(self, options: ComponentOptions | dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.model: Any = None
        self.tokenizer: Any = None

    def _folders(self) -> tuple[Path, Path]:
        root = resolve_checkpoint(self.options.checkpoint)
        model_dir = root / self.options.subfolder if self.options.subfolder else root
        tok_sub = self.options.tokenizer_subfolder or self.options.subfolder
        tok_dir = root / tok_sub if tok_sub else root
        return model_dir, tok_dir

    def load(self, device: str = "cpu", dtype: str = "float32") -> None:
        import torch
        from transformers import AutoTokenizer, CLIPTextModel

        model_dir, tok_dir = self._folders()
        if not (model_dir / "config.json").is_file() or not any((model_dir / f).is_file() for f in WEIGHT_FILES):
            raise _missing(f"{model_dir} lacks config.json or safetensors weights")
        if not any((tok_dir / f).is_file() for f in TOKENIZER_FILES):
            raise _missing(f"{tok_dir} has no tokenizer vocabulary ({' or '.join(TOKENIZER_FILES)})")
        torch_dtype = getattr(torch, dtype, None)
        if not isinstance(torch_dtype, torch.dtype):
            raise ConfigError(f"clip-text: unknown dtype {dtype!r}")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
        except (OSError, ValueError) as err:
            raise _missing(f"could not load the tokenizer from {tok_dir}: {err}") from None
        try:
            model = CLIPTextModel.from_pretrained(str(model_dir), local_files_only=True, use_safetensors=True)
        except (OSError, ValueError) as err:
            raise _missing(f"could not load CLIPTextModel from {model_dir}: {err}") from None
        config = model.config
        if self.options.max_length > config.max_position_embeddings:
            raise ConfigError(
                f"clip-text: max_length {self.options.max_length} exceeds the model's "
                f"{config.max_position_embeddings} positions"
            )
        if -self.options.hidden_layer > config.num_hidden_layers:
            raise ConfigError(
                f"clip-text: hidden_layer {self.options.hidden_layer} but the model has "
                f"{config.num_hidden_layers} layers"
            )
        check_vocabulary(tokenizer, int(config.vocab_size), tok_dir)
        model.requires_grad_(False)
        self.model = model.to(device=device, dtype=torch_dtype).eval()
        self.tokenizer = tokenizer

    @property
    def dim(self) -> int:
        if self.model is not None:
            return int(self.model.config.hidden_size)
        model_dir, _ = self._folders()
        try:
            return int(_text_config(json.loads((model_dir / "config.json").read_text()))["hidden_size"])
        except (OSError, KeyError, ValueError) as err:
            raise _missing(f"cannot read hidden_size from {model_dir / 'config.json'} ({err})") from None

    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        if self.model is None or self.tokenizer is None:
            raise MiroError("clip-text: call load() before encode()")
        if isinstance(captions, str):
            raise ConfigError("clip-text: encode() takes a sequence of captions, not one string")
        device = next(self.model.parameters()).device
        layer = self.options.hidden_layer
        all_tokens: list[torch.Tensor] = []
        all_masks: list[torch.Tensor] = []
        captions = list(captions)
        for start in range(0, len(captions), self.options.batch_size):
            batch = self.tokenizer(
                captions[start : start + self.options.batch_size],
                padding="max_length",
                max_length=self.options.max_length,
                truncation=True,
                return_tensors="pt",
            )
            mask = batch["attention_mask"].to(device)
            with torch.no_grad():
                out = self.model(
                    input_ids=batch["input_ids"].to(device), attention_mask=mask, output_hidden_states=layer != -1
                )
            states = out.last_hidden_state if layer == -1 else out.hidden_states[layer]
            all_tokens.append((states.float() * mask[..., None]).cpu())
            all_masks.append(mask.bool().cpu())
        if not all_tokens:
            width = self.dim
            return torch.zeros(0, self.options.max_length, width), torch.zeros(
                0, self.options.max_length, dtype=torch.bool
            )
        return torch.cat(all_tokens), torch.cat(all_masks)
