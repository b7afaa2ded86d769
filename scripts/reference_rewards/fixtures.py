"""Deterministic inputs of the reference-reward comparison: captions, images, tokenizer files, weights.

This module is imported in two places: by ``record.py`` inside each reference scorer's own virtual
environment (numpy, Pillow and torch only; nothing of this project), and by the project's tests, which
rebuild the very same weights and tokenizer files to score the recorded inputs through the plugins.

Weights are never stored. A record lists the reference model's own state-dict keys, shapes and dtypes
(its *layout*); :func:`state_from_layout` turns that list into tensors that depend only on the seed and
each key's name (PCG64 bit streams, which numpy keeps stable across releases), every value exactly
representable in bfloat16, float16 and float32, so a reference that casts its weights (OpenAI ``clip``
builds in float16, t2v_metrics casts to bfloat16) loses nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import string
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SEED = 16
HERE = Path(__file__).resolve().parent
#: The committed inputs and records (tests/rewards/reference in the repository).
DATA = HERE.parent.parent / "tests" / "rewards" / "reference"
IMAGES = DATA / "images"
RECORDS = DATA / "records"

#: Awkward captions: empty, blank, repeated spaces, accents, CJK, emoji, quotes, very long, control
#: characters, text that looks like special tokens, NFKC-affected characters, HTML entities, mixed case.
CAPTIONS = [
    "a red circle on a white background",
    "",
    " ",
    "   two   blue squares   ",
    "un chat noir sur un canapé vert, à côté d'une fenêtre",
    "東京の夜景、ネオンの光",
    "a 🐱 cat wearing a 🎩 hat",
    "the sign says \"STOP\" and 'go' and “curly” ‘quotes’",
    "a photo of " + " ".join(["a small yellow triangle next to a large green square"] * 40),
    "line one\nline two\ttabbed\r\nline three",
    "<image> </s> <pad> [SEP] [CLS] <|endoftext|> <extra_id_0> [DEC]",
    "ÅNGSTRÖM ﬁne Ⅻ ｆｕｌｌｗｉｄｔｈ ½ ℃",
    "&amp; &lt;b&gt;bold&lt;/b&gt; &quot;html&quot;",
    "UPPER lower MiXeD 123 4.5% #tag @user",
]

WORDS = (
    "a an the of on in at to and with next sitting photo picture image red green blue white black yellow "
    "circle square triangle cat dog sofa window background two three small large figure show does this "
    "please answer yes no chat between curious user artificial intelligence assistant gives helpful detailed "
    "polite answers questions line one tabbed upper lower mixed sign says stop go curly quotes bold html tag "
    "wearing hat photo un chat noir sur canapé vert côté fenêtre une d"
).split()


# -- weights ---------------------------------------------------------------------------------------
def _exact(values: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (nearest even) and flush |x| < 2**-14 to zero.

    The result is exact in bfloat16, in float16 (8 significant bits within float16's normal range) and
    in float32.
    """
    bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    sixteen, one = np.uint64(16), np.uint64(1)
    rounded = ((bits + np.uint64(0x7FFF) + ((bits >> sixteen) & one)) >> sixteen) << sixteen
    out = rounded.astype(np.uint32).view(np.float32)
    out = np.where(np.abs(out) < 2.0**-14, np.float32(0.0), out)
    return out.astype(np.float32)


def array_for(key: str, shape: Sequence[int], dtype: str, seed: int = SEED) -> np.ndarray:
    """The value of one tensor, from the seed and the key's name only.

    Integer tensors are ``position_ids``-style ranges. Floats are uniform with a scale by role: 1-D
    ``weight`` (norms) in [0.8, 1.2], 1-D ``bias`` in [-0.1, 0.1], ``logit_scale`` log(1/0.07), anything
    else with standard deviation ``1/sqrt(fan_in)`` (fan_in: the product of all but the first dimension).
    """
    shape = tuple(int(s) for s in shape)
    if not dtype.startswith("float") and not dtype.startswith("bfloat"):
        if key.endswith("position_ids"):
            return np.broadcast_to(np.arange(shape[-1], dtype=np.int64), shape).copy()
        return np.zeros(shape, dtype=np.int64)
    count = int(np.prod(shape)) if shape else 1
    rng = np.random.Generator(np.random.PCG64([seed, zlib.crc32(key.encode("utf-8"))]))
    u = rng.random(count) * 2.0 - 1.0  # uniform in [-1, 1): standard deviation 1/sqrt(3)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "logit_scale" or key.endswith("logit_scale"):
        values = np.full(count, math.log(1 / 0.07))
    elif len(shape) == 1 and leaf in ("weight", "gamma"):
        values = 1.0 + 0.2 * u
    elif len(shape) == 1 and leaf in ("bias", "beta"):
        values = 0.1 * u
    elif len(shape) <= 1:
        values = 0.5 * u
    else:
        fan_in = int(np.prod(shape[1:]))
        values = u * math.sqrt(3.0 / fan_in)
    return _exact(values.reshape(shape))


def state_from_layout(layout: dict[str, Any], seed: int = SEED) -> dict[str, Any]:
    """Tensors for every key of a recorded layout; aliased keys share one tensor, as in the reference."""
    import torch

    state: dict[str, Any] = {}
    aliases = layout.get("aliases", {})
    for key, shape, dtype in layout["tensors"]:
        if key in aliases:
            continue
        state[key] = torch.from_numpy(array_for(key, shape, dtype, seed)).to(getattr(torch, dtype))
    for key, target in aliases.items():
        state[key] = state[target]
    return state


def layout_of(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A state dict's layout: ``[key, shape, dtype]`` per tensor, plus keys that share another's storage."""
    tensors = []
    first_key_of: dict[tuple[int, int, tuple[int, ...]], str] = {}
    aliases: dict[str, str] = {}
    for key, value in state_dict.items():
        tensors.append([key, list(value.shape), str(value.dtype).replace("torch.", "")])
        identity = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
        if value.numel() and identity in first_key_of:
            aliases[key] = first_key_of[identity]
        else:
            first_key_of.setdefault(identity, key)
    return {"tensors": tensors, "aliases": aliases}


def fill_module(module: Any, seed: int = SEED) -> dict[str, Any]:
    """Give a reference model the fixture weights in place; returns its layout."""
    import torch

    state = module.state_dict()
    layout = layout_of(state)
    values = state_from_layout(layout, seed)
    with torch.no_grad():
        for key, tensor in state.items():
            tensor.copy_(values[key].to(tensor.dtype))
    return layout


# -- tokenizer files -------------------------------------------------------------------------------
def clip_bpe(bpe_gz: Path) -> tuple[dict[str, int], list[str]]:
    """CLIP's vocabulary (49408 entries) and merges from the ``bpe_simple_vocab_16e6.txt.gz`` that both
    the OpenAI ``clip`` package and open_clip ship, built the way ``SimpleTokenizer`` builds them."""
    merges = gzip.open(bpe_gz).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_chars = [chr(c) for c in cs]
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def write_clip_tokenizer(folder: Path, bpe_gz: Path) -> Path:
    """vocab.json, merges.txt and the tokenizer/special-token configs of laion/CLIP-ViT-H-14-laion2B-s32B-b79K."""
    vocab, merges = clip_bpe(bpe_gz)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    config = {
        **special,
        "add_prefix_space": False,
        "do_lower_case": True,
        "errors": "replace",
        "model_max_length": 77,
        "tokenizer_class": "CLIPTokenizer",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def clip_preprocessor_config(size: int) -> dict[str, Any]:
    """laion's preprocessor_config.json at another size (integer sizes, as that file has them)."""
    return {
        "crop_size": size,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3,
        "size": size,
    }


def bert_vocab() -> list[str]:
    """A WordPiece vocabulary laid out like bert-base-uncased's: [PAD] 0, [unused*], [UNK] 100, [CLS] 101,
    [SEP] 102, [MASK] 103, then characters, ``##`` continuations and whole words (1500 entries)."""
    head = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation) + list("éèàçôêäöüñåß東京の夜景ネオン光")
    pieces = chars + ["##" + c for c in string.ascii_lowercase + string.digits + "éèàôê"]
    pieces += [w for w in dict.fromkeys(WORDS) if w not in pieces]
    pieces += ["##ing", "##s", "##ed", "##er", "##ly", "##tion"]
    vocab = head + [p for p in dict.fromkeys(pieces) if p not in head]
    i = 0
    while len(vocab) < 1500:
        vocab.append(f"word{i}")
        i += 1
    return vocab


def write_bert_vocab(folder: Path) -> Path:
    """``vocab.txt`` alone (the minimum bert-base-uncased needs)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(bert_vocab()) + "\n")
    return folder


def t5_pieces() -> list[tuple[str, float]]:
    """Unigram pieces of the fixture T5 vocabulary (after <pad>, </s>, <unk>), 1000 entries in all."""
    words = ["▁" + w for w in dict.fromkeys(WORDS + ["Does", "Please", "Yes", "No", "USER", "ASSISTANT", "A", "The"])]
    chars = list(string.ascii_letters + string.digits + string.punctuation) + list("éèàçôêäöüñåÅÖß")
    subwords = ["▁" + c for c in string.ascii_lowercase] + ["ing", "ed", "er", "es", "s", "ly", "tion", "ant", "ions"]
    pieces = list(dict.fromkeys(words + ["▁"] + subwords + chars))
    i = 0
    while len(pieces) < 997:
        pieces.append(f"▁x{i}")
        i += 1
    # Scores: longer pieces preferred (log-probability-like, all negative and distinct).
    return [(p, -1.0 - k * 0.01 - 1.0 / (1 + len(p))) for k, p in enumerate(pieces)]


def t5_spiece_model() -> bytes:
    """A sentencepiece unigram model laid out like T5's ``spiece.model``: pad 0, eos 1, unk 2, NFKC
    normalisation (``nmt_nfkc``), dummy prefix, extra whitespace removed. Built from the fixed piece list
    with the normalisation table sentencepiece compiles in (taken from a throwaway training run), so it
    is the same bytes wherever the same sentencepiece release builds it."""
    import io

    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["a b c d e f g h"] * 4),
        model_writer=buffer,
        vocab_size=12,
        model_type="unigram",
        normalization_rule_name="nmt_nfkc",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        num_threads=1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    model = pb.ModelProto()
    model.ParseFromString(buffer.getvalue())
    del model.pieces[:]
    for piece, kind in (("<pad>", pb.ModelProto.SentencePiece.CONTROL), ("</s>", pb.ModelProto.SentencePiece.CONTROL)):
        model.pieces.add(piece=piece, score=0.0, type=kind)
    model.pieces.add(piece="<unk>", score=0.0, type=pb.ModelProto.SentencePiece.UNKNOWN)
    for piece, score in t5_pieces():
        model.pieces.add(piece=piece, score=score, type=pb.ModelProto.SentencePiece.NORMAL)
    model.trainer_spec.vocab_size = len(model.pieces)
    model.trainer_spec.input[:] = []
    model.trainer_spec.model_prefix = ""
    return model.SerializeToString()


def write_t5_tokenizer(folder: Path, *, configs: bool = True) -> Path:
    """``spiece.model`` (and, with ``configs``, the tokenizer_config / special_tokens_map of google/flan-t5-xxl)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(t5_spiece_model())
    if configs:
        extra = [f"<extra_id_{i}>" for i in range(100)]
        special = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>", "additional_special_tokens": extra}
        (folder / "special_tokens_map.json").write_text(json.dumps(special))
        config = {
            **special,
            "extra_ids": 100,
            "model_max_length": 512,
            "sp_model_kwargs": {},
            "tokenizer_class": "T5Tokenizer",
        }
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


# -- images ----------------------------------------------------------------------------------------
def _pattern(height: int, width: int, channels: int, seed: int, noise: int = 6) -> np.ndarray:
    """Smooth gradients with a few sharp edges and mild noise: compresses well, exercises resizing."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    out = []
    for c in range(channels):
        phase = rng.random() * math.tau
        base = 127.5 + 100 * np.sin(x / max(width, 2) * math.tau * (c + 1) / 2 + phase) * np.cos(y / max(height, 2) * 3)
        base += 40 * ((x + 2 * y + c * 7) % 11 < 3)
        base += rng.integers(-noise, noise + 1, size=(height, width))
        out.append(base)
    return np.clip(np.stack(out, axis=-1), 0, 255).astype(np.uint8)


def make_images() -> list[tuple[str, Any]]:
    """The committed odd images as (file name, PIL image); the file format carries the mode."""
    from PIL import Image

    def rgb(w: int, h: int, seed: int, noise: int = 6) -> Any:
        return Image.fromarray(_pattern(h, w, 3, seed, noise), "RGB")

    images: list[tuple[str, Any]] = [
        ("rgb_37x23.png", rgb(37, 23, 1)),
        ("rgb_64x48.png", rgb(64, 48, 2)),
        ("rgb_1x1.png", rgb(1, 1, 3)),
        ("rgb_2x2.png", rgb(2, 2, 4)),
        ("rgb_3x3.png", rgb(3, 3, 5)),
        ("rgb_1x40.png", rgb(1, 40, 6)),
        ("rgb_40x1.png", rgb(40, 1, 7)),
        ("rgb_60x3_three_tall.png", rgb(60, 3, 8)),
        ("rgb_3x60.png", rgb(3, 60, 9)),
        ("rgb_200x5_huge_aspect.png", rgb(200, 5, 10)),
        ("rgb_32x20_longest_32.png", rgb(32, 20, 11)),
        ("rgb_224x150_longest_224.png", rgb(224, 150, 12, noise=0)),
        ("rgb_32x32.png", rgb(32, 32, 13)),
        ("L_41x19.png", Image.fromarray(_pattern(19, 41, 1, 14)[..., 0], "L")),
        ("1_30x30.png", Image.fromarray(_pattern(30, 30, 1, 15)[..., 0], "L").convert("1")),
        ("P_26x26.png", rgb(26, 26, 16).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)),
    ]
    palette = rgb(26, 26, 17).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 3
    images.append(("P_transparent_index_26x26.png", palette))
    palette_alpha = rgb(28, 20, 18).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette_alpha.info["transparency"] = bytes([0, 64, 128, 255, 200, 30, 255, 0])
    images.append(("P_alpha_table_28x20.png", palette_alpha))
    colours = _pattern(31, 50, 3, 19)
    alpha = np.tile(np.linspace(0, 255, 50).astype(np.uint8), (31, 1))
    alpha[:, :10] = 0
    images.append(("RGBA_50x31.png", Image.fromarray(np.dstack([colours, alpha]), "RGBA")))
    hidden = np.dstack([_pattern(24, 24, 3, 20), np.zeros((24, 24), np.uint8)])
    hidden[8:16, 8:16, 3] = 255
    images.append(("RGBA_mostly_transparent_24x24.png", Image.fromarray(hidden, "RGBA")))
    grey_alpha = np.dstack(
        [_pattern(22, 30, 1, 21)[..., 0], np.tile(np.linspace(255, 0, 30).astype(np.uint8), (22, 1))]
    )
    images.append(("LA_30x22.png", Image.fromarray(grey_alpha, "LA")))
    grey_key = Image.fromarray(_pattern(20, 20, 1, 22)[..., 0], "L")
    grey_key.info["transparency"] = int(np.asarray(grey_key)[0, 0])
    images.append(("L_transparent_value_20x20.png", grey_key))
    rgb_key = rgb(20, 16, 23)
    rgb_key.info["transparency"] = tuple(int(v) for v in np.asarray(rgb_key)[0, 0])
    images.append(("RGB_transparent_colour_20x16.png", rgb_key))
    deep = (_pattern(29, 33, 1, 24)[..., 0].astype(np.uint32) * 257).astype(np.uint16)
    images.append(("I16_33x29.png", Image.fromarray(deep)))
    low = (_pattern(18, 25, 1, 25)[..., 0]).astype(np.uint16)
    images.append(("I16_low_values_25x18.png", Image.fromarray(low)))
    wide = _pattern(21, 27, 1, 26)[..., 0].astype(np.int32) * 257
    images.append(("I32_27x21.tif", Image.fromarray(wide, "I")))
    unit = _pattern(19, 23, 1, 27)[..., 0].astype(np.float32) / 255.0
    images.append(("F_unit_23x19.tif", Image.fromarray(unit, "F")))
    intensities = _pattern(17, 24, 1, 28)[..., 0].astype(np.float32) + 0.25
    images.append(("F_intensities_24x17.tif", Image.fromarray(intensities, "F")))
    images.append(("CMYK_30x20.tif", Image.fromarray(_pattern(20, 30, 4, 29), "CMYK")))
    return images


def write_images(folder: Path = IMAGES) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in make_images():
        path = folder / name
        kwargs: dict[str, Any] = {}
        if "transparency" in image.info:
            kwargs["transparency"] = image.info["transparency"]
        if path.suffix == ".tif":
            kwargs["compression"] = "tiff_deflate"
        image.save(path, **kwargs)
        paths.append(path)
    return paths


def image_files(folder: Path = IMAGES) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".png", ".tif"))


def open_image(path: Path) -> Any:
    from PIL import Image

    image = Image.open(path)
    image.load()
    return image


def file_digest(paths: Iterable[Path]) -> str:
    """One sha256 over the named files' bytes, to tie a record to the inputs it was made from."""
    h = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def captions_digest() -> str:
    return hashlib.sha256(json.dumps(CAPTIONS, ensure_ascii=False).encode()).hexdigest()


def dumps_record(value: Any, indent: int = 0) -> str:
    """JSON with one line per short row (a score, a tensor's key, shape and dtype): small, readable diffs."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{pad} {json.dumps(k, ensure_ascii=False)}: {dumps_record(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    nested = (
        any(isinstance(v, dict) or (isinstance(v, list) and any(isinstance(w, (dict, list)) for w in v)) for v in value)
        if isinstance(value, list)
        else False
    )
    if isinstance(value, list) and nested:
        items = [f"{pad} {dumps_record(v, indent + 1)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(value, ensure_ascii=False)


if __name__ == "__main__":
    # Rewrite the committed images (then re-record: the records store the images' sha256).
    for path in write_images():
        print(path)
