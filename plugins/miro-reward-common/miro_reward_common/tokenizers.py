"""Tokenizers loaded from explicit local folders, with a check that the vocabulary is really there.

Offline, a tokenizer asked for by hub name can come back silently empty; a tokenizer is therefore only
ever loaded from a folder, and one with fewer than ``min_vocab`` entries is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from miro_core.errors import MissingWeightsError

#: No real text-to-image tokenizer has fewer entries than this (CLIP 49408, BERT 30522, T5 32100).
MIN_VOCAB = 1000


def check_vocab(tokenizer: Any, *, reward: str, source: Any, min_vocab: int = MIN_VOCAB) -> int:
    size = len(tokenizer)
    if size < min_vocab:
        raise MissingWeightsError(
            f"{reward}: the tokenizer from {source} has only {size} entries (at least {min_vocab} expected): "
            "its vocabulary files are missing or incomplete; point the option at the tokenizer's folder"
        )
    return size


def load_tokenizer(
    folder: Path,
    *,
    reward: str,
    min_vocab: int = MIN_VOCAB,
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> Any:
    """``AutoTokenizer`` from a local folder only, vocabulary size checked."""
    from transformers import AutoTokenizer

    extra: dict[str, Any] = {"trust_remote_code": True} if trust_remote_code else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, **extra, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise MissingWeightsError(f"{reward}: cannot load the tokenizer from {folder}: {err}") from None
    check_vocab(tokenizer, reward=reward, source=folder, min_vocab=min_vocab)
    return tokenizer


#: Files by which a Hugging Face tokenizer folder can be recognised (any one of them suffices).
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model")
