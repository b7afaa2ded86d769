"""``clip-text``: token states of a CLIP text transformer, from a local folder or the local Hugging Face cache.

Returns one state per token (not the pooled EOS vector): the last layer after CLIP's final LayerNorm
(``hidden_layer = -1``) or an earlier layer's raw output (``-2`` is the penultimate layer SDXL uses).
Padding positions are zeroed and False in the mask. The tokenizer is read from the same folder and checked
against the model's embedding table (offline, a hub-name tokenizer can come back silently empty).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from miro_core.component import ComponentOptions
from miro_core.errors import ConfigError
from miro_core.local_text_encoder import LocalTextEncoder, LocalTextEncoderOptions

if TYPE_CHECKING:
    import torch

DEFAULT_REPO = "openai/clip-vit-large-patch14"


class CLIPTextOptions(LocalTextEncoderOptions):
    #: Local folder (transformers layout) or a Hugging Face repo id resolved in the local cache only.
    checkpoint: str | None = DEFAULT_REPO
    #: -1: last layer after the final LayerNorm; -k: the raw output of the k-th layer from the end.
    hidden_layer: int = Field(-1, le=-1)


class CLIPTextEncoder(LocalTextEncoder):
    """Frozen CLIP text transformer; ``encode`` returns ``(B, max_length, hidden_size)`` token states."""

    name = "clip-text"
    version = "1"
    description = "CLIP text transformer token states (transformers, local weights only)"
    Options: ClassVar[type[ComponentOptions]] = CLIPTextOptions
    model_class = "CLIPTextModel"
    tokenizer_files = ("tokenizer.json", "vocab.json")
    missing_help = (
        "A CLIP text folder needs config.json, model.safetensors, tokenizer_config.json and "
        "tokenizer.json (or vocab.json + merges.txt). Get them on a machine with network access, e.g. "
        f"`hf download {DEFAULT_REPO} --local-dir <folder>`, copy the folder here and pass checkpoint=<folder> "
        "(or fill the local Hugging Face cache)"
    )

    @classmethod
    def config_width(cls, config: dict[str, Any]) -> int:
        """The width of a CLIPTextConfig or of the text part of a full CLIPConfig."""
        return int(config.get("text_config", config)["hidden_size"])

    def check_model(self, config: Any) -> None:
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

    def token_states(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        layer = self.options.hidden_layer
        out = self.model(input_ids=input_ids, attention_mask=mask, output_hidden_states=layer != -1)
        return out.last_hidden_state if layer == -1 else out.hidden_states[layer]
