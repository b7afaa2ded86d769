"""PickScore / SciScore: tiny HF CLIPModel in its original folder layout, scored through the registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from reward_helpers import (
    CAPTIONS,
    assert_close_lists,
    check_common,
    check_unload,
    odd_images,
    tiny_clip,
    write_clip_processor,
)

from miro_core.errors import MissingWeightsError


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("pickscore")
    return tiny_clip(root / "PickScore_v1"), write_clip_processor(root / "laion-processor", size=32)


@pytest.mark.parametrize("name", ["pickscore", "sciscore"])
def test_scores_match_hand_computation(registry, clip_files, name):
    from transformers import CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    checkpoint, processor = clip_files
    reward = registry.rewards.create(name, {"checkpoint": str(checkpoint), "processor": str(processor)})
    reward.load("cpu", "float32")
    images = odd_images()
    scores = check_common(reward, images, CAPTIONS)

    # Independent computation: transformers' own PIL processor, a fresh model, the PickScore formula.
    model = CLIPModel.from_pretrained(str(checkpoint)).eval()
    tok = CLIPTokenizer.from_pretrained(str(processor))
    proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})

    expected = []
    with torch.no_grad():
        for image, caption in zip(images, CAPTIONS):
            rgb = Image.fromarray(np.asarray(image.convert("RGB")))  # transformers 4.x: convert("RGB") only
            pixels = proc(images=[rgb], return_tensors="pt")["pixel_values"]
            ids = tok([caption], padding=True, truncation=True, max_length=77, return_tensors="pt")
            img = model.get_image_features(pixel_values=pixels).pooler_output[0]
            txt = model.get_text_features(**ids).pooler_output[0]
            cosine = float(img @ txt / (img.norm() * txt.norm()))
            expected.append(math.exp(2.3) * cosine / 100.0)
    assert_close_lists(scores, expected, atol=2e-5, rtol=1e-4)
    check_unload(reward)


def test_truncates_long_captions(registry, clip_files):
    checkpoint, processor = clip_files
    reward = registry.rewards.create("pickscore", {"checkpoint": str(checkpoint), "processor": str(processor)})
    reward.load()
    long = " ".join(["circle"] * 200)
    image = Image.new("RGB", (40, 30), (200, 10, 10))
    assert math.isfinite(reward.score([image], [long])[0])


def test_missing_weights_name_files(registry, tmp_path, clip_files):
    _, processor = clip_files
    empty = tmp_path / "empty"
    empty.mkdir()
    reward = registry.rewards.create("pickscore", {"checkpoint": str(empty), "processor": str(processor)})
    with pytest.raises(MissingWeightsError, match=r"config\.json.*model\.safetensors"):
        reward.load()
    uncached = registry.rewards.create(
        "sciscore", {"checkpoint": "nobody-here/NoSuchModel", "processor": str(processor)}
    )
    with pytest.raises(MissingWeightsError, match="not in the local Hugging Face cache"):
        uncached.load()


def test_empty_tokenizer_is_refused(registry, tmp_path, clip_files):
    from transformers import CLIPTokenizer

    checkpoint, processor = clip_files
    broken = tmp_path / "broken-processor"
    broken.mkdir()
    (broken / "preprocessor_config.json").write_text((processor / "preprocessor_config.json").read_text())
    tiny_vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2}
    CLIPTokenizer(vocab=tiny_vocab, merges=[]).save_pretrained(str(broken))
    reward = registry.rewards.create("pickscore", {"checkpoint": str(checkpoint), "processor": str(broken)})
    with pytest.raises(MissingWeightsError, match="only 3 entries"):
        reward.load()


def test_mismatched_checkpoint_names_keys(registry, tmp_path, clip_files):
    from safetensors.torch import load_file, save_file

    checkpoint, processor = clip_files
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((checkpoint / "config.json").read_text())
    state = load_file(str(checkpoint / "model.safetensors"))
    state.pop("visual_projection.weight")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(bad / "model.safetensors"))
    reward = registry.rewards.create("pickscore", {"checkpoint": str(bad), "processor": str(processor)})
    from miro_reward_common.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match=r"visual_projection\.weight"):
        reward.load()
    state = load_file(str(checkpoint / "model.safetensors"))
    state["text_projection.weight"] = torch.zeros(8, 32)
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"text_projection\.weight"):
        registry.rewards.create("pickscore", {"checkpoint": str(bad), "processor": str(processor)}).load()


@pytest.mark.parametrize("variant", ["tokenizer.json", "model.safetensors"])
def test_release_file_sets_score_like_reference(registry, tmp_path, variant):
    """laion's processor as tokenizer.json (no vocab.json/merges.txt), or the model as model.safetensors."""
    import json

    from reference_layouts import SCALING, fx, load_record, write_hf_clip
    from transformers import CLIPTokenizer

    record = load_record("pickscore")
    options = write_hf_clip(record, tmp_path, safetensors=variant == "model.safetensors")
    if variant == "tokenizer.json":
        proc = tmp_path / "processor"
        CLIPTokenizer.from_pretrained(str(proc)).save_pretrained(str(tmp_path / "saved"))
        for name in ("vocab.json", "merges.txt"):
            (proc / name).unlink()
        (proc / "tokenizer.json").write_bytes((tmp_path / "saved" / "tokenizer.json").read_bytes())
        assert json.loads((proc / "tokenizer_config.json").read_text())["pad_token"] == "<|endoftext|>"
    rows = [r for r in record["scores"] if r[0] in ("rgb_37x23.png", "RGBA_50x31.png") and r[1] in (0, 5, 6, 8)]
    reward = registry.rewards.create("pickscore", options)
    reward.load()
    scores = reward.score([fx.open_image(fx.IMAGES / r[0]) for r in rows], [record["captions"][r[1]] for r in rows])
    assert_close_lists(scores, [SCALING["pickscore"](r[2]) for r in rows], atol=1e-5)
