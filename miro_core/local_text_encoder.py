"""Shared base of text encoders built on a transformers model stored on local disk (T5, CLIP text).

It does the parts every such plugin needs the same way: find the folders (local folder or local HF cache,
never a download), check that weights and a tokenizer vocabulary are there, load both, refuse a tokenizer
that came back empty, and encode captions in batches with padding zeroed (unless ``zero_padding`` is off).
A plugin names its model class and its error message; it overrides ``check_model`` and ``token_states`` when
its model needs more.
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


class LocalTextEncoderOptions(TextEncoderOptions):
    #: Folder of the text model inside the checkpoint (e.g. "text_encoder" of a diffusion pipeline folder).
    subfolder: str | None = None
    #: Folder of the tokenizer inside the checkpoint; defaults to ``subfolder``.
    tokenizer_subfolder: str | None = None
    #: Captions per forward pass in ``encode``.
    batch_size: int = Field(64, ge=1)
    #: Zero the states of padding positions (they stay False in the mask either way). False keeps the model's
    #: own states there, as miro-t2i does: a released network that concatenates its conditioning tokens to
    #: its latents (``concat_cond_token_to_latents``) reads every text position, masked or not.
    zero_padding: bool = True


class LocalTextEncoder(TextEncoder):
    """A frozen transformers text model; ``encode`` returns ``(B, max_length, dim)`` states, padding zeroed."""

    Options: ClassVar[type[ComponentOptions]] = LocalTextEncoderOptions
    #: Class name in ``transformers`` (``T5EncoderModel``, ``CLIPTextModel``).
    model_class: ClassVar[str] = ""
    #: Key of the token width in the model's config.json.
    width_key: ClassVar[str] = "hidden_size"
    weight_files: ClassVar[tuple[str, ...]] = ("model.safetensors", "model.safetensors.index.json")
    tokenizer_files: ClassVar[tuple[str, ...]] = ("tokenizer.json",)
    #: A tokenizer with fewer entries than this cannot encode text (also: at least half the model's vocabulary).
    min_vocabulary: ClassVar[int] = 32
    #: Appended to every missing-weights error: which files the model needs and how to put them here.
    missing_help: ClassVar[str] = ""

    def __init__(self, options: ComponentOptions | dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.model: Any = None
        self.tokenizer: Any = None

    # -- what a plugin may override -----------------------------------------------------------------
    @classmethod
    def missing(cls, message: str) -> MissingWeightsError:
        """The error for absent or unusable files, naming the files the model needs and where to put them."""
        return MissingWeightsError(f"{cls.name}: {message}. {cls.missing_help}")

    def check_model(self, config: Any) -> None:  # noqa: B027 - optional hook
        """Reject options the loaded model cannot honour (called after loading, before use)."""

    def token_states(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-token states of one batch; default: the last hidden state."""
        return self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state

    @classmethod
    def config_width(cls, config: dict[str, Any]) -> int:
        return int(config[cls.width_key])

    # -- shared mechanics --------------------------------------------------------------------------
    def folders(self) -> tuple[Path, Path]:
        """(model folder, tokenizer folder) on local disk."""
        root = local_weights.resolve_checkpoint(self.options.checkpoint, self.missing)
        model_dir = root / self.options.subfolder if self.options.subfolder else root
        tok_sub = self.options.tokenizer_subfolder or self.options.subfolder
        tok_dir = root / tok_sub if tok_sub else root
        return model_dir, tok_dir

    def load(self, device: str = "cpu", dtype: str = "float32") -> None:
        import torch
        import transformers
        from transformers import AutoTokenizer

        model_dir, tok_dir = self.folders()
        if not (model_dir / "config.json").is_file() or not any((model_dir / f).is_file() for f in self.weight_files):
            raise self.missing(f"{model_dir} lacks config.json or safetensors weights")
        if not any((tok_dir / f).is_file() for f in self.tokenizer_files):
            raise self.missing(f"{tok_dir} has no tokenizer vocabulary ({' or '.join(self.tokenizer_files)})")
        torch_dtype = getattr(torch, dtype, None)
        if not isinstance(torch_dtype, torch.dtype):
            raise ConfigError(f"{self.name}: unknown dtype {dtype!r}")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
        except (OSError, ValueError) as err:
            raise self.missing(f"could not load the tokenizer from {tok_dir}: {err}") from None
        model_class = getattr(transformers, self.model_class)
        # a small text encoder loads in a moment; transformers' per-tensor bar would only break our own bars
        # (and ignore `--quiet`), as the minilm plugin does
        transformers.utils.logging.disable_progress_bar()
        try:
            model = model_class.from_pretrained(str(model_dir), local_files_only=True, use_safetensors=True)
        except (OSError, ValueError) as err:
            raise self.missing(f"could not load {self.model_class} from {model_dir}: {err}") from None
        self.check_model(model.config)
        local_weights.check_vocabulary(
            tokenizer, int(model.config.vocab_size), tok_dir, self.missing, self.name, self.min_vocabulary
        )
        model.requires_grad_(False)
        self.model = model.to(device=device, dtype=torch_dtype).eval()
        self.tokenizer = tokenizer

    @property
    def dim(self) -> int:
        if self.model is not None:
            return int(getattr(self.model.config, self.width_key))
        model_dir, _ = self.folders()
        try:
            return self.config_width(json.loads((model_dir / "config.json").read_text()))
        except (OSError, KeyError, ValueError) as err:
            raise self.missing(f"cannot read {self.width_key} from {model_dir / 'config.json'} ({err})") from None

    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        if self.model is None or self.tokenizer is None:
            raise MiroError(f"{self.name}: call load() before encode()")
        if isinstance(captions, str):
            raise ConfigError(f"{self.name}: encode() takes a sequence of captions, not one string")
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
                states = self.token_states(batch["input_ids"].to(device), mask)
            states = states.float()
            all_tokens.append((states * mask[..., None] if self.options.zero_padding else states).cpu())
            all_masks.append(mask.bool().cpu())
        if not all_tokens:
            empty = torch.zeros(0, self.options.max_length, self.dim)
            return empty, torch.zeros(0, self.options.max_length, dtype=torch.bool)
        return torch.cat(all_tokens), torch.cat(all_masks)
