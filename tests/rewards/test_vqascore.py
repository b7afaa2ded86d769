"""VQAScore: a tiny CLIP-T5 checkpoint in the t2v_metrics layout, checked against a manual cross-entropy."""

from __future__ import annotations

import json
import math

import pytest
import torch
from miro_reward_common.checkpoints import CheckpointError
from PIL import Image
from reward_helpers import CAPTIONS, assert_close_lists, check_common, check_unload, odd_images, write_t5_tokenizer

from miro_core.errors import MissingWeightsError

VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "image_size": 28,
    "patch_size": 14,
    "projection_dim": 16,
    "hidden_act": "quick_gelu",
}
MODEL_VOCAB = 1232  # larger than the tokenizer's 1200, as 32128 vs 32100 in FLAN-T5
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def t5_fields() -> dict:
    return {
        "vocab_size": MODEL_VOCAB,
        "d_model": 32,
        "d_kv": 8,
        "d_ff": 64,
        "num_layers": 2,
        "num_decoder_layers": 2,
        "num_heads": 4,
        "relative_attention_num_buckets": 8,
        "relative_attention_max_distance": 16,
        "feed_forward_proj": "gated-gelu",
        "tie_word_embeddings": False,  # decoder_start_token_id left out: the plugin defaults it to pad (0)
        "pad_token_id": 0,
        "eos_token_id": 1,
        "dropout_rate": 0.0,
    }


def write_vision_folder(folder, with_weights: bool):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(3)
    model = CLIPVisionModel(CLIPVisionConfig(**VISION)).eval()
    folder.mkdir(parents=True, exist_ok=True)
    if with_weights:
        model.save_pretrained(str(folder))
    else:
        model.config.save_pretrained(str(folder))
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "crop_size": 28,
                "size": 28,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                "resample": 3,
            }
        )
    )
    return model


def write_checkpoint(folder, *, vision=None, drop: str | None = None):
    """config.json + two .bin shards + index, keys as CLIPT5ForConditionalGeneration saves them."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(1)
    t5 = T5ForConditionalGeneration(T5Config(**t5_fields())).eval()
    gen = torch.Generator().manual_seed(2)
    projector = {
        "mm_projector.0.weight": torch.randn(32, VISION["hidden_size"], generator=gen) * 0.2,
        "mm_projector.0.bias": torch.randn(32, generator=gen) * 0.1,
        "mm_projector.2.weight": torch.randn(32, 32, generator=gen) * 0.2,
        "mm_projector.2.bias": torch.randn(32, generator=gen) * 0.1,
    }
    state = {k: v.clone() for k, v in t5.state_dict().items()}
    state["embed_tokens.weight"] = state["shared.weight"]
    state.update(projector)
    if vision is not None:
        # transformers 4 layout, as the released checkpoint: vision_tower.vision_tower.vision_model.<key>
        state.update({"vision_tower.vision_tower.vision_model." + k: v for k, v in vision.state_dict().items()})
    state.pop(drop, None)
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(state)
    shards = {"pytorch_model-00001-of-00002.bin": keys[::2], "pytorch_model-00002-of-00002.bin": keys[1::2]}
    for name, names in shards.items():
        torch.save({k: state[k] for k in names}, str(folder / name))
    weight_map = {k: name for name, names in shards.items() for k in names}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = {"model_type": "clip_t5", "architectures": ["CLIPT5ForConditionalGeneration"], **t5_fields()}
    config.update(
        mm_hidden_size=VISION["hidden_size"],
        mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
        mm_vision_tower="openai/clip-vit-large-patch14-336",
    )
    (folder / "config.json").write_text(json.dumps(config))
    return state


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("vqascore")
    vision = write_vision_folder(root / "clip-vit-large-patch14-336", with_weights=False)
    state = write_checkpoint(root / "clip-flant5-xxl", vision=vision)
    tok, size = write_t5_tokenizer(root / "flan-t5-xxl")
    assert size == 1200
    return root, state, vision


def manual_scores(root, state, vision, images, captions):
    """Reference pipeline by hand: square pad, HF PIL processor, CLIP layer -2, projector, T5, cross-entropy."""
    from miro_reward_common.images import to_8bit
    from transformers import CLIPImageProcessorPil, T5Config, T5ForConditionalGeneration, T5Tokenizer

    tok = T5Tokenizer.from_pretrained(str(root / "flan-t5-xxl"))
    t5 = T5ForConditionalGeneration(T5Config(**t5_fields())).eval()
    t5.load_state_dict({k: v for k, v in state.items() if not k.startswith(("mm_", "vision_tower", "embed_tokens"))})
    proc = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    out = []
    with torch.no_grad():
        for image, caption in zip(images, captions):
            rgb = to_8bit(image).convert("RGB")
            side = max(rgb.size)
            square = Image.new("RGB", (side, side), (122, 116, 104))
            square.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
            pixels = proc(images=[square], return_tensors="pt")["pixel_values"]
            states = vision(pixel_values=pixels, output_hidden_states=True).hidden_states
            assert len(states) == VISION["num_hidden_layers"] + 1  # embeddings, then one per layer
            hidden = states[-2][0, 1:]  # second-to-last layer, CLS dropped
            w = state
            feats = torch.nn.functional.linear(
                torch.nn.functional.gelu(
                    torch.nn.functional.linear(hidden, w["mm_projector.0.weight"], w["mm_projector.0.bias"])
                ),
                w["mm_projector.2.weight"],
                w["mm_projector.2.bias"],
            )
            prompt = f'{SYSTEM} USER: <image>\nDoes this figure show "{caption}"? Please answer yes or no. ASSISTANT: '
            before, after = prompt.split("<image>")
            ids_before, ids_after = tok(before).input_ids, tok(after).input_ids
            assert ids_before[-1] == 1 and ids_after[-1] == 1  # each chunk ends with </s>
            emb = t5.shared.weight
            embeds = torch.cat([emb[ids_before], feats, emb[ids_after]])[None]
            labels = torch.tensor([tok("Yes").input_ids])
            assert labels[0, -1] == 1
            decoder_in = torch.cat([torch.zeros(1, 1, dtype=torch.long), labels[:, :-1]], dim=1)
            logits = t5(inputs_embeds=embeds, decoder_input_ids=decoder_in).logits[0, :, : len(tok)]
            ce = -torch.log_softmax(logits.double(), dim=-1).gather(1, labels.T).mean()
            out.append(math.exp(-float(ce)))
    return out


def test_matches_manual_cross_entropy(registry, files):
    root, state, vision = files
    opts = {
        "checkpoint": str(root / "clip-flant5-xxl"),
        "tokenizer": str(root / "flan-t5-xxl"),
        "vision_tower": str(root / "clip-vit-large-patch14-336"),
    }
    reward = registry.rewards.create("vqascore", opts)
    reward.load("cpu", "float32")
    images = odd_images()
    scores = check_common(reward, images, CAPTIONS)
    assert all(0.0 < s < 1.0 for s in scores)
    assert reward.scale(0.25) == 0.25  # VQAScore is binned unscaled
    assert_close_lists(scores, manual_scores(root, state, vision, images, CAPTIONS), atol=1e-6, rtol=1e-4)
    check_unload(reward)


def test_vision_tower_from_its_own_folder(registry, files, tmp_path):
    root, _, _ = files
    tower = write_vision_folder(tmp_path / "tower", with_weights=True)
    state = write_checkpoint(tmp_path / "ckpt", vision=None)
    opts = {
        "checkpoint": str(tmp_path / "ckpt"),
        "tokenizer": str(root / "flan-t5-xxl"),
        "vision_tower": str(tmp_path / "tower"),
    }
    reward = registry.rewards.create("vqascore", opts)
    reward.load()
    images, captions = odd_images()[:2], CAPTIONS[:2]
    assert_close_lists(
        reward.score(images, captions), manual_scores(root, state, tower, images, captions), atol=1e-6, rtol=1e-4
    )
    # Without the tower's weights anywhere, the error says what is missing.
    empty = tmp_path / "config-only"
    write_vision_folder(empty, with_weights=False)
    reward = registry.rewards.create("vqascore", {**opts, "vision_tower": str(empty)})
    with pytest.raises(MissingWeightsError, match=r"model\.safetensors"):
        reward.load()


def test_strict_keys(registry, files, tmp_path):
    root, _, vision = files
    write_checkpoint(tmp_path / "broken", vision=vision, drop="decoder.block.1.layer.2.DenseReluDense.wo.weight")
    opts = {
        "checkpoint": str(tmp_path / "broken"),
        "tokenizer": str(root / "flan-t5-xxl"),
        "vision_tower": str(root / "clip-vit-large-patch14-336"),
    }
    with pytest.raises(CheckpointError, match=r"decoder\.block\.1\.layer\.2\.DenseReluDense\.wo\.weight"):
        registry.rewards.create("vqascore", opts).load()
    write_checkpoint(tmp_path / "noproj", vision=vision, drop="mm_projector.2.bias")
    with pytest.raises(CheckpointError, match=r"missing keys: 2\.bias"):
        registry.rewards.create("vqascore", {**opts, "checkpoint": str(tmp_path / "noproj")}).load()


def test_missing_checkpoint(registry, tmp_path):
    reward = registry.rewards.create("vqascore", {"checkpoint": str(tmp_path)})
    with pytest.raises(MissingWeightsError, match=r"config\.json.*pytorch_model\.bin"):
        reward.load()
    with pytest.raises(MissingWeightsError, match="zhiqiulin/clip-flant5-xxl"):
        registry.rewards.create("vqascore").load()
