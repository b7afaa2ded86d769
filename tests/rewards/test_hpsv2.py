"""HPSv2: a tiny open_clip CLIP saved as HPSv2's {"state_dict": ...} .pt, loaded through the registry."""

from __future__ import annotations

import json

import pytest
import torch
from miro_reward_common.checkpoints import CheckpointError
from reward_helpers import CAPTIONS, assert_close_lists, check_common, check_unload, odd_images, reference_letterbox

from miro_core.errors import MissingWeightsError

CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 24, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def tiny_hps(folder, *, prefix: str = "", drop: str | None = None):
    from open_clip.model import CLIP

    torch.manual_seed(0)
    model = CLIP(**CFG).eval()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": CFG, "preprocess_cfg": {}}))
    state = {prefix + k: v for k, v in model.state_dict().items() if k != drop}
    torch.save({"epoch": 1, "state_dict": state}, str(folder / "HPS_v2.1_compressed.pt"))
    return model


@pytest.fixture(scope="module")
def hps(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hpsv2")
    return folder, tiny_hps(folder)


def test_cosine_score(registry, hps):
    import open_clip

    folder, model = hps
    reward = registry.rewards.create("hpsv2", {"checkpoint": str(folder)})
    reward.load("cpu", "float32")
    images = odd_images()
    scores = check_common(reward, images, CAPTIONS)
    with torch.no_grad():
        pixels = torch.stack([reference_letterbox(im, 24) for im in images])
        out = model(pixels, open_clip.tokenize(CAPTIONS))
        expected = torch.diagonal(out[0] @ out[1].T).tolist()  # normalised features, no logit scale
    assert_close_lists(scores, expected)
    assert all(-1.0 <= s <= 1.0 for s in scores)
    check_unload(reward)


def test_module_prefix_and_strict_keys(registry, tmp_path):
    tiny_hps(tmp_path / "ddp", prefix="module.")
    reward = registry.rewards.create("hpsv2", {"checkpoint": str(tmp_path / "ddp" / "HPS_v2.1_compressed.pt")})
    reward.load()
    assert len(reward.score(odd_images()[:2], CAPTIONS[:2])) == 2
    tiny_hps(tmp_path / "broken", drop="visual.proj")
    reward = registry.rewards.create("hpsv2", {"checkpoint": str(tmp_path / "broken")})
    with pytest.raises(CheckpointError, match=r"missing keys: visual\.proj"):
        reward.load()


def test_missing_file(registry, tmp_path):
    reward = registry.rewards.create("hpsv2", {"checkpoint": str(tmp_path)})
    with pytest.raises(MissingWeightsError, match=r"HPS_v2\.1_compressed\.pt"):
        reward.load()
    reward = registry.rewards.create("hpsv2", {"checkpoint": "xswu/HPSv2-not-cached"})
    with pytest.raises(MissingWeightsError, match="not in the local Hugging Face cache"):
        reward.load()
