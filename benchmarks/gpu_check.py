"""The accelerator check: training and annotation speed of the real code paths on one device.

1. Training: ``miro train`` (the Trainer, its streaming loader and accelerate) of ``dit-xl/2`` on synthetic
   records of 32x32x4 latents with 2048-wide text tokens (the FLAN-T5-XL width, random values), random
   weights, bf16 autocast. The largest batch that fits is found by doubling (a run of a few steps per size,
   until the device runs out of memory), then ``--steps`` steps are timed without and with ``torch.compile``.
   Reported: samples/s, MFU (model FLOPs counted by ``miro backbones`` x 3, peak from the device name),
   peak device memory.
2. Annotation: ``miro annotate``'s engine scores synthetic 640x480 JPEGs with a PickScore-size reward (CLIP
   ViT-H/14, random weights) on the device, preprocessing in DataLoader workers. Reported: images/s and the
   share of the scoring loop the device waited for data.

    .venv/bin/python benchmarks/gpu_check.py --out gpu_check.json            # on a GPU machine
    .venv/bin/python benchmarks/gpu_check.py --tiny --out tiny.json          # CPU, seconds (the test suite)

``--tiny`` runs the same code at toy size on the CPU (dit-tiny/2, a 2-layer CLIP, a few steps, the
``aot_eager`` compile backend), so the script cannot rot between device runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


@dataclass
class Size:
    backbone: str
    text: tuple[int, int]
    samples: int
    steps: int
    first_batch: int
    max_batch: int
    compile_options: dict[str, Any]
    images: int
    image_size: tuple[int, int]
    workers: int
    annotate_batch: int


FULL = Size("dit-xl/2", (64, 2048), 4096, 100, 32, 4096, {}, 512, (640, 480), 6, 64)
TINY = Size("dit-tiny/2", (8, 64), 64, 3, 4, 8, {"backend": "aot_eager"}, 12, (96, 64), 1, 4)


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()})"


def train_once(records: Path, work: Path, size: Size, batch: int, steps: int, compiled: bool, cpu: bool) -> dict:
    import torch

    from miro_core.plugins import get_registry
    from miro_core.train import TrainConfig, Trainer

    out = work / f"run-{batch}-{int(compiled)}-{steps}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = TrainConfig(
        data=str(records), out=str(out), no_rewards=True, backbone=size.backbone, batch_size=batch, steps=steps,
        warmup_steps=1, save_every=10**9, keep_checkpoints=1, mixed_precision="bf16", data_workers=size.workers,
        compile=compiled, compile_options=size.compile_options, cond_dim=1152 if not cpu else 64,
        device="cpu" if cpu else "auto",
    )
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(cfg, get_registry(), progress=False)
    trainer.run()
    durations = trainer.step_durations[max(1, len(trainer.step_durations) // 5):]  # compilation and warm-up out
    per_step = sorted(durations)[len(durations) // 2] if durations else float("nan")
    peak_memory = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    samples_per_second = batch / per_step
    mfu = None
    if trainer.flops_per_sample:
        from miro_core.model_stats import device_peak_flops

        peak = device_peak_flops(trainer.accelerator.device, "bf16", cfg.peak_tflops)
        mfu = samples_per_second * trainer.flops_per_sample / peak if peak else None
    return {
        "batch": batch, "compile": compiled, "steps": steps, "median_step_s": round(per_step, 4),
        "samples_per_s": round(samples_per_second, 1), "mfu": None if mfu is None else round(mfu, 4),
        "peak_memory_gib": None if peak_memory is None else round(peak_memory, 2),
        "first_step_s": round(trainer.first_step_at - trainer.started_at, 2),
        "train_flops_per_sample": trainer.flops_per_sample,
    }


def largest_batch(records: Path, work: Path, size: Size, cpu: bool) -> tuple[int, list[dict]]:
    """Double the batch from ``first_batch`` while 3 steps fit on the device; returns the largest that fit."""
    import torch

    tried: list[dict] = []
    best = None
    batch = size.first_batch
    while batch <= size.max_batch:
        try:
            result = train_once(records, work, size, batch, 3, False, cpu)
        except torch.cuda.OutOfMemoryError:
            tried.append({"batch": batch, "fits": False})
            break
        tried.append({"batch": batch, "fits": True, "peak_memory_gib": result["peak_memory_gib"]})
        best = batch
        batch *= 2
    if best is None:
        raise SystemExit(f"{size.backbone}: even batch {size.first_batch} does not fit")
    return best, tried


def random_pickscore(tiny: bool) -> Any:
    """The registered ``pickscore`` reward with a CLIP of PickScore's size (or a toy one) and random weights."""
    import torch
    from miro_reward_common.clip_scorer import CLIPPreprocessing, ImageSettings
    from miro_reward_common.images import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    from reward_memory import clip_h14_config
    from reward_throughput import clip_tokenizer

    from miro_core.plugins import build_registry

    base = build_registry().rewards.get("pickscore")

    def config() -> Any:
        if not tiny:
            return clip_h14_config()
        from transformers import CLIPConfig

        small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
        return CLIPConfig(text_config={**small, "vocab_size": 49408, "max_position_embeddings": 77},
                          vision_config={**small, "image_size": 224, "patch_size": 32}, projection_dim=32)

    class RandomPickScore(base):  # type: ignore[valid-type,misc]
        def _build_preprocessing(self) -> Any:
            settings = ImageSettings(224, 224, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, 3)
            return CLIPPreprocessing(clip_tokenizer(), settings, Path("."))

        def _load(self, device: str, dtype: Any) -> Any:
            from transformers import CLIPModel

            torch.manual_seed(0)
            return CLIPModel(config()).eval().to(device=device, dtype=dtype)

    return RandomPickScore()


def write_images(folder: Path, count: int, size: tuple[int, int]) -> None:
    """``count`` smooth random JPEGs (photo-like after upsampling) with captions, as webdataset shards."""
    import io

    import numpy as np
    from PIL import Image

    from miro_core.data.shards import write_shard

    rng = np.random.default_rng(0)

    def samples(first: int, n: int):
        for i in range(first, first + n):
            base = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
            image = Image.fromarray(base).resize(size, Image.Resampling.BICUBIC)
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=90)
            yield f"{i:07d}", Image.open(io.BytesIO(buffer.getvalue())), "a photo of something", {}

    for first in range(0, count, 128):
        write_shard(str(folder / f"photos-{first // 128:06d}.tar"), samples(first, min(128, count - first)))


def annotate(work: Path, size: Size, tiny: bool) -> dict:
    import torch

    from miro_core.annotate import AnnotateConfig, Annotator

    data = work / "photos"
    write_images(data, size.images, size.image_size)
    device = "cuda" if torch.cuda.is_available() and not tiny else "cpu"
    dtype = "bfloat16" if device == "cuda" else "float32"
    reward = random_pickscore(tiny)
    cfg = AnnotateConfig(data=str(data), out=str(work / "annotations"), rewards=[reward.name], device=device,
                         dtype=dtype, batch_size=size.annotate_batch, workers=size.workers)
    record = Annotator(cfg, [reward]).run().as_json()
    return {
        "reward": "pickscore size (CLIP ViT-H/14, random weights)" if not tiny else "toy CLIP, random weights",
        "device": device, "dtype": dtype, "images": record.get("samples"), "workers": size.workers,
        "images_per_s": record.get("images_per_second"), "loop_images_per_s": record.get("loop_images_per_second"),
        "device_wait_share": record.get("device_wait_share"),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="Toy sizes on the CPU (what the test suite runs).")
    parser.add_argument("--out", default=None, help="Write the report as JSON here too.")
    parser.add_argument("--skip-annotate", action="store_true")
    parser.add_argument("--work", default=None)
    args = parser.parse_args(argv)
    import torch

    from miro_core.records.synthetic import write_synthetic_records

    size = TINY if args.tiny else FULL
    cpu = args.tiny or not torch.cuda.is_available()
    work = Path(args.work or tempfile.mkdtemp(prefix="miro-gpu-check-"))
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"), "device": device_name(), "torch": torch.__version__,
        "backbone": size.backbone, "records": {"latents": [4, 32, 32], "text_tokens": list(size.text)},
    }
    records = work / "records"
    if not (records / "records.json").exists():
        write_synthetic_records(str(records), size.samples, shard_size=512, input_shape=(4, 32, 32),
                                text_shape=size.text, score_keys=())
    batch, tried = largest_batch(records, work, size, cpu)
    report["batch_search"] = tried
    report["train"] = [train_once(records, work, size, batch, size.steps, compiled, cpu) for compiled in (False, True)]
    print(json.dumps(report["train"], indent=2), flush=True)
    if not args.skip_annotate:
        report["annotate"] = annotate(work, size, args.tiny)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return report


if __name__ == "__main__":
    main()
