"""jina-clip: remote code only on opt-in, tested with a tiny local model whose auto_map points at a test file."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch
from reward_helpers import (
    CAPTIONS,
    assert_close_lists,
    check_common,
    check_unload,
    odd_images,
    reference_openai,
    write_xlmr_tokenizer,
)

from miro_core.errors import ConfigError, MissingWeightsError

MODELING = '''
"""A tiny stand-in for jina-clip-v2's remote code: same interface (forward -> CLIPOutput.logits_per_image)."""
import pathlib

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.models.clip.modeling_clip import CLIPOutput

pathlib.Path(__MARKER__).touch()  # proves whether this code ever ran


class TinyJinaConfig(PretrainedConfig):
    model_type = "tiny_jina_clip"

    def __init__(self, vocab_size=1100, width=24, embed_dim=12, patch=8, pad_token_id=1, **kwargs):
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.vocab_size, self.width, self.embed_dim, self.patch = vocab_size, width, embed_dim, patch


class TinyJinaModel(PreTrainedModel):
    config_class = TinyJinaConfig
    base_model_prefix = "tiny"

    def __init__(self, config):
        super().__init__(config)
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.text_projection = nn.Linear(config.width, config.embed_dim, bias=False)
        self.patch_embedding = nn.Conv2d(3, config.width, config.patch, stride=config.patch)
        self.visual_projection = nn.Linear(config.width, config.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))
        self.post_init()

    def _init_weights(self, module):
        pass

    def get_text_features(self, input_ids=None, *_, **__):
        mask = (input_ids != self.config.pad_token_id).unsqueeze(-1).float()  # like jina: mask from pad ids
        pooled = (self.token_embedding(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.text_projection(torch.tanh(pooled))

    def get_image_features(self, pixel_values=None, *_, **__):
        x = self.patch_embedding(pixel_values).flatten(2).mean(-1)
        return self.visual_projection(torch.tanh(x))

    def forward(self, input_ids=None, pixel_values=None, return_dict=None, *_, **__):
        image = self.get_image_features(pixel_values)
        text = self.get_text_features(input_ids)
        image = image / image.norm(p=2, dim=-1, keepdim=True)
        text = text / text.norm(p=2, dim=-1, keepdim=True)
        logits_per_text = text @ image.t() * self.logit_scale.exp()
        return CLIPOutput(logits_per_image=logits_per_text.t(), logits_per_text=logits_per_text,
                          text_embeds=text, image_embeds=image)
'''

MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]


def import_file(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("jina")
    build = root / "build"
    build.mkdir()
    build_marker = root / "built.marker"
    (build / "modeling_tiny.py").write_text(MODELING.replace("__MARKER__", repr(str(build_marker))))
    module = import_file(build / "modeling_tiny.py", "tiny_jina_for_building")
    torch.manual_seed(0)
    model = module.TinyJinaModel(module.TinyJinaConfig())
    ckpt = root / "jina-clip-v2"
    model.save_pretrained(str(ckpt))
    marker = root / "ran.marker"
    (ckpt / "modeling_tiny.py").write_text(MODELING.replace("__MARKER__", repr(str(marker))))
    config = json.loads((ckpt / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "modeling_tiny.TinyJinaConfig", "AutoModel": "modeling_tiny.TinyJinaModel"}
    (ckpt / "config.json").write_text(json.dumps(config))
    (ckpt / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "size": 24,
                "mean": MEAN,
                "std": STD,
                "resize_mode": "shortest",
                "interpolation": "bicubic",
                "fill_color": 0,
                "image_processor_type": "JinaCLIPImageProcessor",
            }
        )
    )
    _, vocab = write_xlmr_tokenizer(ckpt, size=1100)
    assert vocab == 1100
    return ckpt, marker, model


def test_refuses_remote_code_without_opt_in(registry, folder):
    ckpt, marker, _ = folder
    reward = registry.rewards.create("jina-clip", {"checkpoint": str(ckpt)})
    with pytest.raises(ConfigError, match=r"trust_remote_code.*jina-clip\.trust_remote_code=true"):
        reward.load()
    assert not marker.exists(), "the checkpoint's code ran without the user's consent"
    assert reward.model is None


def test_opt_in_scores_logits_diagonal(registry, folder):
    from transformers import AutoTokenizer

    ckpt, marker, model = folder
    options = {"checkpoint": str(ckpt), "trust_remote_code": True, "code_revision": None}
    reward = registry.rewards.create("jina-clip", options)
    reward.load("cpu", "float32")
    assert marker.exists()
    images = odd_images()
    scores = check_common(reward, images, CAPTIONS)

    tok = AutoTokenizer.from_pretrained(str(ckpt))
    expected = []
    with torch.no_grad():
        for image, caption in zip(images, CAPTIONS):
            pixels = reference_openai(image, 24)[None]
            img = model.get_image_features(pixels)[0]
            txt = model.get_text_features(tok([caption], return_tensors="pt")["input_ids"])[0]
            expected.append(math.exp(2.0) * float(img @ txt / (img.norm() * txt.norm())) / 100.0)
    assert_close_lists(scores, expected)
    check_unload(reward)


def test_missing_and_unsupported(registry, folder, tmp_path):
    ckpt, _, _ = folder
    with pytest.raises(MissingWeightsError, match=r"preprocessor_config\.json"):
        registry.rewards.create("jina-clip", {"checkpoint": str(tmp_path), "trust_remote_code": True}).load()
    with pytest.raises(MissingWeightsError, match="jinaai/jina-clip-v2"):
        registry.rewards.create("jina-clip", {"trust_remote_code": True}).load()
    odd = tmp_path / "odd"
    odd.mkdir()
    for f in ckpt.iterdir():
        (odd / f.name).write_bytes(f.read_bytes())
    pre = json.loads((odd / "preprocessor_config.json").read_text())
    pre["resize_mode"] = "squash"
    (odd / "preprocessor_config.json").write_text(json.dumps(pre))
    with pytest.raises(ConfigError, match="squash"):
        registry.rewards.create("jina-clip", {"checkpoint": str(odd), "trust_remote_code": True}).load()


def test_local_code_needs_code_revision_null(registry, folder):
    ckpt, _, _ = folder
    reward = registry.rewards.create("jina-clip", {"checkpoint": str(ckpt), "trust_remote_code": True})
    with pytest.raises(ConfigError, match=r"carries its own model code.*code_revision: null"):
        reward.load()


def test_code_revision_is_checked_in_the_cache(registry, folder, tmp_path, monkeypatch):
    """auto_map naming another repository: only the named revision, present in the local cache, runs."""
    import huggingface_hub.constants as hub_constants

    ckpt, marker, model = folder
    revision = "a" * 40
    cache = tmp_path / "hub"
    code_dir = cache / "models--tester--jina-impl" / "snapshots" / revision
    code_dir.mkdir(parents=True)
    (code_dir / "modeling_tiny.py").write_text((ckpt / "modeling_tiny.py").read_text())
    (cache / "models--tester--jina-impl" / "refs").mkdir()
    (cache / "models--tester--jina-impl" / "refs" / "main").write_text(revision)
    remote = tmp_path / "remote-ckpt"
    remote.mkdir()
    for f in ckpt.iterdir():
        if f.name != "modeling_tiny.py":
            (remote / f.name).write_bytes(f.read_bytes())
    config = json.loads((remote / "config.json").read_text())
    config["auto_map"] = {k: "tester/jina-impl--" + v for k, v in config["auto_map"].items()}
    (remote / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    base = {"checkpoint": str(remote), "trust_remote_code": True}
    with pytest.raises(MissingWeightsError, match=r"tester/jina-impl@" + "b" * 40 + r".*documented revision"):
        registry.rewards.create("jina-clip", {**base, "code_revision": "b" * 40}).load()
    with pytest.raises(ConfigError, match="name its revision"):
        registry.rewards.create("jina-clip", {**base, "code_revision": None}).load()
    assert registry.rewards.get("jina-clip").Options().code_revision == "39e6a55ae971b59bea6e44675d237c99762e7ee2"
    reward = registry.rewards.create("jina-clip", {**base, "code_revision": revision})
    reward.load()
    assert len(reward.score(odd_images()[:2], CAPTIONS[:2])) == 2
