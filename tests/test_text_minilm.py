"""The offline default text encoder, through the registry and its real loading code."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from miro_core.errors import MissingWeightsError


def test_minilm_encodes_captions(registry):
    encoder = registry.text_encoders.create("minilm", {"max_length": 12})
    encoder.load()
    tokens, mask = encoder.encode(["a red circle", "three blue squares left of a green triangle", ""])
    assert tokens.shape == (3, 12, encoder.dim) and mask.shape == (3, 12) and mask.dtype == torch.bool
    assert mask[0].sum() < mask[1].sum(), "longer captions have more real tokens"
    again, _ = encoder.encode(["a red circle"])
    assert torch.allclose(again[0], tokens[0], atol=1e-5), "batched and single encodings agree"
    assert not torch.allclose(tokens[0, 1], tokens[1, 1])


def test_missing_weights_are_named(registry, tmp_path: Path):
    (tmp_path / "config.json").write_text("{}")
    encoder = registry.text_encoders.create("minilm", {"checkpoint": str(tmp_path)})
    with pytest.raises(MissingWeightsError, match="model.safetensors"):
        encoder.load()


def test_a_small_random_bert_folder_loads_and_a_wrong_tokenizer_is_refused(registry, tmp_path: Path):
    """Any BERT-layout folder works (the tokenizer is checked against the model's own table, not a fixed
    size); a tokenizer far smaller than the model's table is still refused."""
    from transformers import BertConfig, BertModel

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "cat", "red", "circle", "blue"]
    words += [f"w{i}" for i in range(40 - len(words))]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer", "do_lower_case": true}')
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path)
    encoder = registry.text_encoders.create("minilm", {"checkpoint": str(tmp_path), "max_length": 8})
    encoder.load()
    tokens, mask = encoder.encode(["a red circle"])
    assert tokens.shape == (1, 8, 16) == (1, 8, encoder.dim) and mask[0].sum() == 5
    config.vocab_size = 400
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path)
    with pytest.raises(MissingWeightsError, match="has only 40 entries while the model embeds 400"):
        registry.text_encoders.create("minilm", {"checkpoint": str(tmp_path)}).load()
