"""LAION aesthetic predictor: tiny CLIP folder + the head's .pth, loaded through the registry."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from miro_reward_common.checkpoints import CheckpointError
from reward_helpers import (
    CAPTIONS,
    assert_close_lists,
    check_common,
    check_unload,
    odd_images,
    reference_openai,
    tiny_clip,
)

from miro_core.errors import MissingWeightsError

HEAD_SHAPES = [(1024, 16), (128, 1024), (64, 128), (16, 64), (1, 16)]


def write_head(path, in_features: int = 16, extra: dict | None = None):
    """The head's state dict as the reference saves it (keys layers.{0,2,4,6,7})."""
    gen = torch.Generator().manual_seed(1)
    state = OrderedDict()
    for index, (out_f, in_f) in zip((0, 2, 4, 6, 7), HEAD_SHAPES):
        in_f = in_features if index == 0 else in_f
        state[f"layers.{index}.weight"] = torch.randn(out_f, in_f, generator=gen) / in_f**0.5
        state[f"layers.{index}.bias"] = torch.randn(out_f, generator=gen) * 0.1
    state.update(extra or {})
    torch.save(state, str(path))
    return state


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("aesthetic")
    clip = tiny_clip(root / "clip-vit-large-patch14")
    head_dir = root / "head"
    head_dir.mkdir()
    state = write_head(head_dir / "sac+logos+ava1-l14-linearMSE.pth")
    return clip, head_dir, state


def test_score_is_head_on_normalised_embedding(registry, files):
    from transformers import CLIPModel

    clip, head_dir, state = files
    reward = registry.rewards.create("aesthetic", {"checkpoint": str(head_dir), "clip_model": str(clip)})
    assert reward.inputs == frozenset({"image"})
    reward.load("cpu", "float32")
    images = odd_images()
    scores = check_common(reward, images, CAPTIONS)

    model = CLIPModel.from_pretrained(str(clip)).eval()
    expected = []
    with torch.no_grad():
        for image in images:
            emb = model.get_image_features(pixel_values=reference_openai(image, 32)[None]).pooler_output[0]
            x = (emb / np.linalg.norm(emb.numpy())).double()
            for index in (0, 2, 4, 6, 7):
                x = state[f"layers.{index}.weight"].double() @ x + state[f"layers.{index}.bias"].double()
            expected.append(float(x[0]) / 10.0)
    assert_close_lists(scores, expected, atol=1e-5)
    # Captions are not read: the same image scores the same whatever the caption.
    assert reward.score(images[:1], ["anything"]) == reward.score(images[:1], ["something else"])
    check_unload(reward)


def test_missing_head_names_the_file(registry, files, tmp_path):
    clip, _, _ = files
    reward = registry.rewards.create("aesthetic", {"checkpoint": str(tmp_path), "clip_model": str(clip)})
    with pytest.raises(MissingWeightsError, match=r"sac\+logos\+ava1-l14-linearMSE\.pth"):
        reward.load()
    with pytest.raises(MissingWeightsError, match="checkpoint"):
        registry.rewards.create("aesthetic", {"clip_model": str(clip)}).load()


def test_head_keys_are_strict(registry, files, tmp_path):
    clip, _, _ = files
    write_head(tmp_path / "head.pth", extra={"layers.9.weight": torch.zeros(1)})
    reward = registry.rewards.create("aesthetic", {"checkpoint": str(tmp_path / "head.pth"), "clip_model": str(clip)})
    with pytest.raises(CheckpointError, match=r"unexpected keys: layers\.9\.weight"):
        reward.load()
    write_head(tmp_path / "wide.pth", in_features=768)
    reward = registry.rewards.create("aesthetic", {"checkpoint": str(tmp_path / "wide.pth"), "clip_model": str(clip)})
    with pytest.raises(CheckpointError, match="768-d"):
        reward.load()
