"""VQAScore: the t2v_metrics checkpoint layout rebuilt from the reference record (not from the plugin's own
model), its variants (missing embedding aliases, legacy buffers, tokenizer file sets), and strict errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from miro_reward_common.checkpoints import CheckpointError
from reference_layouts import SCALING, fx, load_record, write_vqascore
from reward_helpers import check_common, check_unload

from miro_core.errors import MissingWeightsError

IMAGES = ["rgb_37x23.png", "RGBA_50x31.png", "I16_33x29.png", "rgb_200x5_huge_aspect.png"]
CAPTIONS = [0, 4, 6, 8]


@pytest.fixture(scope="module")
def record():
    return load_record("vqascore")


def pairs(record):
    wanted = {(image, caption) for image in IMAGES for caption in CAPTIONS}
    rows = [r for r in record["scores"] if (r[0], r[1]) in wanted]
    images = [fx.open_image(fx.IMAGES / r[0]) for r in rows]
    captions = [record["captions"][r[1]] for r in rows]
    return images, captions, [SCALING["vqascore"](r[2]) for r in rows]


def score(registry, options, images, captions, **extra):
    reward = registry.rewards.create("vqascore", {**options, **extra})
    reward.load("cpu", "float32")
    return reward, reward.score(images, captions)


def test_release_layout_matches_reference_and_untied(registry, record, tmp_path):
    options = write_vqascore(record, tmp_path)
    images, captions, expected = pairs(record)
    reward, scores = score(registry, options, images, captions)
    torch.testing.assert_close(torch.tensor(scores), torch.tensor(expected), rtol=1e-4, atol=1e-6)
    t5 = reward.model.t5
    # FLAN-T5 is untied: a separate head; one embedding shared by the encoder and decoder (as transformers 4.x).
    assert t5.lm_head.weight.data_ptr() != t5.shared.weight.data_ptr()
    assert t5.encoder.embed_tokens.weight.data_ptr() == t5.shared.weight.data_ptr()
    assert t5.decoder.embed_tokens.weight.data_ptr() == t5.shared.weight.data_ptr()
    state = torch.load(tmp_path / "clip-flant5-xxl" / "pytorch_model.bin", weights_only=True)
    assert torch.equal(t5.lm_head.weight, state["lm_head.weight"])
    assert torch.equal(t5.shared.weight, state["shared.weight"])
    assert not torch.equal(state["lm_head.weight"], state["shared.weight"])
    del t5
    check_common(reward, images[:5], captions[:5])
    check_unload(reward)


def test_checkpoint_without_embedding_aliases(registry, record, tmp_path):
    """encoder/decoder.embed_tokens come from shared explicitly, never left random."""
    options = write_vqascore(
        record, tmp_path, drop=("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "embed_tokens.weight")
    )
    images, captions, expected = pairs(record)
    _, scores = score(registry, options, images, captions)
    torch.testing.assert_close(torch.tensor(scores), torch.tensor(expected), rtol=1e-4, atol=1e-6)


def test_inconsistent_embeddings_and_missing_head_are_refused(registry, record, tmp_path):
    options = write_vqascore(record, tmp_path / "a")
    path = tmp_path / "a" / "clip-flant5-xxl" / "pytorch_model.bin"
    state = torch.load(path, weights_only=True)
    state["decoder.embed_tokens.weight"] = state["decoder.embed_tokens.weight"].clone() + 1
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"decoder\.embed_tokens\.weight that differs from shared"):
        registry.rewards.create("vqascore", options).load()
    options = write_vqascore(record, tmp_path / "b", drop=("lm_head.weight",))
    with pytest.raises(CheckpointError, match=r"missing keys: lm_head\.weight"):
        registry.rewards.create("vqascore", options).load()
    options = write_vqascore(record, tmp_path / "c", drop=("decoder.block.1.layer.2.DenseReluDense.wo.weight",))
    with pytest.raises(CheckpointError, match=r"decoder\.block\.1\.layer\.2\.DenseReluDense\.wo\.weight"):
        registry.rewards.create("vqascore", options).load()
    options = write_vqascore(record, tmp_path / "d", drop=("mm_projector.2.bias",))
    with pytest.raises(CheckpointError, match=r"missing keys: 2\.bias"):
        registry.rewards.create("vqascore", options).load()


def test_legacy_position_ids_and_tower_from_its_folder(registry, record, tmp_path):
    """A tower saved by transformers < 4.31 (position_ids buffers) loads, from the checkpoint or its folder."""
    from safetensors.torch import load_file, save_file

    prefix = "vision_tower.vision_tower."
    tower_keys = [k for k, _, _ in record["layouts"]["checkpoint"]["tensors"] if k.startswith(prefix)]
    options = write_vqascore(record, tmp_path, drop=tuple(tower_keys))
    tower = tmp_path / "clip-vit-large-patch14-336"
    state = load_file(str(tower / "model.safetensors"))
    state["vision_model.embeddings.position_ids"] = torch.arange(17).unsqueeze(0)
    save_file(state, str(tower / "model.safetensors"))
    images, captions, expected = pairs(record)
    _, scores = score(registry, options, images, captions)
    torch.testing.assert_close(torch.tensor(scores), torch.tensor(expected), rtol=1e-4, atol=1e-6)
    ckpt = tmp_path / "clip-flant5-xxl" / "pytorch_model.bin"
    full = fx.state_from_layout(record["layouts"]["checkpoint"], record["seed"])
    full[prefix + "vision_model.embeddings.position_ids"] = torch.arange(17).unsqueeze(0)
    torch.save(full, ckpt)
    _, scores = score(registry, options, images, captions)
    torch.testing.assert_close(torch.tensor(scores), torch.tensor(expected), rtol=1e-4, atol=1e-6)
    (tower / "model.safetensors").unlink()
    ckpt.unlink()
    torch.save({k: v for k, v in full.items() if not k.startswith(prefix)}, ckpt)
    with pytest.raises(MissingWeightsError, match=r"model\.safetensors"):
        registry.rewards.create("vqascore", options).load()


@pytest.mark.parametrize("files", ["spiece-only", "tokenizer-json"])
def test_tokenizer_file_sets(registry, record, tmp_path, files):
    """FLAN-T5's tokenizer folder as spiece.model alone (sentencepiece) or tokenizer.json with its configs."""
    from transformers import T5Tokenizer

    options = write_vqascore(record, tmp_path)
    tok = tmp_path / "flan-t5-xxl"
    if files == "spiece-only":
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            (tok / name).unlink()
    else:
        converted = tmp_path / "converted"
        T5Tokenizer.from_pretrained(str(tok)).save_pretrained(str(converted))
        shutil.rmtree(tok)
        tok.mkdir()
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (tok / name).write_bytes((converted / name).read_bytes())
        assert not (tok / "spiece.model").exists()
    images, captions, expected = pairs(record)
    _, scores = score(registry, options, images, captions)
    torch.testing.assert_close(torch.tensor(scores), torch.tensor(expected), rtol=1e-4, atol=1e-6)


def test_owner_less_repo_ids_resolve_in_the_cache(registry, record, tmp_path, monkeypatch):
    """A repo id without an owner (as google's oldest models) is looked up in the local cache only."""
    import huggingface_hub.constants as hub_constants

    options = write_vqascore(record, tmp_path / "files")
    snapshot = tmp_path / "hub" / "models--flan-t5-tiny" / "snapshots" / ("c" * 40)
    shutil.copytree(options["tokenizer"], snapshot)
    (tmp_path / "hub" / "models--flan-t5-tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--flan-t5-tiny" / "refs" / "main").write_text("c" * 40)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    images, captions, expected = pairs(record)
    _, scores = score(registry, {**options, "tokenizer": "flan-t5-tiny"}, images, captions)
    torch.testing.assert_close(torch.tensor(scores), torch.tensor(expected), rtol=1e-4, atol=1e-6)
    with pytest.raises(MissingWeightsError, match="flan-t5-absent.*not in the local Hugging Face cache"):
        registry.rewards.create("vqascore", {**options, "tokenizer": "flan-t5-absent"}).load()


def test_missing_checkpoint(registry, tmp_path):
    reward = registry.rewards.create("vqascore", {"checkpoint": str(tmp_path)})
    with pytest.raises(MissingWeightsError, match=r"config\.json.*pytorch_model\.bin"):
        reward.load()
    with pytest.raises(MissingWeightsError, match="zhiqiulin/clip-flant5-xxl"):
        registry.rewards.create("vqascore").load()


def test_caption_with_image_token_is_text(registry, record, tmp_path):
    """The reference raises on a caption holding "<image>"; the plugin splits at the template's own."""
    options = write_vqascore(record, tmp_path)
    reward = registry.rewards.create("vqascore", options)
    reward.load()
    image = fx.open_image(fx.IMAGES / "rgb_37x23.png")
    value = reward.score([image], ["a <image> of a cat"])[0]
    assert 0.0 < value < 1.0
    assert json.dumps(value)


def test_spiece_only_without_protobuf_says_what_to_install(tmp_path):
    """transformers' fallback for an unreadable spiece.model talks about tiktoken; the error here does not."""
    import subprocess
    import sys
    from pathlib import Path

    import fixtures

    fixtures.write_t5_tokenizer(tmp_path / "tok", configs=False)
    code = (
        "import sys\n"
        "sys.modules['google.protobuf'] = None\n"
        "from miro_reward_common.tokenizers import load_tokenizer\n"
        f"load_tokenizer(__import__('pathlib').Path({str(tmp_path / 'tok')!r}), reward='vqascore', cls='T5Tokenizer')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent)
    assert out.returncode != 0
    assert "needs the sentencepiece and protobuf packages" in out.stderr, out.stderr[-2000:]
