"""Score the committed odd images and awkward captions with a reference reward scorer; write its record.

Run inside that scorer's own virtual environment (see build.sh), one reward at a time:

    $MIRO_REFENVS/clip/bin/python scripts/reference_rewards/record.py aesthetic     # or hpsv2, pickscore, sciscore
    $MIRO_REFENVS/ir/bin/python   scripts/reference_rewards/record.py imagereward
    $MIRO_REFENVS/t2v/bin/python  scripts/reference_rewards/record.py vqascore

Each reference is built at a small size with the upstream package's own classes, given the seeded
fixture weights (fixtures.py), written to disk in the release's own file layout, loaded back through the
upstream loading function, and asked for one score per (image, caption) pair through its public scoring
entry point. The record (tests/rewards/reference/records/REWARD.json) holds the model layout (keys,
shapes, dtypes: no weights), the configs, the package versions, and every score or error. Nothing of the
upstream code is copied here: where an upstream entry point cannot run on a CPU-only machine, the smallest
change that lets it run is made at run time and described in the record's "deviations".
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import math
import os
import sys
import tempfile
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures as fx  # noqa: E402

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)


def versions(*names: str) -> dict[str, str]:
    out = {}
    for name in ("torch", "torchvision", "pillow", "numpy", *names):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    out["python"] = sys.version.split()[0]
    return out


def score_all(fn: Callable[[Any, Any, str], float], images: list[tuple[str, Path]], captions: list[str] | None):
    """One call per pair; each result is [image, caption index or None, score or None, error or None]."""
    rows = []
    for name, path in images:
        for index in range(len(captions)) if captions is not None else [None]:
            caption = captions[index] if index is not None else ""
            try:
                value = float(fn(path, fx.open_image(path), caption))
                rows.append([name, index, value if math.isfinite(value) else repr(value), None])
            except Exception as err:  # noqa: BLE001 - the reference's own failure is what is recorded
                rows.append([name, index, None, f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"])
        print(f"  {name}", file=sys.stderr)
    return rows


# -- aesthetic: the improved-aesthetic-predictor recipe on the OpenAI `clip` package ----------------
def record_aesthetic(tmp: Path) -> dict[str, Any]:
    import clip
    import numpy as np
    import torch
    from torch import nn

    cfg = dict(
        embed_dim=768,  # the predictor's MLP(768) is fixed: the projection keeps CLIP ViT-L/14's width
        image_resolution=32,
        vision_layers=2,
        vision_width=128,
        vision_patch_size=8,
        context_length=77,
        vocab_size=49408,
        transformer_width=64,
        transformer_heads=1,
        transformer_layers=2,
    )
    model = clip.model.CLIP(**cfg).eval()
    clip_layout = fx.fill_module(model)
    clip_path = tmp / "ViT-L-14-tiny.pt"
    # OpenAI's ViT-L-14.pt is a TorchScript archive; clip.load(jit=False) rebuilds the model from its
    # state dict (a plain state-dict file cannot be read by clip 1.0.1 under torch >= 2.6: the failed
    # torch.jit.load leaves the file consumed).
    traced = torch.jit.trace_module(model, {"encode_image": torch.zeros(1, 3, 32, 32)})
    assert sorted(traced.state_dict()) == sorted(model.state_dict())
    traced.save(str(clip_path))

    class MLP(nn.Module):
        """The predictor script's MLP (simple_inference.py cannot be imported: it runs at import time,
        needs CUDA and pytorch_lightning); the same layers under the same names."""

        def __init__(self, input_size: int) -> None:
            super().__init__()
            self.layers = nn.Sequential(
                nn.Linear(input_size, 1024),
                nn.Dropout(0.2),
                nn.Linear(1024, 128),
                nn.Dropout(0.2),
                nn.Linear(128, 64),
                nn.Dropout(0.1),
                nn.Linear(64, 16),
                nn.Linear(16, 1),
            )

        def forward(self, x: Any) -> Any:
            return self.layers(x)

    head = MLP(768)
    head_layout = fx.fill_module(head)
    head_path = tmp / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save(head.state_dict(), head_path)

    def normalized(a: Any, axis: int = -1, order: int = 2) -> Any:  # the script's own helper
        l2 = np.atleast_1d(np.linalg.norm(a, order, axis))
        l2[l2 == 0] = 1
        return a / np.expand_dims(l2, axis)

    mlp = MLP(768)
    mlp.load_state_dict(torch.load(head_path))
    mlp.eval()
    model2, preprocess = clip.load(str(clip_path), device="cpu")

    def score(_path: Path, image: Any, _caption: str) -> float:
        pixels = preprocess(image).unsqueeze(0)
        with torch.no_grad():
            features = model2.encode_image(pixels)
        emb = normalized(features.cpu().detach().numpy())
        return mlp(torch.from_numpy(emb).type(torch.FloatTensor)).item()

    return {
        "reference": "improved-aesthetic-predictor simple_inference.py recipe with the OpenAI clip package",
        "versions": versions("openai-clip", "ftfy", "regex"),
        "layouts": {"clip": clip_layout, "head": head_layout},
        "config": {"openai_clip": cfg},
        "deviations": [
            "the script's MLP class is re-declared (same layers and names): the script itself runs at import",
            "CPU instead of CUDA: clip.load keeps float32 on CPU (on CUDA the reference runs CLIP in float16); "
            "the fixture weights are exact in float16, so only the arithmetic precision differs",
        ],
        "run": lambda images: score_all(score, images, None),
    }


# -- hpsv2 1.2.0 ---------------------------------------------------------------------------------
HPS_TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def record_hpsv2(tmp: Path) -> dict[str, Any]:
    import hpsv2.img_score as img_score
    import torch
    from hpsv2.src.open_clip import create_model_and_transforms
    from hpsv2.src.open_clip import factory as oc_factory

    oc_factory._MODEL_CONFIGS["ViT-tiny-hps-fixture"] = json.loads(json.dumps(HPS_TINY))
    # hpsv2.img_score.initialize_model's call, with the tiny architecture and no pretrained download.
    model, _, preprocess_val = create_model_and_transforms(
        "ViT-tiny-hps-fixture",
        None,
        precision="amp",
        device="cpu",
        jit=False,
        force_quick_gelu=False,
        force_custom_text=False,
        force_patch_dropout=False,
        force_image_size=None,
        pretrained_image=False,
        image_mean=None,
        image_std=None,
        light_augmentation=True,
        aug_cfg={},
        output_dict=True,
        with_score_predictor=False,
        with_region_predictor=False,
    )
    layout = fx.fill_module(model)
    checkpoint = tmp / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": model.state_dict()}, checkpoint)
    fx.fill_module(model, seed=fx.SEED + 99)  # scrambled: the score must come from the checkpoint file
    img_score.model_dict["model"] = model
    img_score.model_dict["preprocess_val"] = preprocess_val

    def score(_path: Path, image: Any, caption: str) -> float:
        return float(img_score.score(image, caption, cp=str(checkpoint), hps_version="v2.1")[0])

    from hpsv2.src.open_clip import get_tokenizer

    tokenizer = get_tokenizer("ViT-H-14")
    return {
        "reference": "hpsv2.img_score.score (hpsv2 1.2.0), HPS_v2.1_compressed.pt layout",
        "token_ids": [tokenizer([c])[0].tolist() for c in fx.CAPTIONS],
        "versions": versions("hpsv2", "ftfy", "regex"),
        "layouts": {"checkpoint": layout},
        "config": {"open_clip_model_cfg": HPS_TINY},
        "deviations": [
            "model_dict pre-filled with create_model_and_transforms(...) called with initialize_model's arguments "
            "but a tiny model config and no pretrained download (the checkpoint replaces every weight anyway)",
            "CPU: torch.cuda.amp.autocast is inactive, so float32 (on CUDA the reference runs under float16 autocast)",
        ],
        "run": lambda images: score_all(score, images, fx.CAPTIONS),
    }


# -- PickScore / SciScore: the PickScore README recipe on transformers 4.27.3 ---------------------
CLIP_TINY = {
    "text_config": {
        "vocab_size": 49408,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 77,
        "hidden_act": "gelu",
    },
    "vision_config": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
        "hidden_act": "gelu",
    },
    "projection_dim": 32,
}


def clip_bpe_gz() -> Path:
    import clip

    return Path(clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"


def record_hf_clip(tmp: Path, seed: int, model_id: str) -> dict[str, Any]:
    import numpy as np
    import torch
    from transformers import AutoModel, AutoProcessor, CLIPConfig, CLIPModel
    from transformers.image_utils import ChannelDimension, infer_channel_dimension_format

    model_dir, processor_dir = tmp / "model", tmp / "processor"
    model = CLIPModel(CLIPConfig(**CLIP_TINY))
    layout = fx.fill_module(model, seed=seed)
    model.save_pretrained(str(model_dir))
    fx.write_clip_tokenizer(processor_dir, clip_bpe_gz())
    (processor_dir / "preprocessor_config.json").write_text(json.dumps(fx.clip_preprocessor_config(32)))
    # The laion repo also holds its model's config.json, which AutoProcessor reads to pick CLIPProcessor.
    (processor_dir / "config.json").write_text((model_dir / "config.json").read_text())

    # The README, verbatim but for the paths and the device.
    device = "cpu"
    processor = AutoProcessor.from_pretrained(str(processor_dir))
    model = AutoModel.from_pretrained(str(model_dir)).eval().to(device)

    def calc_score(prompt: str, images: list[Any]) -> float:
        image_inputs = processor(images=images, padding=True, truncation=True, max_length=77, return_tensors="pt").to(
            device
        )
        text_inputs = processor(text=prompt, padding=True, truncation=True, max_length=77, return_tensors="pt").to(
            device
        )
        with torch.no_grad():
            image_embs = model.get_image_features(**image_inputs)
            image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
            text_embs = model.get_text_features(**text_inputs)
            text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
            scores = model.logit_scale.exp() * (text_embs @ image_embs.T)[0]
        return float(scores[0])

    def misread(path: Path) -> bool:
        array = np.array(fx.open_image(path).convert("RGB"))
        return infer_channel_dimension_format(array) == ChannelDimension.FIRST

    token_ids = [processor(text=c, padding=True, truncation=True, max_length=77)["input_ids"] for c in fx.CAPTIONS]
    return {
        "token_ids": token_ids,
        "reference": f"PickScore README recipe (exp(logit_scale) * cosine), {model_id} layout",
        "versions": versions("transformers", "tokenizers"),
        "layouts": {"model": layout},
        "config": {
            "clip": json.loads((model_dir / "config.json").read_text()),
            "preprocessor": fx.clip_preprocessor_config(32),
        },
        "deviations": ["CPU instead of CUDA (float32 either way)"],
        "misread_channels": [p.name for _, p in IMAGES if misread(p)],
        "run": lambda images: score_all(lambda _p, image, caption: calc_score(caption, [image]), images, fx.CAPTIONS),
    }


def record_pickscore(tmp: Path) -> dict[str, Any]:
    return record_hf_clip(tmp, fx.SEED, "yuvalkirstain/PickScore_v1")


def record_sciscore(tmp: Path) -> dict[str, Any]:
    return record_hf_clip(tmp, fx.SEED + 1, "Jialuo21/SciScore")


# -- ImageReward 1.5 -----------------------------------------------------------------------------
IR_VISION = {"embed_dim": 128, "depth": 2, "num_heads": 2, "patch_size": 16}
IR_MED = {
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,  # ImageReward's MLP(768) is fixed: the text width stays BERT-base's
    "initializer_range": 0.02,
    "intermediate_size": 256,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 2,
    "pad_token_id": 0,
    "type_vocab_size": 2,
    "vocab_size": len(fx.bert_vocab()) + 2,
    "encoder_width": 128,
    "add_cross_attention": True,
}


def bert_cache(root: Path) -> Path:
    """A Hugging Face cache holding bert-base-uncased's vocab.txt and tokenizer_config.json."""
    snapshot = root / "hub" / "models--bert-base-uncased" / "snapshots" / ("0" * 40)
    fx.write_bert_vocab(snapshot)
    (snapshot / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    (root / "hub" / "models--bert-base-uncased" / "refs").mkdir(parents=True, exist_ok=True)
    (root / "hub" / "models--bert-base-uncased" / "refs" / "main").write_text("0" * 40)
    return root


def record_imagereward(tmp: Path) -> dict[str, Any]:
    import ImageReward as RM
    import torch
    from ImageReward.models.BLIP import blip_pretrain
    from ImageReward.models.BLIP.vit import VisionTransformer

    def tiny_vit(vit, image_size, use_grad_checkpointing=False, ckpt_layer=0, drop_path_rate=0):
        return VisionTransformer(
            img_size=image_size,
            patch_size=IR_VISION["patch_size"],
            embed_dim=IR_VISION["embed_dim"],
            depth=IR_VISION["depth"],
            num_heads=IR_VISION["num_heads"],
            use_grad_checkpointing=use_grad_checkpointing,
            ckpt_layer=ckpt_layer,
            drop_path_rate=0,
        ), IR_VISION["embed_dim"]

    blip_pretrain.create_vit = tiny_vit
    med = tmp / "med_config.json"
    med.write_text(json.dumps(IR_MED))
    model = RM.ImageReward(med_config=str(med), device="cpu")  # the class (ImageReward/__init__ re-exports it)
    layout = fx.fill_module(model)
    weights = tmp / "ImageReward.pt"
    torch.save(model.state_dict(), weights)
    del model
    reward = RM.load(str(weights), device="cpu", med_config=str(med))

    def score(_path: Path, image: Any, caption: str) -> float:
        with torch.no_grad():
            return reward.score(caption, image)

    tokens = [reward.blip.tokenizer(c, padding="max_length", truncation=True, max_length=35) for c in fx.CAPTIONS]
    return {
        "token_ids": [t["input_ids"] for t in tokens],
        "reference": "ImageReward.load(...).score(prompt, image) (image-reward 1.5), ImageReward.pt + med_config.json",
        "versions": versions("image-reward", "transformers", "tokenizers", "timm", "fairscale"),
        "layouts": {"checkpoint": layout},
        "config": {"med_config": IR_MED, "vision": {**IR_VISION, "image_size": 224}},
        "deviations": [
            "blip_pretrain.create_vit replaced by the same VisionTransformer class at a small width and depth "
            "(ImageReward hard-codes ViT-L)",
            "bert-base-uncased is a 1500-entry WordPiece vocabulary in a local Hugging Face cache (offline)",
            "CPU instead of CUDA (float32 either way)",
        ],
        "run": lambda images: score_all(score, images, fx.CAPTIONS),
    }


# -- VQAScore: t2v_metrics 3.0 CLIP-FlanT5 ----------------------------------------------------------
T5_TINY = {
    "vocab_size": 1128,  # the tokenizer has 1100: the model is larger, as FLAN-T5's 32128 vs 32100
    "d_model": 64,
    "d_kv": 16,
    "d_ff": 128,
    "num_layers": 2,
    "num_decoder_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
    "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-6,
}
TOWER_TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
    "projection_dim": 32,
    "hidden_act": "quick_gelu",
}


def import_clip_t5() -> Any:
    """t2v_metrics' CLIP-FlanT5 module without running the package's __init__ files, which check for an
    ffmpeg binary and import every other model (and their ~60 dependencies)."""
    import importlib.util

    spec = importlib.util.find_spec("t2v_metrics")
    if spec is None:
        root = None
    else:
        root = Path(spec.submodule_search_locations[0])
    if root is None:
        raise SystemExit("t2v_metrics is not installed in this environment")
    for name, sub in (
        ("t2v_metrics", ""),
        ("t2v_metrics.models", "models"),
        ("t2v_metrics.models.vqascore_models", "models/vqascore_models"),
    ):
        module = types.ModuleType(name)
        module.__path__ = [str(root / sub)]
        sys.modules[name] = module
    import t2v_metrics.models.vqascore_models.clip_t5_model as clip_t5_model

    return clip_t5_model


def record_vqascore(tmp: Path) -> dict[str, Any]:
    import numpy as np
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel
    from transformers.image_utils import ChannelDimension, infer_channel_dimension_format

    ct5 = import_clip_t5()
    from t2v_metrics.models.vqascore_models.clip_t5.model import CLIPT5Config, CLIPT5ForConditionalGeneration
    from t2v_metrics.models.vqascore_models.mm_utils import expand2square

    tower_dir, model_dir, tok_dir = tmp / "clip-vit-large-patch14-336", tmp / "clip-flant5-xxl", tmp / "flan-t5-xxl"
    tower = CLIPVisionModel(CLIPVisionConfig(**TOWER_TINY))
    tower.save_pretrained(str(tower_dir))
    pre = {**fx.clip_preprocessor_config(32), "crop_size": 32, "size": 32}
    (tower_dir / "preprocessor_config.json").write_text(json.dumps(pre))
    fx.write_t5_tokenizer(tok_dir)

    config = CLIPT5Config(
        **T5_TINY,
        mm_vision_tower=str(tower_dir),
        mm_hidden_size=TOWER_TINY["hidden_size"],
        mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
        use_mm_proj=True,
        architectures=["CLIPT5ForConditionalGeneration"],
    )
    model = CLIPT5ForConditionalGeneration(config)
    layout = fx.fill_module(model)
    model_dir.mkdir()
    config.save_pretrained(str(model_dir))
    torch.save(model.state_dict(), model_dir / "pytorch_model.bin")  # all keys, shared storage kept, as released
    # The tower folder holds the same tower weights (the released tower was frozen during training).
    model.vision_tower.vision_tower.save_pretrained(str(tower_dir))
    tower_layout = fx.layout_of(model.vision_tower.vision_tower.state_dict())
    del model

    entry = ct5.CLIP_T5_MODELS["clip-flant5-xxl"]
    entry["tokenizer"]["path"] = str(tok_dir)
    entry["model"]["path"] = str(model_dir)
    scorer = ct5.CLIPT5Model("clip-flant5-xxl", device="cpu", cache_dir=str(tmp / "cache"))
    # load_pretrained_model casts the whole model to bfloat16 for CUDA autocast; on a CPU that leaves the
    # projector's float32 input and bfloat16 weights unmatched and the forward pass fails. The fixture
    # weights are exact in bfloat16, so casting back to float32 restores them bit for bit.
    scorer.model.float()
    tokenizer = scorer.tokenizer

    def score(path: Path, _image: Any, caption: str) -> float:
        return float(scorer.forward(images=[str(path)], texts=[caption])[0])

    mean = tuple(int(x * 255) for x in scorer.image_processor.image_mean)

    def misread(path: Path) -> bool:
        square = expand2square(fx.open_image(path).convert("RGB"), mean)
        return infer_channel_dimension_format(np.array(square)) == ChannelDimension.FIRST

    def ids(caption: str) -> Any:
        question = ct5.format_question(ct5.default_question_template.format(caption), conversation_style="t5_chat")
        return [int(i) for i in ct5.t5_tokenizer_image_token(question, tokenizer)]  # -200 marks the image

    label = [int(i) for i in ct5.t5_tokenizer_image_token(ct5.default_answer_template, tokenizer)]
    return {
        "token_ids": [ids(c) for c in fx.CAPTIONS],
        "label_ids": label,
        "reference": "t2v_metrics 3.0 CLIPT5Model('clip-flant5-xxl').forward(images, texts), clip-flant5-xxl layout",
        "versions": versions("t2v_metrics", "transformers", "tokenizers", "sentencepiece", "opencv-python-headless"),
        "layouts": {"checkpoint": layout, "tower": tower_layout},
        "config": {
            "t5": T5_TINY,
            "clip_t5": json.loads((model_dir / "config.json").read_text()),
            "tower": json.loads((tower_dir / "config.json").read_text()),
            "preprocessor": pre,
            "tokenizer_len": len(tokenizer),
            "tower_prefix_in_checkpoint": "vision_tower.vision_tower.",
        },
        "deviations": [
            "imported t2v_metrics.models.vqascore_models.clip_t5_model without the package __init__ files",
            "CLIP_T5_MODELS['clip-flant5-xxl'] paths point at local folders (offline)",
            "model cast back to float32 after load_pretrained_model's bfloat16 cast (the reference cannot run on "
            "a CPU otherwise; the fixture weights are exact in bfloat16); on CUDA it computes under bfloat16 autocast",
        ],
        "misread_channels": [p.name for _, p in IMAGES if misread(p)],
        "run": lambda images: score_all(score, images, fx.CAPTIONS),
    }


RECORDERS = {
    "aesthetic": record_aesthetic,
    "hpsv2": record_hpsv2,
    "pickscore": record_pickscore,
    "sciscore": record_sciscore,
    "imagereward": record_imagereward,
    "vqascore": record_vqascore,
}
IMAGES = [(p.name, p) for p in fx.image_files()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reward", choices=sorted(RECORDERS))
    parser.add_argument("--out", type=Path, default=None, help="default: tests/rewards/reference/records/REWARD.json")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix=f"miro-ref-{args.reward}-") as tmp_name:
        tmp = Path(tmp_name)
        if args.reward == "imagereward":
            os.environ["HF_HOME"] = str(bert_cache(tmp / "hf"))
            os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            built = RECORDERS[args.reward](tmp)
        except Exception:
            traceback.print_exc()
            raise SystemExit(f"could not build the {args.reward} reference") from None
        rows = built.pop("run")(IMAGES)
    record = {
        "reward": args.reward,
        "seed": fx.SEED + (1 if args.reward == "sciscore" else 0),
        **built,
        "images_sha256": fx.file_digest(p for _, p in IMAGES),
        "captions_sha256": fx.captions_digest(),
        "captions": fx.CAPTIONS if args.reward != "aesthetic" else None,
        "scores": rows,
    }
    out = args.out or fx.RECORDS / f"{args.reward}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(fx.dumps_record(record) + "\n")
    failed = sum(1 for r in rows if r[3])
    print(f"{args.reward}: {len(rows)} pairs, {failed} refused by the reference -> {out}")


if __name__ == "__main__":
    main()
