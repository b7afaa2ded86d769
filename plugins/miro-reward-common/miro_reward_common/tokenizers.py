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
    cls: str = "AutoTokenizer",
    min_vocab: int = MIN_VOCAB,
    need_pad: bool = False,
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> Any:
    """A tokenizer from a local folder only, vocabulary size checked.

    ``cls`` names the transformers class when the reward knows it (``BertTokenizer``, ``T5Tokenizer``,
    ``CLIPTokenizer``): a folder then loads from any file set the model's hub repo has had (BERT's
    ``vocab.txt`` alone, T5's ``spiece.model`` alone, a ``tokenizer.json`` without a tokenizer_config),
    and gets that class's special tokens (BERT's ``[PAD]``), which ``AutoTokenizer`` cannot infer from
    such folders. ``need_pad``: the reward pads batches, so a tokenizer without a pad token is refused here
    rather than at the first batch.
    """
    import transformers

    extra: dict[str, Any] = {"trust_remote_code": True} if trust_remote_code else {}
    loader = getattr(transformers, cls)
    try:
        tokenizer = loader.from_pretrained(str(folder), local_files_only=True, **extra, **kwargs)
    except ImportError as err:
        raise MissingWeightsError(
            f"{reward}: the tokenizer in {folder} needs a library that is not installed: {err}"
        ) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        if "tiktoken" in str(err) and any((folder / f).exists() for f in ("spiece.model", "sentencepiece.bpe.model")):
            raise MissingWeightsError(
                f"{reward}: the tokenizer in {folder} is a sentencepiece model; reading it needs the sentencepiece "
                "and protobuf packages (pip install sentencepiece protobuf), or put its tokenizer.json beside it"
            ) from None
        raise MissingWeightsError(f"{reward}: cannot load the tokenizer from {folder}: {err}") from None
    check_vocab(tokenizer, reward=reward, source=folder, min_vocab=min_vocab)
    if need_pad and tokenizer.pad_token_id is None:
        raise MissingWeightsError(
            f"{reward}: the tokenizer in {folder} has no padding token; add its special_tokens_map.json / "
            "tokenizer_config.json from the model's repository"
        )
    return tokenizer


#: Files by which a Hugging Face tokenizer folder can be recognised (any one of them suffices).
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model")
