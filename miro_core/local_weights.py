"""Finding model files on local disk only, and refusing tokenizers that came back empty.

Shared by plugins that load Hugging Face models (text encoders, autoencoders): a checkpoint is a local
folder or a repo id already in the local Hugging Face cache; nothing is ever downloaded. Each plugin
passes its own ``missing`` factory, so the error says which files that model needs and where to put them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from miro_core.errors import ConfigError

#: A probe every real text tokenizer splits into known tokens.
PROBE = "a photo of a cat"


def resolve_checkpoint(checkpoint: str | None, missing: Callable[[str], Exception]) -> Path:
    """A local folder for ``checkpoint``: a folder, or a repo id already in the local HF cache."""
    if not checkpoint:
        raise missing("no checkpoint given")
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        return path
    if checkpoint.count("/") == 1 and not checkpoint.startswith((".", "/", "~")):
        from huggingface_hub import snapshot_download

        try:
            return Path(str(snapshot_download(checkpoint, local_files_only=True)))
        except Exception as err:  # noqa: BLE001 - every cache miss is the same missing-weights problem
            raise missing(f"{checkpoint!r} is not in the local Hugging Face cache ({type(err).__name__})") from None
    raise missing(f"checkpoint folder {checkpoint!r} does not exist")


def check_vocabulary(
    tokenizer: Any,
    model_vocab_size: int,
    where: Path,
    missing: Callable[[str], Exception],
    component: str,
    min_vocabulary: int = 32,
) -> None:
    """Fail loudly on an empty or mismatched tokenizer instead of encoding garbage.

    Offline, a tokenizer loaded by hub name can come back silently empty; a tokenizer from another model
    has a vocabulary that does not fit the embedding table.
    """
    size = len(tokenizer)
    # A tokenizer as large as a small model's embedding table is whole, however small (tiny test models).
    if size < max(min(min_vocabulary, model_vocab_size), model_vocab_size // 2):
        raise missing(
            f"the tokenizer in {where} has only {size} entries while the model embeds {model_vocab_size} tokens; "
            "its vocabulary file is missing or wrong (offline, a tokenizer loaded by hub name comes back nearly empty)"
        )
    if size > model_vocab_size:
        raise ConfigError(
            f"{component}: the tokenizer in {where} has {size} entries but the model embeds only {model_vocab_size}; "
            "tokenizer and weights come from different models"
        )
    ids = tokenizer(PROBE, add_special_tokens=False)["input_ids"]
    unknown = getattr(tokenizer, "unk_token_id", None)
    if not ids or (unknown is not None and all(i == unknown for i in ids)):
        raise missing(f"the tokenizer in {where} maps {PROBE!r} to unknown tokens only")
