"""ImageReward: a tiny state dict in the reference BLIP layout, checked against a plain-torch BLIP forward."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from miro_reward_common.checkpoints import CheckpointError
from reward_helpers import (
    CAPTIONS,
    assert_close_lists,
    check_common,
    check_unload,
    odd_images,
    reference_openai,
    write_bert_tokenizer,
)

from miro_core.errors import MissingWeightsError

V_WIDTH, V_DEPTH, PATCH, IMAGE = 64, 2, 32, 224  # BLIP heads are 64-d: one head here; 224 px as ImageReward feeds
T_WIDTH, T_HEADS, T_DEPTH, T_FFN, MAX_POS = 32, 2, 2, 64, 40
MEAN, STD = 0.16717362830052426, 1.0333394966054072


def reference_state(vocab: int, seed: int = 0) -> OrderedDict:
    """Random weights under the exact key names and shapes of ImageReward.pt."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.2):
        return torch.randn(*shape, generator=gen) * scale

    s: OrderedDict = OrderedDict()
    v = "blip.visual_encoder."
    s[v + "cls_token"] = r(1, 1, V_WIDTH)
    s[v + "pos_embed"] = r(1, (IMAGE // PATCH) ** 2 + 1, V_WIDTH)
    s[v + "patch_embed.proj.weight"] = r(V_WIDTH, 3, PATCH, PATCH, scale=0.05)
    s[v + "patch_embed.proj.bias"] = r(V_WIDTH)
    for i in range(V_DEPTH):
        b = f"{v}blocks.{i}."
        for norm in ("norm1", "norm2"):
            s[b + norm + ".weight"] = 1 + r(V_WIDTH, scale=0.1)
            s[b + norm + ".bias"] = r(V_WIDTH, scale=0.1)
        s[b + "attn.qkv.weight"], s[b + "attn.qkv.bias"] = r(3 * V_WIDTH, V_WIDTH, scale=0.1), r(3 * V_WIDTH)
        s[b + "attn.proj.weight"], s[b + "attn.proj.bias"] = r(V_WIDTH, V_WIDTH, scale=0.1), r(V_WIDTH)
        s[b + "mlp.fc1.weight"], s[b + "mlp.fc1.bias"] = r(4 * V_WIDTH, V_WIDTH, scale=0.1), r(4 * V_WIDTH)
        s[b + "mlp.fc2.weight"], s[b + "mlp.fc2.bias"] = r(V_WIDTH, 4 * V_WIDTH, scale=0.1), r(V_WIDTH)
    s[v + "norm.weight"], s[v + "norm.bias"] = 1 + r(V_WIDTH, scale=0.1), r(V_WIDTH, scale=0.1)
    t = "blip.text_encoder."
    s[t + "embeddings.position_ids"] = torch.arange(MAX_POS).expand(1, -1)
    s[t + "embeddings.word_embeddings.weight"] = r(vocab, T_WIDTH)
    s[t + "embeddings.position_embeddings.weight"] = r(MAX_POS, T_WIDTH)
    s[t + "embeddings.LayerNorm.weight"], s[t + "embeddings.LayerNorm.bias"] = 1 + r(T_WIDTH), r(T_WIDTH)
    for i in range(T_DEPTH):
        b = f"{t}encoder.layer.{i}."
        for att, kv_width in (("attention.", T_WIDTH), ("crossattention.", V_WIDTH)):
            s[b + att + "self.query.weight"], s[b + att + "self.query.bias"] = r(T_WIDTH, T_WIDTH), r(T_WIDTH)
            for name in ("key", "value"):
                s[b + att + f"self.{name}.weight"], s[b + att + f"self.{name}.bias"] = r(T_WIDTH, kv_width), r(T_WIDTH)
            s[b + att + "output.dense.weight"], s[b + att + "output.dense.bias"] = r(T_WIDTH, T_WIDTH), r(T_WIDTH)
            s[b + att + "output.LayerNorm.weight"], s[b + att + "output.LayerNorm.bias"] = 1 + r(T_WIDTH), r(T_WIDTH)
        s[b + "intermediate.dense.weight"], s[b + "intermediate.dense.bias"] = r(T_FFN, T_WIDTH), r(T_FFN)
        s[b + "output.dense.weight"], s[b + "output.dense.bias"] = r(T_WIDTH, T_FFN), r(T_WIDTH)
        s[b + "output.LayerNorm.weight"], s[b + "output.LayerNorm.bias"] = 1 + r(T_WIDTH), r(T_WIDTH)
    s["blip.vision_proj.weight"], s["blip.vision_proj.bias"] = r(256, V_WIDTH), r(256)
    s["blip.text_proj.weight"], s["blip.text_proj.bias"] = r(256, T_WIDTH), r(256)
    for index, (out_f, in_f) in zip((0, 2, 4, 6, 7), [(1024, T_WIDTH), (128, 1024), (64, 128), (16, 64), (1, 16)]):
        s[f"mlp.layers.{index}.weight"] = r(out_f, in_f, scale=in_f**-0.5)
        s[f"mlp.layers.{index}.bias"] = r(out_f, scale=0.1)
    return s


def write_checkpoint(folder, vocab: int, state: OrderedDict | None = None) -> OrderedDict:
    folder.mkdir(parents=True, exist_ok=True)
    state = reference_state(vocab) if state is None else state
    torch.save(state, str(folder / "ImageReward.pt"))
    med = {
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": T_WIDTH,
        "initializer_range": 0.02,
        "intermediate_size": T_FFN,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": MAX_POS,
        "model_type": "bert",
        "num_attention_heads": T_HEADS,
        "num_hidden_layers": T_DEPTH,
        "pad_token_id": 0,
        "type_vocab_size": 2,
        "vocab_size": vocab,
        "encoder_width": 768,
        "add_cross_attention": True,
    }
    (folder / "med_config.json").write_text(json.dumps(med))
    return state


def blip_reference(s, pixels, ids, mask):
    """ImageReward's forward written out in plain torch (float64) from the BLIP code's structure."""
    g = {k: v.double() for k, v in s.items() if v.is_floating_point()}
    batch = pixels.shape[0]
    v = "blip.visual_encoder."
    x = F.conv2d(pixels.double(), g[v + "patch_embed.proj.weight"], g[v + "patch_embed.proj.bias"], stride=PATCH)
    x = torch.cat([g[v + "cls_token"].expand(batch, -1, -1), x.flatten(2).transpose(1, 2)], dim=1) + g[v + "pos_embed"]
    n = x.shape[1]
    for i in range(V_DEPTH):
        b = f"{v}blocks.{i}."
        h = F.layer_norm(x, (V_WIDTH,), g[b + "norm1.weight"], g[b + "norm1.bias"], 1e-6)
        qkv = F.linear(h, g[b + "attn.qkv.weight"], g[b + "attn.qkv.bias"]).reshape(batch, n, 3, 1, V_WIDTH)
        q, k, val = qkv.permute(2, 0, 3, 1, 4)
        att = ((q @ k.transpose(-2, -1)) * V_WIDTH**-0.5).softmax(-1)
        x = x + F.linear(
            (att @ val).transpose(1, 2).reshape(batch, n, V_WIDTH), g[b + "attn.proj.weight"], g[b + "attn.proj.bias"]
        )
        h = F.layer_norm(x, (V_WIDTH,), g[b + "norm2.weight"], g[b + "norm2.bias"], 1e-6)
        x = x + F.linear(
            F.gelu(F.linear(h, g[b + "mlp.fc1.weight"], g[b + "mlp.fc1.bias"])),
            g[b + "mlp.fc2.weight"],
            g[b + "mlp.fc2.bias"],
        )
    image = F.layer_norm(x, (V_WIDTH,), g[v + "norm.weight"], g[v + "norm.bias"], 1e-6)

    t = "blip.text_encoder."

    def ln(z, prefix):
        return F.layer_norm(z, (T_WIDTH,), g[prefix + ".weight"], g[prefix + ".bias"], 1e-12)

    def attention(z, kv, prefix, key_mask):
        def heads(w):
            y = F.linear(w[0], g[prefix + f"self.{w[1]}.weight"], g[prefix + f"self.{w[1]}.bias"])
            return y.reshape(batch, y.shape[1], T_HEADS, -1).transpose(1, 2)

        q, k, val = heads((z, "query")), heads((kv, "key")), heads((kv, "value"))
        scores = (
            q @ k.transpose(-2, -1) / (T_WIDTH // T_HEADS) ** 0.5 + (1.0 - key_mask[:, None, None, :].double()) * -1e4
        )
        ctx = (scores.softmax(-1) @ val).transpose(1, 2).reshape(batch, -1, T_WIDTH)
        return ln(
            F.linear(ctx, g[prefix + "output.dense.weight"], g[prefix + "output.dense.bias"]) + z,
            prefix + "output.LayerNorm",
        )

    z = g[t + "embeddings.word_embeddings.weight"][ids] + g[t + "embeddings.position_embeddings.weight"][: ids.shape[1]]
    z = ln(z, t + "embeddings.LayerNorm")
    for i in range(T_DEPTH):
        b = f"{t}encoder.layer.{i}."
        z = attention(z, z, b + "attention.", mask)
        z = attention(z, image, b + "crossattention.", torch.ones(batch, image.shape[1]))
        ffn = F.linear(
            F.gelu(F.linear(z, g[b + "intermediate.dense.weight"], g[b + "intermediate.dense.bias"])),
            g[b + "output.dense.weight"],
            g[b + "output.dense.bias"],
        )
        z = ln(ffn + z, b + "output.LayerNorm")
    r = z[:, 0]
    for index in (0, 2, 4, 6, 7):
        r = F.linear(r, g[f"mlp.layers.{index}.weight"], g[f"mlp.layers.{index}.bias"])
    return ((r[:, 0] - MEAN) / STD).tolist()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagereward")
    tok = write_bert_tokenizer(root / "bert-base-uncased", size=1200)
    state = write_checkpoint(root / "ImageReward", vocab=1202)  # + [DEC], [ENC]
    return root / "ImageReward", tok, state


def test_matches_plain_torch_blip(registry, files):
    from transformers import BertTokenizer

    folder, tok_folder, state = files
    reward = registry.rewards.create("imagereward", {"checkpoint": str(folder), "tokenizer": str(tok_folder)})
    reward.load("cpu", "float32")
    images = odd_images()
    scores = check_common(reward, images, CAPTIONS)

    tok = BertTokenizer.from_pretrained(str(tok_folder))
    ids = tok(CAPTIONS, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    assert int(ids["attention_mask"][3].sum()) == 2  # the empty caption is [CLS] [SEP]
    pixels = torch.stack([reference_openai(im, IMAGE) for im in images])
    raw = blip_reference(state, pixels, ids["input_ids"], ids["attention_mask"])
    assert_close_lists(scores, [(r + 2) / 4 for r in raw], atol=2e-5, rtol=1e-4)
    check_unload(reward)


def test_unknown_and_missing_keys_are_named(registry, files, tmp_path):
    folder, tok_folder, state = files
    extra = OrderedDict(state)
    extra["blip.itm_head.weight"] = torch.zeros(2, T_WIDTH)
    write_checkpoint(tmp_path / "extra", vocab=1202, state=extra)
    reward = registry.rewards.create(
        "imagereward", {"checkpoint": str(tmp_path / "extra"), "tokenizer": str(tok_folder)}
    )
    with pytest.raises(CheckpointError, match=r"blip\.itm_head\.weight"):
        reward.load()
    short = OrderedDict((k, v) for k, v in state.items() if "crossattention.self.key.weight" not in k or ".1." not in k)
    write_checkpoint(tmp_path / "short", vocab=1202, state=short)
    reward = registry.rewards.create(
        "imagereward", {"checkpoint": str(tmp_path / "short"), "tokenizer": str(tok_folder)}
    )
    with pytest.raises(CheckpointError, match=r"missing keys: encoder\.layer\.1\.crossattention\.self\.key\.weight"):
        reward.load()


def test_tokenizer_must_fit_vocabulary(registry, files, tmp_path):
    folder, _, _ = files
    other = write_bert_tokenizer(tmp_path / "bert-other", size=1300)
    reward = registry.rewards.create("imagereward", {"checkpoint": str(folder), "tokenizer": str(other)})
    with pytest.raises(CheckpointError, match="1302 entries"):
        reward.load()


def test_missing_files(registry, files, tmp_path):
    _, tok_folder, _ = files
    (tmp_path / "ImageReward.pt").write_bytes(b"")
    reward = registry.rewards.create("imagereward", {"checkpoint": str(tmp_path), "tokenizer": str(tok_folder)})
    with pytest.raises(MissingWeightsError, match=r"lacks med_config\.json"):
        reward.load()
    reward = registry.rewards.create("imagereward", {"tokenizer": str(tok_folder)})
    with pytest.raises(MissingWeightsError, match="THUDM/ImageReward"):
        reward.load()


# -- the release layout, rebuilt from the image-reward 1.5 record ----------------------------------------
def _record_pairs(record, images=("rgb_37x23.png", "LA_30x22.png", "F_unit_23x19.tif"), captions=(0, 5, 8, 10)):
    from reference_layouts import SCALING, fx

    rows = [r for r in record["scores"] if r[0] in images and r[1] in captions]
    return (
        [fx.open_image(fx.IMAGES / r[0]) for r in rows],
        [record["captions"][r[1]] for r in rows],
        [SCALING["imagereward"](r[2]) for r in rows],
    )


@pytest.mark.parametrize("files", ["vocab-only", "vocab+tokenizer.json+config"])
def test_bert_tokenizer_file_sets_score_like_reference(registry, tmp_path, files):
    """bert-base-uncased as the README lists it: vocab.txt alone, or with tokenizer.json and its config
    (which names no class and no pad token: BertTokenizer supplies [PAD])."""
    from reference_layouts import load_record, write_imagereward
    from transformers import BertTokenizer

    record = load_record("imagereward")
    options = write_imagereward(record, tmp_path)
    tok = tmp_path / "bert-base-uncased"
    (tok / "tokenizer_config.json").unlink()
    if files != "vocab-only":
        BertTokenizer.from_pretrained(str(tok)).save_pretrained(str(tmp_path / "saved"))
        (tok / "tokenizer.json").write_bytes((tmp_path / "saved" / "tokenizer.json").read_bytes())
        (tok / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    reward = registry.rewards.create("imagereward", options)
    reward.load()
    images, captions, expected = _record_pairs(record)
    assert_close_lists(reward.score(images, captions), expected, atol=1e-5)


def test_default_tokenizer_id_resolves_from_the_cache(registry, tmp_path, monkeypatch):
    """The default `tokenizer: bert-base-uncased` (a repo id with no owner) is found in the local cache."""
    import shutil

    import huggingface_hub.constants as hub_constants
    from reference_layouts import load_record, write_imagereward

    record = load_record("imagereward")
    options = write_imagereward(record, tmp_path / "files")
    repo = tmp_path / "hub" / "models--bert-base-uncased"
    shutil.copytree(options["tokenizer"], repo / "snapshots" / ("e" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("e" * 40)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    reward = registry.rewards.create("imagereward", {"checkpoint": options["checkpoint"]})
    assert reward.options.tokenizer == "bert-base-uncased"
    reward.load()
    images, captions, expected = _record_pairs(record)
    assert_close_lists(reward.score(images, captions), expected, atol=1e-5)
