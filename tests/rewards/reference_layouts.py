"""Release-layout checkpoints rebuilt from the committed reference records, for the plugins to load.

Every tensor comes from the reference model's own layout (the record's keys, shapes and dtypes) and the
seeded fixture values (scripts/reference_rewards/fixtures.py), and is written in the file layout the
real release has. Nothing here comes from a plugin's own model, so a silently tied embedding, a
transposed projection or a renamed key in a plugin cannot pass.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "reference_rewards"))
import fixtures as fx  # noqa: E402

RECORDS = fx.RECORDS
#: Paper scaling of each raw reference score: the comparison is made on the value MIRO bins, so the
#: tolerance below is "of the score scale" (aesthetic /10, PickScore and SciScore /100, ImageReward
#: (r + 2) / 4, HPSv2 and VQAScore as they are).
SCALING = {
    "aesthetic": lambda r: r / 10.0,
    "hpsv2": lambda r: r,
    "pickscore": lambda r: r / 100.0,
    "sciscore": lambda r: r / 100.0,
    "imagereward": lambda r: (r + 2.0) / 4.0,
    "vqascore": lambda r: r,
}


def load_record(reward: str) -> dict[str, Any]:
    return json.loads((RECORDS / f"{reward}.json").read_text())


def open_clip_bpe() -> Path:
    from open_clip.tokenizer import default_bpe

    return Path(default_bpe())


# -- aesthetic: OpenAI clip state dict -> the Hugging Face CLIPModel folder of openai/clip-vit-large-patch14
def openai_to_hf_clip(state: dict[str, Any], cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config.json, state dict) of the Hugging Face CLIPModel holding the same OpenAI CLIP weights.

    The mapping of transformers' convert_clip_original_pytorch_to_hf script: fused ``in_proj`` split into
    q/k/v, ``c_fc``/``c_proj`` -> ``fc1``/``fc2``, ``ln_pre``/``ln_post`` -> ``pre_layrnorm``/``post_layernorm``,
    the projections transposed (OpenAI multiplies ``x @ proj``, a Linear stores ``proj.T``).
    """
    out: dict[str, Any] = {}

    def tower(src: str, dst: str, layers: int) -> None:
        for i in range(layers):
            s, d = f"{src}transformer.resblocks.{i}.", f"{dst}encoder.layers.{i}."
            q, k, v = state[s + "attn.in_proj_weight"].chunk(3, dim=0)
            qb, kb, vb = state[s + "attn.in_proj_bias"].chunk(3, dim=0)
            for name, w, b in (("q", q, qb), ("k", k, kb), ("v", v, vb)):
                out[f"{d}self_attn.{name}_proj.weight"] = w.clone()
                out[f"{d}self_attn.{name}_proj.bias"] = b.clone()
            for a, b_ in (
                ("attn.out_proj", "self_attn.out_proj"),
                ("ln_1", "layer_norm1"),
                ("ln_2", "layer_norm2"),
                ("mlp.c_fc", "mlp.fc1"),
                ("mlp.c_proj", "mlp.fc2"),
            ):
                out[f"{d}{b_}.weight"] = state[f"{s}{a}.weight"].clone()
                out[f"{d}{b_}.bias"] = state[f"{s}{a}.bias"].clone()

    v = "vision_model."
    out[v + "embeddings.class_embedding"] = state["visual.class_embedding"].clone()
    out[v + "embeddings.position_embedding.weight"] = state["visual.positional_embedding"].clone()
    out[v + "embeddings.patch_embedding.weight"] = state["visual.conv1.weight"].clone()
    out[v + "pre_layrnorm.weight"], out[v + "pre_layrnorm.bias"] = (
        state["visual.ln_pre.weight"],
        state["visual.ln_pre.bias"],
    )
    tower("visual.", v, cfg["vision_layers"])
    out[v + "post_layernorm.weight"] = state["visual.ln_post.weight"]
    out[v + "post_layernorm.bias"] = state["visual.ln_post.bias"]
    out["visual_projection.weight"] = state["visual.proj"].t().contiguous()
    t = "text_model."
    out[t + "embeddings.token_embedding.weight"] = state["token_embedding.weight"].clone()
    out[t + "embeddings.position_embedding.weight"] = state["positional_embedding"].clone()
    tower("", t, cfg["transformer_layers"])
    out[t + "final_layer_norm.weight"], out[t + "final_layer_norm.bias"] = (
        state["ln_final.weight"],
        state["ln_final.bias"],
    )
    out["text_projection.weight"] = state["text_projection"].t().contiguous()
    out["logit_scale"] = state["logit_scale"].clone()
    vw, tw = cfg["vision_width"], cfg["transformer_width"]
    config = {
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": cfg["embed_dim"],
        "logit_scale_init_value": 2.6592,
        "vision_config": {
            "hidden_size": vw,
            "intermediate_size": 4 * vw,
            "num_attention_heads": vw // 64,
            "num_hidden_layers": cfg["vision_layers"],
            "image_size": cfg["image_resolution"],
            "patch_size": cfg["vision_patch_size"],
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "projection_dim": cfg["embed_dim"],
        },
        "text_config": {
            "hidden_size": tw,
            "intermediate_size": 4 * tw,
            "num_attention_heads": cfg["transformer_heads"],
            "num_hidden_layers": cfg["transformer_layers"],
            "max_position_embeddings": cfg["context_length"],
            "vocab_size": cfg["vocab_size"],
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "projection_dim": cfg["embed_dim"],
        },
    }
    return config, out


def write_aesthetic(record: dict[str, Any], root: Path) -> dict[str, Any]:
    from safetensors.torch import save_file

    clip_state = fx.state_from_layout(record["layouts"]["clip"], record["seed"])
    config, hf_state = openai_to_hf_clip(clip_state, record["config"]["openai_clip"])
    clip_dir = root / "clip-vit-large-patch14"
    clip_dir.mkdir(parents=True)
    (clip_dir / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in hf_state.items()}, str(clip_dir / "model.safetensors"))
    head = fx.state_from_layout(record["layouts"]["head"], record["seed"])
    torch.save(head, root / "sac+logos+ava1-l14-linearMSE.pth")
    return {"checkpoint": str(root / "sac+logos+ava1-l14-linearMSE.pth"), "clip_model": str(clip_dir)}


# -- hpsv2: {"state_dict": open_clip state dict} ------------------------------------------------------
def write_hpsv2(record: dict[str, Any], root: Path) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    state = fx.state_from_layout(record["layouts"]["checkpoint"], record["seed"])
    torch.save({"state_dict": state}, root / "HPS_v2.1_compressed.pt")
    cfg = {"model_cfg": record["config"]["open_clip_model_cfg"], "preprocess_cfg": {}}
    (root / "open_clip_config.json").write_text(json.dumps(cfg))
    return {"checkpoint": str(root / "HPS_v2.1_compressed.pt")}


# -- PickScore / SciScore: a transformers 4.27 CLIPModel folder + laion's processor files -------------
def write_hf_clip(record: dict[str, Any], root: Path, *, safetensors: bool = False) -> dict[str, Any]:
    model_dir, proc_dir = root / "model", root / "processor"
    model_dir.mkdir(parents=True)
    state = fx.state_from_layout(record["layouts"]["model"], record["seed"])
    (model_dir / "config.json").write_text(json.dumps(record["config"]["clip"]))
    if safetensors:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(model_dir / "model.safetensors"))
    else:
        torch.save(state, model_dir / "pytorch_model.bin")  # what transformers 4.27's save_pretrained wrote
    fx.write_clip_tokenizer(proc_dir, open_clip_bpe())
    (proc_dir / "preprocessor_config.json").write_text(json.dumps(record["config"]["preprocessor"]))
    return {"checkpoint": str(model_dir), "processor": str(proc_dir)}


# -- ImageReward: ImageReward.pt + med_config.json, bert-base-uncased's vocab.txt ----------------------
def write_imagereward(record: dict[str, Any], root: Path) -> dict[str, Any]:
    ckpt, tok = root / "ImageReward", root / "bert-base-uncased"
    ckpt.mkdir(parents=True)
    torch.save(fx.state_from_layout(record["layouts"]["checkpoint"], record["seed"]), ckpt / "ImageReward.pt")
    (ckpt / "med_config.json").write_text(json.dumps(record["config"]["med_config"]))
    fx.write_bert_vocab(tok)
    (tok / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    return {"checkpoint": str(ckpt), "tokenizer": str(tok)}


# -- VQAScore: clip-flant5-xxl folder, the CLIP tower folder, flan-t5's spiece.model --------------------
def write_vqascore(record: dict[str, Any], root: Path, *, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    from safetensors.torch import save_file

    model_dir, tower_dir, tok_dir = root / "clip-flant5-xxl", root / "clip-vit-large-patch14-336", root / "flan-t5-xxl"
    model_dir.mkdir(parents=True)
    tower_dir.mkdir(parents=True)
    state = fx.state_from_layout(record["layouts"]["checkpoint"], record["seed"])
    prefix = record["config"]["tower_prefix_in_checkpoint"]
    tower = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    for key in drop:
        state.pop(key)
    torch.save(state, model_dir / "pytorch_model.bin")
    config = dict(record["config"]["clip_t5"])
    config["mm_vision_tower"] = "openai/clip-vit-large-patch14-336"
    (model_dir / "config.json").write_text(json.dumps(config))
    (tower_dir / "config.json").write_text(json.dumps(record["config"]["tower"]))
    save_file({k: v.contiguous() for k, v in tower.items()}, str(tower_dir / "model.safetensors"))
    (tower_dir / "preprocessor_config.json").write_text(json.dumps(record["config"]["preprocessor"]))
    fx.write_t5_tokenizer(tok_dir)
    return {"checkpoint": str(model_dir), "vision_tower": str(tower_dir), "tokenizer": str(tok_dir)}


WRITERS = {
    "aesthetic": write_aesthetic,
    "hpsv2": write_hpsv2,
    "pickscore": write_hf_clip,
    "sciscore": write_hf_clip,
    "imagereward": write_imagereward,
    "vqascore": write_vqascore,
}


def recorded_pairs(record: dict[str, Any]) -> list[tuple[str, int | None, float | None, str | None]]:
    return [tuple(row) for row in record["scores"]]  # type: ignore[misc]
