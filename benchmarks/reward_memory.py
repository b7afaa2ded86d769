"""Peak memory of loading and scoring each paper reward at its real size, from files in the real layout.

    .venv/bin/python benchmarks/reward_memory.py [--rewards aesthetic,hpsv2,...] [--dtype float32]
        [--workdir /tmp/miro-reward-memory] [--vqascore-size xl] [--json out.json]

For each reward, one at a time: random weights of the real architecture are written to a temporary
folder in the release's own file layout (HPSv2's ``{"state_dict": ...}`` pickle, PickScore's
``model.safetensors``, ImageReward's ``ImageReward.pt``, CLIP-FlanT5's sharded ``pytorch_model-*.bin``
with its index, ...), by a writer subprocess that holds at most one shard at a time; then a fresh
subprocess loads them through the plugin (``registry.rewards.create(name, options).load(...)``) and
scores two 320x240 images. Its peak resident set size (``ru_maxrss``: weights, activations and the
Python/torch baseline) is what a reward's ``peak_memory_mib`` must cover. The files are deleted after each
reward.

- vqascore: CLIP-FlanT5-XXL (11.3B parameters, 42 GiB in float32) does not fit this 24 GiB machine, so
  ``--vqascore-size xl`` (default) measures the XL sibling (same code, T5-XL width, 3.1B), written in
  bfloat16 and loaded in ``--vqascore-dtype`` (default bfloat16, the reference's dtype); the XXL figure is
  computed from its parameter count (meta device) with the XL run's overhead.
- jina-clip: its model is code shipped with the weights, not available offline: not measured here
  (benchmarks/reward_throughput.py times a same-size stand-in).
- Tokenizers are small synthetic vocabularies of the real kind (their memory is negligible).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REWARDS = ("aesthetic", "hpsv2", "pickscore", "sciscore", "imagereward", "vqascore")
SHARD_BYTES = 2 * 2**30


# -- real-size architectures (meta device: shapes only) ---------------------------------------------
def clip_l14_config() -> Any:
    """openai/clip-vit-large-patch14 (the aesthetic predictor's CLIP), as transformers' CLIPConfig."""
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config={
            "vocab_size": 49408,
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "max_position_embeddings": 77,
            "hidden_act": "quick_gelu",
        },
        vision_config={
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 224,
            "patch_size": 14,
            "hidden_act": "quick_gelu",
        },
        projection_dim=768,
    )


def clip_h14_config() -> Any:
    """laion/CLIP-ViT-H-14-laion2B-s32B-b79K (PickScore_v1, SciScore), as transformers' CLIPConfig."""
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config={
            "vocab_size": 49408,
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "max_position_embeddings": 77,
            "hidden_act": "gelu",
        },
        vision_config={
            "hidden_size": 1280,
            "intermediate_size": 5120,
            "num_hidden_layers": 32,
            "num_attention_heads": 16,
            "image_size": 224,
            "patch_size": 14,
            "hidden_act": "gelu",
        },
        projection_dim=1024,
    )


def shapes_of(module: Any) -> dict[str, tuple[tuple[int, ...], Any]]:
    return {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}


def meta(factory: Any) -> Any:
    import torch

    with torch.device("meta"):
        return factory()


T5_SIZES = {"xl": (2048, 5120, 32), "xxl": (4096, 10240, 64)}


def t5_fields(size: str) -> dict[str, Any]:
    width, ffn, heads = T5_SIZES[size]
    return {
        "vocab_size": 32128,
        "d_model": width,
        "d_kv": 64,
        "d_ff": ffn,
        "num_layers": 24,
        "num_decoder_layers": 24,
        "num_heads": heads,
        "feed_forward_proj": "gated-gelu",
        "tie_word_embeddings": False,
        "dropout_rate": 0.1,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
        "layer_norm_epsilon": 1e-6,
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
    }


def clip_t5_shapes(size: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(shapes, aliases) of a CLIPT5ForConditionalGeneration state dict as t2v_metrics saves it."""
    from miro_reward_vqascore.reward import CLIP_L14_336, build_projector
    from transformers import CLIPVisionConfig, CLIPVisionModel, T5Config, T5ForConditionalGeneration

    fields = t5_fields(size)
    shapes = shapes_of(meta(lambda: T5ForConditionalGeneration(T5Config(**fields))))
    shapes["embed_tokens.weight"] = shapes["shared.weight"]
    tower = shapes_of(meta(lambda: CLIPVisionModel(CLIPVisionConfig(**CLIP_L14_336))))
    shapes.update({"vision_tower.vision_tower." + k: v for k, v in tower.items()})
    projector = shapes_of(meta(lambda: build_projector("mlp2x_gelu", 1024, fields["d_model"])))
    shapes.update({"mm_projector." + k: v for k, v in projector.items()})
    aliases = {
        k: "shared.weight"
        for k in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "embed_tokens.weight")
    }
    return shapes, aliases


def blip_shapes() -> dict[str, Any]:
    """ImageReward.pt's keys (BLIP ViT-L/16 + BERT-base with cross-attention + head), real sizes."""
    import re

    import torch
    from miro_reward_imagereward.reward import text_config
    from transformers import BlipTextModel, BlipVisionConfig, BlipVisionModel

    vision = BlipVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=224,
        patch_size=16,
        layer_norm_eps=1e-6,
    )
    inverse = (
        (r"^embeddings\.class_embedding$", "cls_token"),
        (r"^embeddings\.position_embedding$", "pos_embed"),
        (r"^embeddings\.patch_embedding\.", "patch_embed.proj."),
        (r"^encoder\.layers\.(\d+)\.layer_norm1\.", r"blocks.\1.norm1."),
        (r"^encoder\.layers\.(\d+)\.layer_norm2\.", r"blocks.\1.norm2."),
        (r"^encoder\.layers\.(\d+)\.self_attn\.qkv\.", r"blocks.\1.attn.qkv."),
        (r"^encoder\.layers\.(\d+)\.self_attn\.projection\.", r"blocks.\1.attn.proj."),
        (r"^encoder\.layers\.(\d+)\.mlp\.", r"blocks.\1.mlp."),
        (r"^post_layernorm\.", "norm."),
    )
    shapes: dict[str, Any] = {}
    for key, value in shapes_of(meta(lambda: BlipVisionModel(vision))).items():
        for pattern, repl in inverse:
            if re.match(pattern, key):
                shapes["blip.visual_encoder." + re.sub(pattern, repl, key)] = value
                break
    med = MED_CONFIG
    text = meta(lambda: BlipTextModel(text_config(med, 1024), add_pooling_layer=False))
    shapes.update({"blip.text_encoder." + k: v for k, v in shapes_of(text).items()})
    shapes["blip.text_encoder.embeddings.position_ids"] = ((1, 512), torch.int64)
    for proj, width in (("vision_proj", 1024), ("text_proj", 768)):
        shapes[f"blip.{proj}.weight"] = ((256, width), torch.float32)
        shapes[f"blip.{proj}.bias"] = ((256,), torch.float32)
    shapes.update(head_shapes("mlp.", 768))
    return shapes


MED_CONFIG = {
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "type_vocab_size": 2,
    "vocab_size": 30524,
    "encoder_width": 1024,
    "add_cross_attention": True,
}


def head_shapes(prefix: str, width: int) -> dict[str, Any]:
    import torch

    out = {}
    for index, (o, i) in zip((0, 2, 4, 6, 7), [(1024, width), (128, 1024), (64, 128), (16, 64), (1, 16)]):
        out[f"{prefix}layers.{index}.weight"] = ((o, i), torch.float32)
        out[f"{prefix}layers.{index}.bias"] = ((o,), torch.float32)
    return out


# -- writing random weights ------------------------------------------------------------------------
def random_tensor(shape: tuple[int, ...], dtype: Any, generator: Any) -> Any:
    import torch

    if not dtype.is_floating_point:
        return torch.arange(shape[-1]).expand(shape).contiguous() if shape else torch.zeros((), dtype=dtype)
    return torch.empty(shape, dtype=torch.float32).normal_(0.0, 0.02, generator=generator).to(dtype)


def materialise(shapes: dict[str, Any], aliases: dict[str, str], dtype: Any = None) -> dict[str, Any]:
    import torch

    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, (shape, kind) in shapes.items():
        if key not in aliases:
            state[key] = random_tensor(shape, dtype if (dtype is not None and kind.is_floating_point) else kind, gen)
    for key, target in aliases.items():
        state[key] = state[target]
    return state


def write_sharded_bins(shapes: dict[str, Any], aliases: dict[str, str], folder: Path, dtype: Any) -> None:
    """``pytorch_model-0000i-of-0000n.bin`` + index, one shard in memory at a time; aliases stay with their
    target in one shard (as torch.save keeps shared storage)."""
    import torch

    groups: list[list[str]] = [[]]
    size = 0
    itemsize = torch.empty((), dtype=dtype).element_size()
    for key, (shape, _) in shapes.items():
        if key in aliases:
            continue
        nbytes = math.prod(shape) * itemsize
        if size + nbytes > SHARD_BYTES and groups[-1]:
            groups.append([])
            size = 0
        groups[-1].append(key)
        size += nbytes
    for key, target in aliases.items():
        next(g for g in groups if target in g).append(key)
    weight_map = {}
    gen = torch.Generator().manual_seed(0)
    for i, keys in enumerate(groups, 1):
        name = f"pytorch_model-{i:05d}-of-{len(groups):05d}.bin"
        shard = {}
        for key in keys:
            if key not in aliases:
                shape, kind = shapes[key]
                shard[key] = random_tensor(shape, dtype if kind.is_floating_point else kind, gen)
        for key in keys:
            if key in aliases:
                shard[key] = shard[aliases[key]]
        torch.save(shard, folder / name)
        weight_map.update({k: name for k in keys})
        del shard
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def write(name: str, folder: Path, size: str) -> dict[str, Any]:
    """Write ``name``'s files in the release layout under ``folder``; returns the reward's options."""
    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, str(ROOT / "scripts" / "reference_rewards"))
    import fixtures as fx

    bpe = Path(__import__("open_clip.tokenizer", fromlist=["default_bpe"]).default_bpe())
    if name == "aesthetic":
        from transformers import CLIPModel

        config = clip_l14_config()
        clip_dir = folder / "clip-vit-large-patch14"
        clip_dir.mkdir()
        config.save_pretrained(str(clip_dir))
        save_file(materialise(shapes_of(meta(lambda: CLIPModel(config))), {}), str(clip_dir / "model.safetensors"))
        torch.save(materialise(head_shapes("", 768), {}), folder / "sac+logos+ava1-l14-linearMSE.pth")
        return {"checkpoint": str(folder / "sac+logos+ava1-l14-linearMSE.pth"), "clip_model": str(clip_dir)}
    if name == "hpsv2":
        import open_clip
        from open_clip.model import CLIP

        shapes = shapes_of(meta(lambda: CLIP(**open_clip.get_model_config("ViT-H-14"))))
        torch.save({"state_dict": materialise(shapes, {})}, folder / "HPS_v2.1_compressed.pt")
        return {"checkpoint": str(folder / "HPS_v2.1_compressed.pt")}
    if name in ("pickscore", "sciscore"):
        from transformers import CLIPModel

        config = clip_h14_config()
        model_dir, proc = folder / "model", folder / "processor"
        model_dir.mkdir()
        config.save_pretrained(str(model_dir))
        save_file(materialise(shapes_of(meta(lambda: CLIPModel(config))), {}), str(model_dir / "model.safetensors"))
        fx.write_clip_tokenizer(proc, bpe)
        (proc / "preprocessor_config.json").write_text(json.dumps(fx.clip_preprocessor_config(224)))
        return {"checkpoint": str(model_dir), "processor": str(proc)}
    if name == "imagereward":
        ckpt, tok = folder / "ImageReward", folder / "bert-base-uncased"
        ckpt.mkdir()
        torch.save(materialise(blip_shapes(), {}), ckpt / "ImageReward.pt")
        (ckpt / "med_config.json").write_text(json.dumps(MED_CONFIG))
        vocab = fx.bert_vocab()
        vocab += [f"w{i}" for i in range(30522 - len(vocab))]
        tok.mkdir()
        (tok / "vocab.txt").write_text("\n".join(vocab) + "\n")
        return {"checkpoint": str(ckpt), "tokenizer": str(tok)}
    if name == "vqascore":
        from miro_reward_vqascore.reward import CLIP_L14_336

        ckpt, tower, tok = folder / "clip-flant5", folder / "clip-vit-large-patch14-336", folder / "flan-t5"
        ckpt.mkdir()
        tower.mkdir()
        shapes, aliases = clip_t5_shapes(size)
        write_sharded_bins(shapes, aliases, ckpt, torch.bfloat16)
        config = {
            "model_type": "clip_t5",
            "architectures": ["CLIPT5ForConditionalGeneration"],
            **t5_fields(size),
            "mm_hidden_size": 1024,
            "mm_projector_type": "mlp2x_gelu",
            "mm_vision_select_layer": -2,
            "mm_vision_select_feature": "patch",
            "mm_vision_tower": "openai/clip-vit-large-patch14-336",
        }
        (ckpt / "config.json").write_text(json.dumps(config))
        (tower / "config.json").write_text(json.dumps({"model_type": "clip_vision_model", **CLIP_L14_336}))
        (tower / "preprocessor_config.json").write_text(json.dumps(fx.clip_preprocessor_config(336)))
        fx.write_t5_tokenizer(tok)
        return {"checkpoint": str(ckpt), "vision_tower": str(tower), "tokenizer": str(tok)}
    raise SystemExit(f"unknown reward {name}")


# -- measuring -------------------------------------------------------------------------------------
def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(name: str, options: dict[str, Any], dtype: str, threads: int) -> dict[str, Any]:
    import numpy as np
    import torch
    from PIL import Image

    from miro_core.plugins import build_registry

    torch.set_num_threads(threads)
    registry = build_registry()
    baseline = peak_mib()
    reward = registry.rewards.create(name, {**options, "batch_size": 2})
    t0 = time.perf_counter()
    reward.load("cpu", dtype)
    load_s = time.perf_counter() - t0
    after_load = peak_mib()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) for _ in range(2)]
    scores = reward.score(images, ["a red circle next to two blue squares"] * 2)
    models = (
        [reward.model]
        if isinstance(reward.model, torch.nn.Module)
        else [m for m in vars(reward.model).values() if isinstance(m, torch.nn.Module)]
    )
    params = sum(p.numel() for m in models for p in m.parameters())
    return {
        "reward": name,
        "dtype": dtype,
        "parameters_m": round(params / 1e6, 1),
        "baseline_rss_mib": round(baseline),
        "peak_rss_after_load_mib": round(after_load),
        "peak_rss_mib": round(peak_mib()),
        "load_s": round(load_s, 1),
        "finite": all(math.isfinite(s) for s in scores),
    }


def xxl_estimate(xl: dict[str, Any]) -> dict[str, Any]:
    """CLIP-FlanT5-XXL: parameters counted on the meta device, peak = weights + the XL run's overhead."""
    shapes, aliases = clip_t5_shapes("xxl")
    params = sum(math.prod(s) for k, (s, _) in shapes.items() if k not in aliases)  # lm_head is its own matrix
    xl_shapes, xl_aliases = clip_t5_shapes("xl")
    xl_params = sum(math.prod(s) for k, (s, _) in xl_shapes.items() if k not in xl_aliases)
    item = 2 if xl["dtype"] in ("bfloat16", "float16", "bf16", "fp16") else 4
    overhead = xl["peak_rss_mib"] - xl_params * item / 2**20
    return {
        "reward": "vqascore (XXL, computed)",
        "parameters_m": round(params / 1e6, 1),
        "weights_mib_float32": round(params * 4 / 2**20),
        "weights_mib_bfloat16": round(params * 2 / 2**20),
        "overhead_mib_from_xl": round(overhead),
        "peak_rss_mib_float32": round(params * 4 / 2**20 + overhead),
        "peak_rss_mib_bfloat16": round(params * 2 / 2**20 + overhead),
    }


def run_child(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rewards", default=",".join(REWARDS))
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--vqascore-size", choices=["xl", "xxl"], default="xl")
    parser.add_argument("--vqascore-dtype", default="bfloat16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default=None, help="where the temporary checkpoints go (default: $TMPDIR)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--write", nargs=3, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        name, folder, size = args.write
        print(json.dumps(write(name, Path(folder), size)))
        return
    if args.measure:
        name, options, dtype = args.measure
        print(json.dumps(measure(name, json.loads(options), dtype, args.threads)))
        return
    results = []
    for name in [r.strip() for r in args.rewards.split(",") if r.strip()]:
        folder = Path(tempfile.mkdtemp(prefix=f"miro-mem-{name}-", dir=args.workdir))
        try:
            t0 = time.perf_counter()
            options = run_child(["--write", name, str(folder), args.vqascore_size])
            written = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            dtype = args.vqascore_dtype if name == "vqascore" else args.dtype
            result = run_child(["--measure", name, json.dumps(options), dtype, "--threads", str(args.threads)])
            result["checkpoint_mib"] = round(written / 2**20)
            result["write_s"] = round(time.perf_counter() - t0 - result["load_s"], 1)
            if name == "vqascore":
                result["size"] = args.vqascore_size
        except RuntimeError as err:
            result = {"reward": name, "error": str(err)[-1500:]}
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        results.append(result)
        print(json.dumps(result), flush=True)
        if name == "vqascore" and "error" not in result and args.vqascore_size == "xl":
            estimate = xxl_estimate(result)
            results.append(estimate)
            print(json.dumps(estimate), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
