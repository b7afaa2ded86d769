"""The ``t5`` and ``clip-text`` text encoder plugins, on tiny random models and tokenizers built offline."""

from __future__ import annotations

import json

import pytest
import torch

from miro_core.errors import ConfigError, MiroError, MissingWeightsError
from miro_core.plugins import build_registry

t5_plugin = pytest.importorskip("miro_text_t5.plugin")
clip_plugin = pytest.importorskip("miro_text_clip.plugin")
from miro_text_clip.encoder import CLIPTextEncoder  # noqa: E402
from miro_text_t5.encoder import T5TextEncoder  # noqa: E402

WORDS = (
    "a an the photo picture drawing of on in under with and cat dog bird horse red blue green yellow black white "
    "circle square triangle big small two three one left right top bottom background clean noisy sky grass table "
    "car tree house person sitting standing next to"
).split()


def _tokenizer(specials: list[str], template: str, pad: str, words=WORDS):
    """A WordLevel tokenizer with a post-processor template, wrapped for transformers (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate([*specials, *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    used = sorted({part for part in template.split() if part in vocab})
    tok.post_processor = processors.TemplateProcessing(single=template, special_tokens=[(s, vocab[s]) for s in used])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=pad, unk_token="<unk>")


def _t5_folder(root, words=WORDS, model_vocab: int | None = None):
    from transformers import T5Config, T5EncoderModel

    tokenizer = _tokenizer(["<pad>", "</s>", "<unk>"], "$A </s>", "<pad>", words)
    torch.manual_seed(0)
    config = T5Config(vocab_size=model_vocab or len(tokenizer), d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4)
    T5EncoderModel(config).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


def _clip_folder(root, words=WORDS, model_vocab: int | None = None):
    from transformers import CLIPTextConfig, CLIPTextModel

    specials = ["<|startoftext|>", "<|endoftext|>", "<unk>"]
    tokenizer = _tokenizer(specials, "<|startoftext|> $A <|endoftext|>", "<|endoftext|>", words)
    torch.manual_seed(0)
    config = CLIPTextConfig(
        vocab_size=model_vocab or len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=40,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    CLIPTextModel(config).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    return _t5_folder(tmp_path_factory.mktemp("tiny-t5"))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return _clip_folder(tmp_path_factory.mktemp("tiny-clip"))


ENCODERS = [(T5TextEncoder, "t5_dir", 16), (CLIPTextEncoder, "clip_dir", 16)]


def test_registered_through_the_hooks():
    reg = build_registry(load_entry_points=False, extra_plugins=[("t5", t5_plugin), ("clip-text", clip_plugin)])
    assert reg.text_encoders.get("t5") is T5TextEncoder
    assert reg.text_encoders.get("clip-text") is CLIPTextEncoder


@pytest.mark.parametrize(("cls", "folder", "width"), ENCODERS)
def test_encode_follows_the_contract(cls, folder, width, request):
    path = request.getfixturevalue(folder)
    encoder = cls({"checkpoint": str(path), "max_length": 12, "batch_size": 2})
    assert encoder.dim == width  # read from config.json before loading
    encoder.load()
    captions = ["a red cat on the table", "two blue circle", "", "a photo of a dog next to a big green tree"]
    tokens, mask = encoder.encode(captions)
    assert tokens.shape == (4, 12, width) and tokens.dtype == torch.float32
    assert mask.shape == (4, 12) and mask.dtype == torch.bool
    ids = encoder.tokenizer(captions)["input_ids"]
    assert mask.sum(1).tolist() == [min(len(i), 12) for i in ids]
    assert (mask[:, :-1].int() >= mask[:, 1:].int()).all()  # padding at the end
    assert torch.count_nonzero(tokens[~mask]) == 0  # padded states are zero
    assert tokens[mask].abs().sum(-1).gt(0).all()

    # A caption's states do not depend on the batch it is encoded in (or on the chunk size).
    alone, alone_mask = encoder.encode(captions[1:2])
    torch.testing.assert_close(alone[0], tokens[1], atol=1e-5, rtol=1e-5)
    assert torch.equal(alone_mask[0], mask[1])
    assert not torch.allclose(tokens[0], tokens[1])

    empty_tokens, empty_mask = encoder.encode([])
    assert empty_tokens.shape == (0, 12, width) and empty_mask.shape == (0, 12)


@pytest.mark.parametrize(("cls", "folder", "width"), ENCODERS)
def test_encode_needs_load_and_a_list(cls, folder, width, request):
    encoder = cls({"checkpoint": str(request.getfixturevalue(folder))})
    with pytest.raises(MiroError, match="load"):
        encoder.encode(["a cat"])
    encoder.load()
    with pytest.raises(ConfigError, match="sequence of captions"):
        encoder.encode("a cat")


@pytest.mark.parametrize("cls", [T5TextEncoder, CLIPTextEncoder])
def test_missing_weights_are_explained(cls, tmp_path, monkeypatch):
    import huggingface_hub.constants

    with pytest.raises(MissingWeightsError, match="does not exist"):
        cls({"checkpoint": str(tmp_path / "nowhere")}).load()
    with pytest.raises(MissingWeightsError, match="config.json"):
        cls({"checkpoint": str(tmp_path)}).load()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(MissingWeightsError, match="local Hugging Face cache") as err:
        cls().load()
    assert "hf download" in str(err.value)


@pytest.mark.parametrize(("cls", "make"), [(T5TextEncoder, _t5_folder), (CLIPTextEncoder, _clip_folder)])
def test_nearly_empty_tokenizer_is_refused(cls, make, tmp_path):
    """A tokenizer that lost its vocabulary (only special tokens left) must not encode silently."""
    make(tmp_path, words=["cat"], model_vocab=len(WORDS) + 3)
    with pytest.raises(MissingWeightsError, match="has only 4 entries while the model embeds"):
        cls({"checkpoint": str(tmp_path)}).load()


@pytest.mark.parametrize(("cls", "make"), [(T5TextEncoder, _t5_folder), (CLIPTextEncoder, _clip_folder)])
def test_tokenizer_folder_without_vocabulary_is_refused(cls, make, tmp_path):
    make(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "T5Tokenizer" if cls is T5TextEncoder else "CLIPTokenizer"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(MissingWeightsError, match="no tokenizer vocabulary"):
        cls({"checkpoint": str(tmp_path)}).load()


@pytest.mark.parametrize(("cls", "make"), [(T5TextEncoder, _t5_folder), (CLIPTextEncoder, _clip_folder)])
def test_tokenizer_larger_than_the_embedding_is_refused(cls, make, tmp_path):
    make(tmp_path, model_vocab=len(WORDS))
    with pytest.raises(ConfigError, match="different models"):
        cls({"checkpoint": str(tmp_path)}).load()


def test_subfolders_like_a_pipeline_checkpoint(tmp_path):
    _t5_folder(tmp_path / "text_encoder_3")
    (tmp_path / "tokenizer_3").mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "text_encoder_3" / name).rename(tmp_path / "tokenizer_3" / name)
    encoder = T5TextEncoder(
        {"checkpoint": str(tmp_path), "subfolder": "text_encoder_3", "tokenizer_subfolder": "tokenizer_3"}
    )
    encoder.load()
    assert encoder.encode(["a cat"])[0].shape == (1, 32, 16)


def test_clip_hidden_layer_and_length_checks(clip_dir):
    last = CLIPTextEncoder({"checkpoint": str(clip_dir), "max_length": 8})
    penultimate = CLIPTextEncoder({"checkpoint": str(clip_dir), "max_length": 8, "hidden_layer": -2})
    last.load()
    penultimate.load()
    captions = ["a red cat", "a blue dog"]
    tokens_last, mask = last.encode(captions)
    tokens_pen, mask_pen = penultimate.encode(captions)
    assert torch.equal(mask, mask_pen)
    assert not torch.allclose(tokens_last[mask], tokens_pen[mask])
    # The last layer's states are LayerNorm outputs: zero mean over the width, unlike the raw penultimate ones.
    assert tokens_last[mask].mean(-1).abs().max() < 1e-4
    with pytest.raises(ConfigError, match="40 positions"):
        CLIPTextEncoder({"checkpoint": str(clip_dir), "max_length": 41}).load()
    with pytest.raises(ConfigError, match="3 layers"):
        CLIPTextEncoder({"checkpoint": str(clip_dir), "hidden_layer": -4}).load()


@pytest.mark.parametrize(("cls", "make"), [(T5TextEncoder, _t5_folder), (CLIPTextEncoder, _clip_folder)])
def test_small_vocabulary_that_fits_the_model_loads(cls, make, tmp_path):
    """A tiny model whose tokenizer covers its whole embedding table (here 15 entries) is not "nearly empty"."""
    make(tmp_path, words=["a", "photo", "of", "cat", "red", "blue", "circle", "square", "on", "the", "big", "small"])
    encoder = cls({"checkpoint": str(tmp_path), "max_length": 8})
    encoder.load()
    tokens, mask = encoder.encode(["a red circle"])
    assert tokens.shape[:2] == (1, 8) and int(mask.sum()) >= 3
