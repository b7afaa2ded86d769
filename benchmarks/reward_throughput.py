"""Throughput and peak memory of the seven paper rewards at their real architecture sizes, random weights.

    .venv/bin/python benchmarks/reward_throughput.py [--rewards aesthetic,hpsv2] [--batch-size 4]
        [--batches 2] [--threads 2] [--json out.json]

Each reward runs in a fresh subprocess, so the peak resident memory reported is its own (weights,
activations and the Python/torch baseline). Inside it, the real-size architecture is built with random
weights (no checkpoint exists offline), handed to the plugin's own scoring code (preprocessing,
tokenization, forward, score formula), warmed up on one batch, then timed on ``--batches`` batches of
non-square RGB images. Differences from the real models, stated in the output:

- jina-clip: its model is remote code not available offline; a stand-in of the same size is timed
  (timm EVA02-L/14 image tower at 512 px + a 24-layer 1024-wide XLM-RoBERTa text tower with the
  250k vocabulary), through the plugin's preprocessing, tokenization and score code.
- vqascore: CLIP-FlanT5-XXL (11.1B + 0.3B parameters) does not fit 24 GiB; CLIP-FlanT5-XL (the XL
  sibling: same design, T5-XL width) is timed in bfloat16, and the XXL weight memory is computed from its
  parameter count (meta-device model, nothing allocated).
- Tokenizers are synthetic vocabularies of the real kind (the real CLIP BPE for the CLIP models).

Annotation throughput (``--annotate``): the whole ``miro annotate`` engine (reading shards, decoding,
reward preprocessing in DataLoader workers, scoring, writing tables) on a dataset it writes once, for each
``--workers`` value, interleaved and repeated in fresh subprocesses; it reports images/s (wall time,
loading included, and the scoring loop alone) and the device-wait share (the share of the scoring loop
spent waiting for the next batch):

    .venv/bin/python benchmarks/reward_throughput.py --annotate shapes --samples 5000 --workers 0,1
    .venv/bin/python benchmarks/reward_throughput.py --annotate aesthetic --samples 192 --workers 0,1 \
        --batch-size 16

``shapes`` annotates shapes-world samples (32 px) with the three shapes rewards; ``aesthetic`` annotates
640x480 JPEGs with the LAION aesthetic predictor at its real size (CLIP ViT-L/14 image tower, 304M
parameters) built with random weights (no checkpoint offline), through the plugin's own ``prepare`` and
``score_prepared``.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import string
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

REWARDS = ("aesthetic", "hpsv2", "imagereward", "pickscore", "sciscore", "jina-clip", "vqascore")


# -- tokenizers ------------------------------------------------------------------------------------
def clip_tokenizer() -> Any:
    import gzip

    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPTokenizer

    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    pairs = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(p) for p in pairs] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=pairs)


def bert_tokenizer(size: int = 30522) -> Any:
    from transformers import BertTokenizer

    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.ascii_lowercase + string.punctuation)
    pieces += ["##" + c for c in string.ascii_lowercase]
    pieces += [f"w{i}" for i in range(size - len(pieces))]
    return BertTokenizer(vocab={p: i for i, p in enumerate(pieces)})


def unigram_pieces(size: int) -> list[tuple[str, float]]:
    pieces = ["▁" + c for c in string.ascii_lowercase] + list(string.ascii_letters + string.punctuation) + ["▁"]
    pieces += [f"▁x{i}" for i in range(size - len(pieces))]
    return [(p, -float(k + 1)) for k, p in enumerate(pieces)]


def t5_tokenizer() -> Any:
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=[("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + unigram_pieces(32000 - 3), extra_ids=100)


def xlmr_tokenizer() -> Any:
    from transformers import XLMRobertaTokenizer

    specials = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    return XLMRobertaTokenizer(vocab=specials + unigram_pieces(4000) + [("<mask>", 0.0)])


_FILES: list[Any] = []  # temporary checkpoint folders, kept while their tensors are memory-mapped


def build(name: str) -> tuple[Any, str]:
    """(reward with real-size random weights loaded, note on what was measured).

    The weights are written in the release's file layout (benchmarks/reward_memory.py) and loaded through
    the plugin's own ``load``; jina-clip, whose model is remote code, is a same-size stand-in.
    """
    import tempfile
    from pathlib import Path

    import torch

    from miro_core.plugins import build_registry

    registry = build_registry()
    if name == "jina-clip":
        from miro_reward_common.images import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
        from miro_reward_jina_clip.reward import JinaPreprocessing

        reward = registry.rewards.create(name, {})
        reward.device, reward.dtype = "cpu", torch.float32
        reward._preprocessing = JinaPreprocessing(Path("."), xlmr_tokenizer(), 512, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
        reward.model = JinaStandIn().eval()
        return reward, "same-size stand-in (EVA02-L/14 @512 + 24x1024 XLM-R, 250k vocab), random weights, float32"
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from reward_memory import write

    folder = tempfile.TemporaryDirectory(prefix=f"miro-throughput-{name}-")
    _FILES.append(folder)
    options = write(name, Path(folder.name), "xl")
    reward = registry.rewards.create(name, options)
    if name == "vqascore":
        reward.load("cpu", "bfloat16")
        return reward, "CLIP-FlanT5-XL (XXL does not fit 24 GiB), random weights, bfloat16"
    reward.load("cpu", "float32")
    return reward, "real architecture, random weights in the release layout, float32"


def t5_config(size: str) -> Any:
    from transformers import T5Config

    width, ffn, heads = {"xl": (2048, 5120, 32), "xxl": (4096, 10240, 64)}[size]
    return T5Config(
        vocab_size=32128,
        d_model=width,
        d_kv=64,
        d_ff=ffn,
        num_layers=24,
        num_decoder_layers=24,
        num_heads=heads,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


def clip_l14_336() -> Any:
    from miro_reward_vqascore.reward import CLIP_L14_336
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(**CLIP_L14_336)


def xxl_parameters() -> int:
    """Parameters of CLIP-FlanT5-XXL (T5-XXL + CLIP ViT-L/14-336 tower + projector), counted on the meta device."""
    import torch
    from miro_reward_vqascore.reward import build_projector
    from transformers import CLIPVisionModel, T5ForConditionalGeneration

    with torch.device("meta"):
        t5 = T5ForConditionalGeneration(t5_config("xxl"))
        vision = CLIPVisionModel(clip_l14_336())
        projector = build_projector("mlp2x_gelu", 1024, 4096)
    return sum(p.numel() for m in (t5, vision, projector) for p in m.parameters())


class JinaStandIn(nn.Module):
    """Same size and computation shape as jina-clip-v2, with the interface of its remote code."""

    def __init__(self) -> None:
        import timm
        from transformers import XLMRobertaConfig, XLMRobertaModel

        super().__init__()
        self.vision = timm.create_model(
            "eva02_large_patch14_clip_224", pretrained=False, img_size=512, num_classes=1024
        )
        text_config = XLMRobertaConfig(
            vocab_size=250002,
            hidden_size=1024,
            num_hidden_layers=24,
            num_attention_heads=16,
            intermediate_size=4096,
            max_position_embeddings=8194,
            type_vocab_size=1,
            pad_token_id=1,
        )
        self.text = XLMRobertaModel(text_config, add_pooling_layer=False)
        self.text_projection = nn.Linear(1024, 1024, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, input_ids: Any, attention_mask: Any, pixel_values: Any, return_dict: bool = True) -> Any:
        image = self.vision(pixel_values)
        hidden = self.text(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        text = self.text_projection((hidden * mask).sum(1) / mask.sum(1))
        image = image / image.norm(dim=-1, keepdim=True)
        text = text / text.norm(dim=-1, keepdim=True)
        return SimpleNamespace(logits_per_image=self.logit_scale.exp() * image @ text.t())


# -- measuring -------------------------------------------------------------------------------------
def images_and_captions(n: int) -> tuple[list[Any], list[str]]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) for _ in range(n)]
    captions = ["a photo of a red circle next to two blue squares on a wooden table"] * n
    return images, captions


def child(name: str, batch_size: int, batches: int, threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    reward, note = build(name)
    build_s = time.perf_counter() - t0
    models = [reward.model] if isinstance(reward.model, torch.nn.Module) else [
        m for m in vars(reward.model).values() if isinstance(m, torch.nn.Module)
    ]
    params = sum(p.numel() for m in models for p in m.parameters())
    images, captions = images_and_captions(batch_size)
    reward.score(images, captions)  # warm-up
    t0 = time.perf_counter()
    for _ in range(batches):
        scores = reward.score(images, captions)
    elapsed = time.perf_counter() - t0
    result = {
        "reward": name,
        "measured": note,
        "parameters_m": round(params / 1e6, 1),
        "batch_size": batch_size,
        "images_per_s": round(batch_size * batches / elapsed, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
        "build_s": round(build_s, 1),
        "finite": all(math.isfinite(s) for s in scores),
        "threads": threads,
    }
    if name == "vqascore":
        n = xxl_parameters()
        result["xxl_parameters_m"] = round(n / 1e6, 1)
        result["xxl_weights_mib_float32"] = round(n * 4 / 2**20)
        result["xxl_weights_mib_bfloat16"] = round(n * 2 / 2**20)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rewards", default=",".join(REWARDS))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--annotate", choices=["shapes", "aesthetic"], default=None)
    parser.add_argument("--samples", type=int, default=5000, help="--annotate: dataset size")
    parser.add_argument("--workers", default="0,1", help="--annotate: worker counts to compare")
    parser.add_argument("--repeats", type=int, default=2, help="--annotate: rounds (interleaved)")
    parser.add_argument("--workdir", default=None, help="--annotate: where the dataset is cached")
    parser.add_argument("--annotate-child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.annotate_child:
        kind, data, workers = args.annotate_child
        print(json.dumps(annotate_child(kind, data, int(workers), args.batch_size, args.threads)))
        return
    if args.annotate:
        annotate_benchmark(args)
        return
    if args.child:
        print(json.dumps(child(args.child, args.batch_size, args.batches, args.threads)))
        return
    results = []
    for name in [r.strip() for r in args.rewards.split(",") if r.strip()]:
        batch = min(args.batch_size, 2) if name == "vqascore" else args.batch_size
        cmd = [sys.executable, __file__, "--child", name, "--batch-size", str(batch)]
        cmd += ["--batches", str(args.batches), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


# -- annotation throughput -------------------------------------------------------------------------
def random_aesthetic() -> Any:
    """The registered ``aesthetic`` reward at real size with random weights (no files needed)."""
    from pathlib import Path

    from miro_reward_aesthetic.reward import AestheticPreprocessing, LoadedAesthetic
    from miro_reward_common.heads import build_linear_head
    from transformers import CLIPConfig, CLIPVisionModelWithProjection

    from miro_core.plugins import build_registry

    base = build_registry().rewards.get("aesthetic")

    class RandomAesthetic(base):  # type: ignore[valid-type,misc]
        def _build_preprocessing(self) -> Any:
            vision = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                      "num_attention_heads": 16, "image_size": 224, "patch_size": 14, "hidden_act": "quick_gelu"}
            config = CLIPConfig(vision_config=vision, projection_dim=768)
            return AestheticPreprocessing(Path("."), config, 224)

        def _load(self, device: str, dtype: Any) -> Any:
            torch.manual_seed(0)
            vision = self.preprocessing.config.vision_config
            vision.projection_dim = 768
            clip = CLIPVisionModelWithProjection(vision).eval().to(device=device, dtype=dtype)
            return LoadedAesthetic(clip=clip, head=build_linear_head(768).eval().to(device))

    return RandomAesthetic()


def write_annotation_data(kind: str, folder: str, samples: int) -> None:
    import io

    import numpy as np
    from PIL import Image

    from miro_core.data.shards import write_index
    from miro_core.shapes.dataset import write_shapes_dataset

    if kind == "shapes":
        write_shapes_dataset(folder, n=samples, seed=0, progress=False)
        return
    import tarfile
    from pathlib import Path

    Path(folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    shards = []
    for start in range(0, samples, 50):
        name = f"photos-{start // 50:06d}"
        with tarfile.open(f"{folder}/{name}.tar", "w") as tar:
            count = min(50, samples - start)
            for i in range(start, start + count):
                base = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)  # smooth, photo-like after upsampling
                image = Image.fromarray(base).resize((640, 480), Image.Resampling.BICUBIC)
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=90)
                for member, payload in ((f"{i:07d}.jpg", buffer.getvalue()), (f"{i:07d}.txt", b"a photo")):
                    info = tarfile.TarInfo(member)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
        shards.append({"name": name, "file": f"{name}.tar", "samples": count})
    write_index(folder, shards, {"generator": "reward_throughput photos", "samples": samples})


def annotate_child(kind: str, data: str, workers: int, batch_size: int, threads: int) -> dict[str, Any]:
    import tempfile

    from miro_core.annotate import AnnotateConfig, Annotator
    from miro_core.plugins import build_registry

    torch.set_num_threads(threads)
    if kind == "shapes":
        names = ["shapes-alignment", "shapes-aesthetic", "shapes-sharpness"]
        rewards = [build_registry().rewards.create(n) for n in names]
    else:
        rewards = [random_aesthetic()]
    with tempfile.TemporaryDirectory() as out:
        cfg = AnnotateConfig(data=data, out=out, rewards=[r.name for r in rewards], workers=workers,
                             batch_size=batch_size)
        record = Annotator(cfg, rewards).run().stats.as_json()
    return {
        "annotate": kind,
        "workers": workers,
        "samples": record["samples"],
        "wall_s": record["wall_seconds"],
        "load_s": record["load_seconds"],
        "images_per_s": record["images_per_second"],
        "loop_images_per_s": record["loop_images_per_second"],
        "device_wait_share": record["device_wait_share"],
        "decode_s": record["decode_seconds"],
        "prepare_s": record["prepare_seconds"],
        "reward_s": record["reward_seconds"],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
        "threads": threads,
    }


def annotate_benchmark(args: argparse.Namespace) -> None:
    import statistics
    import tempfile
    from pathlib import Path

    workdir = Path(args.workdir or tempfile.gettempdir()) / f"miro-annotate-bench-{args.annotate}-{args.samples}"
    if not (workdir / "index.json").exists():
        write_annotation_data(args.annotate, str(workdir), args.samples)
    batch = args.batch_size if args.annotate == "aesthetic" else max(args.batch_size, 64)
    counts = [int(w) for w in args.workers.split(",")]
    runs: dict[int, list[dict[str, Any]]] = {w: [] for w in counts}
    for _ in range(args.repeats):
        for workers in counts:
            cmd = [sys.executable, __file__, "--annotate-child", args.annotate, str(workdir), str(workers),
                   "--batch-size", str(batch), "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"workers={workers} failed:\n{proc.stderr[-3000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            runs[workers].append(result)
            print(json.dumps(result), flush=True)
    summary = []
    for workers, results in runs.items():
        summary.append({
            "annotate": args.annotate, "samples": args.samples, "workers": workers, "batch_size": batch,
            "median_images_per_s": statistics.median(r["images_per_s"] for r in results),
            "median_loop_images_per_s": statistics.median(r["loop_images_per_s"] for r in results),
            "median_device_wait_share": statistics.median(r["device_wait_share"] for r in results),
            "runs": len(results),
        })
        print(json.dumps(summary[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"runs": runs, "summary": summary}, handle, indent=2)


if __name__ == "__main__":
    main()
