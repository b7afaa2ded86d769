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
