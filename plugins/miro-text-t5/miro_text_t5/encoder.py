"""``t5``: token states of a (FLAN-)T5 encoder, loaded from a local folder or the local Hugging Face cache.

MIRO's released model uses FLAN-T5-XL (2048-d tokens). Padding positions are zeroed and reported as False
in the mask. The tokenizer is always read from the same local folder and its vocabulary is checked against
the model's embedding table: offline, a tokenizer asked for by hub name can come back almost empty without
any error, and would silently turn every caption into unknown tokens.
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

DEFAULT_REPO = "google/flan-t5-xl"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
#: A tokenizer with fewer entries than this cannot encode text; also at least half the model's vocabulary.
MIN_VOCABULARY = 32


class T5Options(TextEncoderOptions):
    #: Local folder (transformers layout) or a Hugging Face repo id resolved in the local cache only.
    checkpoint: str | None = DEFAULT_REPO
    #: Folder of the encoder weights inside the checkpoint (e.g. "text_encoder_3" of an SD3 pipeline).
    subfolder: str | None = None
    #: Folder of the tokenizer inside the checkpoint; defaults to ``subfolder``.
    tokenizer_subfolder: str | None = None
    #: Captions per forward pass in ``encode``.
    batch_size: int = Field(64, ge=1)


def _missing(message: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"t5: {message}. A T5 folder needs config.json, model.safetensors (or a sharded model.safetensors.index.json "
        "with its shards), tokenizer_config.json and tokenizer.json (or spiece.model). Get them on a machine with "
        f"network access, e.g. `hf download {DEFAULT_REPO} --local-dir <folder>`, copy the folder here and pass "
        "checkpoint=<folder> (or fill the local Hugging Face cache)"
    )


def resolve_checkpoint(checkpoint: str | None) -> Path:
    """A local folder for ``checkpoint`` (a folder, or a repo id already in the local HF cache)."""
    return local_weights.resolve_checkpoint(checkpoint, _missing)


def check_vocabulary(tokenizer: Any, model_vocab_size: int, where: Path) -> None:
    """Fail loudly on an empty or mismatched tokenizer instead of encoding garbage."""
    local_weights.check_vocabulary(tokenizer, model_vocab_size, where, _missing, "t5", MIN_VOCABULARY)


class T5TextEncoder(TextEncoder):
    """Frozen T5 encoder; ``encode`` returns last-layer token states ``(B, max_length, d_model)``."""

    name = "t5"
    version = "1"
    description = "T5 / FLAN-T5 encoder token states (transformers, local weights only)"
    Options: ClassVar[type[ComponentOptions]] = T5Options

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
        from transformers import AutoTokenizer, T5EncoderModel

        model_dir, tok_dir = self._folders()
        if not (model_dir / "config.json").is_file() or not any((model_dir / f).is_file() for f in WEIGHT_FILES):
            raise _missing(f"{model_dir} lacks config.json or safetensors weights")
        if not any((tok_dir / f).is_file() for f in TOKENIZER_FILES):
            raise _missing(f"{tok_dir} has no tokenizer vocabulary ({' or '.join(TOKENIZER_FILES)})")
        torch_dtype = getattr(torch, dtype, None)
        if not isinstance(torch_dtype, torch.dtype):
            raise ConfigError(f"t5: unknown dtype {dtype!r}")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
        except (OSError, ValueError) as err:
            raise _missing(f"could not load the tokenizer from {tok_dir}: {err}") from None
        try:
            model = T5EncoderModel.from_pretrained(str(model_dir), local_files_only=True, use_safetensors=True)
        except (OSError, ValueError) as err:
            raise _missing(f"could not load T5EncoderModel from {model_dir}: {err}") from None
        check_vocabulary(tokenizer, int(model.config.vocab_size), tok_dir)
        model.requires_grad_(False)
        self.model = model.to(device=device, dtype=torch_dtype).eval()
        self.tokenizer = tokenizer

    @property
    def dim(self) -> int:
        if self.model is not None:
            return int(self.model.config.d_model)
        model_dir, _ = self._folders()
        try:
            return int(json.loads((model_dir / "config.json").read_text())["d_model"])
        except (OSError, KeyError, ValueError) as err:
            raise _missing(f"cannot read d_model from {model_dir / 'config.json'} ({err})") from None

    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        if self.model is None or self.tokenizer is None:
            raise MiroError("t5: call load() before encode()")
        if isinstance(captions, str):
            raise ConfigError("t5: encode() takes a sequence of captions, not one string")
        device = next(self.model.parameters()).device
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
                states = self.model(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state
            all_tokens.append((states.float() * mask[..., None]).cpu())
            all_masks.append(mask.bool().cpu())
        if not all_tokens:
            width = self.dim
            return torch.zeros(0, self.options.max_length, width), torch.zeros(
                0, self.options.max_length, dtype=torch.bool
            )
        return torch.cat(all_tokens), torch.cat(all_masks)
