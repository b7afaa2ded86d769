"""Helpers for the paper reward tests: tiny tokenizers, odd test images, reference computations.

Every model in these tests is a tiny random instance of the real architecture, written to ``tmp_path``
in the checkpoint's original layout and loaded back through the plugin's own loading code.
"""

from __future__ import annotations

import gzip
import json
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

CAPTIONS = [
    "a red circle on a white background",
    "two blue squares",
    "a photo of a cat sitting on a green sofa next to a window",
    "",
    "triangle",
    "un chat noir sur un canapé vert",
]

WORDS = (
    "a an the of on in at to and with next sitting photo picture image red green blue white black yellow "
    "circle square triangle cat dog sofa window background two three small large figure show does this "
    "please answer yes no chat between curious user artificial intelligence assistant gives helpful detailed "
    "polite answers questions"
).split()


def odd_images() -> list[Image.Image]:
    """Non-square, odd-sized images in the modes a dataset can hold."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (23, 37, 3), dtype=np.uint8), "RGB")
    grey = Image.fromarray(rng.integers(0, 256, (41, 19), dtype=np.uint8), "L")
    rgba = Image.fromarray(rng.integers(0, 256, (31, 50, 4), dtype=np.uint8), "RGBA")
    deep = Image.fromarray(rng.integers(0, 65536, (33, 29), dtype=np.uint16))
    assert deep.mode.startswith("I;16")
    palette = Image.fromarray(rng.integers(0, 256, (26, 26, 3), dtype=np.uint8), "RGB").convert(
        "P", palette=Image.Palette.ADAPTIVE, colors=16
    )
    palette.info["transparency"] = 3
    floats = Image.fromarray(rng.random((17, 30), dtype=np.float32), "F")
    return [rgb, grey, rgba, deep, palette, floats]


def snapshot(images: list[Image.Image]) -> list[tuple[str, tuple[int, int], bytes]]:
    return [(im.mode, im.size, im.tobytes()) for im in images]


def clip_bpe_parts() -> tuple[dict[str, int], list[tuple[str, ...]]]:
    """The real CLIP BPE vocabulary (49408 entries) rebuilt from the file open_clip ships."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    pairs = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(p) for p in pairs] + ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, pairs


def write_clip_processor(folder: Path, size: int, crop: int | None = None) -> Path:
    """A CLIP processor folder: tokenizer files plus preprocessor_config.json (laion layout)."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe_parts()
    folder.mkdir(parents=True, exist_ok=True)
    CLIPTokenizer(vocab=vocab, merges=merges).save_pretrained(str(folder))
    config = {
        "crop_size": {"height": crop or size, "width": crop or size},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"shortest_edge": size},
        "image_processor_type": "CLIPImageProcessor",
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    return folder


def word_pieces(n: int) -> list[str]:
    """``n`` distinct pieces: letters, common words, then synthetic words."""
    pieces = list(dict.fromkeys(list(string.ascii_lowercase) + list(string.digits) + list(string.punctuation) + WORDS))
    i = 0
    while len(pieces) < n:
        pieces.append(f"w{i}")
        i += 1
    return pieces[:n]


def write_bert_tokenizer(folder: Path, size: int = 1200) -> Path:
    """A WordPiece tokenizer folder laid out like bert-base-uncased (vocab.txt), ``size`` entries."""
    specials = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    body = word_pieces(size - len(specials) - 26)
    body += ["##" + c for c in string.ascii_lowercase]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(specials + body) + "\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer"})
    )
    return folder


def sentencepiece_vocab(size: int) -> list[tuple[str, float]]:
    pieces = list(
        dict.fromkeys(["▁" + w for w in WORDS] + list(string.ascii_letters) + list(string.punctuation) + ["▁"])
    )
    i = 0
    while len(pieces) < size:
        pieces.append(f"▁x{i}")
        i += 1
    return [(p, -float(k + 1)) for k, p in enumerate(pieces)][:size]


def write_t5_tokenizer(folder: Path, size: int = 1100) -> tuple[Path, int]:
    """A Unigram T5 tokenizer folder (tokenizer.json), pad=0 eos=1 unk=2, 100 extra ids; returns (folder, len)."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + sentencepiece_vocab(size - 3)
    tok = T5Tokenizer(vocab=vocab, extra_ids=100)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(folder))
    return folder, len(tok)


def write_xlmr_tokenizer(folder: Path, size: int = 1100) -> tuple[Path, int]:
    from transformers import XLMRobertaTokenizer

    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + sentencepiece_vocab(size - 5)
    vocab.append(("<mask>", 0.0))
    tok = XLMRobertaTokenizer(vocab=vocab)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(folder))
    return folder, len(tok)


def assert_close_lists(a, b, *, rtol: float = 1e-5, atol: float = 1e-5) -> None:
    torch.testing.assert_close(
        torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), rtol=rtol, atol=atol
    )


def check_common(reward, images: list[Image.Image], captions: list[str]) -> list[float]:
    """Shapes, finiteness, images untouched, batch == one at a time, ``raw`` consistent with ``scale``."""
    before = snapshot(images)
    batch = reward.score(images, captions)
    assert snapshot(images) == before, "a reward modified the shared images"
    assert isinstance(batch, list) and len(batch) == len(images)
    assert all(isinstance(v, float) and np.isfinite(v) for v in batch)
    single = [reward.score([im], [cap])[0] for im, cap in zip(images, captions)]
    assert_close_lists(batch, single)
    reward.options.batch_size = 2
    chunked = reward.score(images, captions)
    reward.options.batch_size = None
    assert_close_lists(batch, chunked)
    reward.options.raw = True
    raw = reward.score(images, captions)
    reward.options.raw = False
    assert_close_lists(batch, [reward.scale(v) for v in raw])
    return batch


def check_unload(reward) -> None:
    import gc
    import weakref

    if isinstance(reward.model, torch.nn.Module):
        modules = [reward.model]
    else:
        modules = [v for v in vars(reward.model).values() if isinstance(v, torch.nn.Module)]
    assert modules, "the loaded state holds no torch module"
    refs = [weakref.ref(m) for m in modules]
    del modules
    reward.unload()
    gc.collect()
    assert reward.model is None
    assert all(r() is None for r in refs), "unload left the weights referenced"
    with pytest.raises(RuntimeError, match="load"):
        reward.score([Image.new("RGB", (8, 8))], ["x"])


def tiny_clip(folder, projection_dim: int = 16, logit_scale: float = 2.3):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "vocab_size": 49408,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=projection_dim,
    )
    model = CLIPModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(logit_scale)
    model.save_pretrained(str(folder))
    return folder


MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)


def reference_openai(image: Image.Image, size: int) -> torch.Tensor:
    """The OpenAI clip / ImageReward transform, built from torchvision exactly as the references do."""
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

    return Compose(
        [
            Resize(size, interpolation=InterpolationMode.BICUBIC),
            CenterCrop(size),
            lambda im: im.convert("RGB"),
            ToTensor(),
            Normalize(MEAN.view(3).tolist(), STD.view(3).tolist()),
        ]
    )(image)


def reference_letterbox(image: Image.Image, size: int) -> torch.Tensor:
    """Independent HPSv2 input: to [0, 1], torch bicubic with antialiasing, centred in zeros, normalised."""
    x = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float() / 255.0
    h, w = x.shape[1:]
    scale = size / max(h, w)
    nh, nw = (round(h * scale), round(w * scale)) if scale != 1 else (h, w)
    if (nh, nw) != (h, w):
        x = torch.nn.functional.interpolate(x[None], (nh, nw), mode="bicubic", antialias=True, align_corners=False)[0]
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas = torch.zeros(3, size, size)
    canvas[:, top : top + nh, left : left + nw] = x
    return (canvas - MEAN) / STD
