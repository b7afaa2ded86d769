"""``t5``: token states of a (FLAN-)T5 encoder, loaded from a local folder or the local Hugging Face cache.

MIRO's released model uses FLAN-T5-XL (2048-d tokens). Padding positions are zeroed (``zero_padding: false``
keeps T5's own states there, as miro-t2i does) and reported as False in the mask. The tokenizer is always
read from the same local folder and its vocabulary is checked against the model's embedding table: offline,
a tokenizer asked for by hub name can come back almost empty without any error, and would silently turn
every caption into unknown tokens.
"""

from __future__ import annotations

from typing import ClassVar

from miro_core.component import ComponentOptions
from miro_core.local_text_encoder import LocalTextEncoder, LocalTextEncoderOptions

DEFAULT_REPO = "google/flan-t5-xl"


class T5Options(LocalTextEncoderOptions):
    #: Local folder (transformers layout) or a Hugging Face repo id resolved in the local cache only.
    checkpoint: str | None = DEFAULT_REPO


class T5TextEncoder(LocalTextEncoder):
    """Frozen T5 encoder; ``encode`` returns last-layer token states ``(B, max_length, d_model)``."""

    name = "t5"
    version = "1"
    description = "T5 / FLAN-T5 encoder token states (transformers, local weights only)"
    Options: ClassVar[type[ComponentOptions]] = T5Options
    model_class = "T5EncoderModel"
    width_key = "d_model"
    tokenizer_files = ("tokenizer.json", "spiece.model")
    missing_help = (
        "A T5 folder needs config.json, model.safetensors (or a sharded model.safetensors.index.json "
        "with its shards), tokenizer_config.json and tokenizer.json (or spiece.model). Get them on a machine with "
        f"network access, e.g. `hf download {DEFAULT_REPO} --local-dir <folder>`, copy the folder here and pass "
        "checkpoint=<folder> (or fill the local Hugging Face cache)"
    )
