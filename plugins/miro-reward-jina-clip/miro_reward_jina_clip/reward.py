"""CLIP score with jina-clip-v2 (Koukounas et al., 2024), MIRO's ``clip_score``.

The model (an EVA02-L/14 image tower at 512 px and a jina-embeddings-v3 / XLM-RoBERTa text tower) exists
only as Python code shipped inside its checkpoint folder, so loading it runs that code. This reward
refuses to do so unless the user opts in with ``trust_remote_code: true``.

Score: the diagonal of the model's ``logits_per_image`` (``exp(logit_scale) * cosine``) for the
processor's inputs: images through the checkpoint's ``preprocessor_config.json`` transform (shortest side
bicubic, centre crop, RGB, OpenAI mean/std at 512), captions through its XLM-RoBERTa tokenizer with
padding. MIRO bins the logit divided by 100.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miro_reward_common.base import PaperReward, PaperRewardOptions

from miro_core.errors import ConfigError

if TYPE_CHECKING:
    from PIL.Image import Image


class JinaCLIPOptions(PaperRewardOptions):
    #: Folder (or cached repo id) of jina-clip-v2 with its code files, weights, tokenizer and processor config.
    checkpoint: str | None = "jinaai/jina-clip-v2"
    #: Run the Python code shipped in the checkpoint folder. Off by default: read that code first.
    trust_remote_code: bool = False
    #: Truncate captions to this many tokens; None keeps the tokenizer's own limit (the processor's default).
    max_length: int | None = None


@dataclass
class LoadedJina:
    model: Any
    tokenizer: Any
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def image_settings(path: Path, *, reward: str) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """(size, mean, std) of jina's ``preprocessor_config.json``; only the shortest-side bicubic transform."""
    from miro_reward_common.checkpoints import read_json
    from miro_reward_common.images import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    cfg = read_json(path, reward=reward)
    mode = cfg.get("resize_mode", "shortest")
    interpolation = cfg.get("interpolation", "bicubic")
    if mode != "shortest" or interpolation != "bicubic":
        raise ConfigError(
            f"{reward}: {path} asks for resize_mode={mode!r}, interpolation={interpolation!r}; "
            "only the shortest-side bicubic transform of jina-clip-v2 is implemented"
        )
    size = cfg.get("size", 224)
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ConfigError(f"{reward}: {path} size {size} is not square")
        size = size[0]
    return int(size), tuple(cfg.get("mean", OPENAI_CLIP_MEAN)), tuple(cfg.get("std", OPENAI_CLIP_STD))


class JinaCLIPScore(PaperReward):
    """Image-caption agreement under jina-clip-v2; MIRO key ``clip_score``."""

    name = "jina-clip"
    version = "1"
    description = "jina-clip-v2 logits_per_image diagonal / 100 (needs trust_remote_code)"
    Options = JinaCLIPOptions
    #: Peak process memory measured in float32 at real size (benchmarks/reward_throughput.py, docs/rewards.md).
    peak_memory_mib = 4900.0

    def _load(self, device: str, dtype: Any) -> LoadedJina:
        from miro_reward_common.checkpoints import HF_WEIGHT_FILES, hf_from_pretrained, read_json, resolve_folder
        from miro_reward_common.tokenizers import TOKENIZER_FILES, load_tokenizer
        from transformers import AutoModel

        folder = resolve_folder(
            self.options.checkpoint,
            reward=self.name,
            option="checkpoint",
            required=[("config.json",), ("preprocessor_config.json",), HF_WEIGHT_FILES, TOKENIZER_FILES],
            what="jina-clip-v2 checkpoint",
        )
        auto_map = read_json(folder / "config.json", reward=self.name).get("auto_map", {})
        code = auto_map.get("AutoModel")
        if not code:
            raise ConfigError(f"{self.name}: {folder}/config.json has no auto_map.AutoModel; is it jina-clip-v2?")
        if not self.options.trust_remote_code:
            module = str(code).split("--")[-1].rsplit(".", 1)[0]
            raise ConfigError(
                f"{self.name}: jina-clip-v2 runs Python code shipped with its weights ({module}.py in {folder}, "
                "and the modules it imports). Read it, then opt in with the option trust_remote_code: true "
                f"(--reward-option {self.name}.trust_remote_code=true)"
            )
        size, mean, std = image_settings(folder / "preprocessor_config.json", reward=self.name)
        model = hf_from_pretrained(AutoModel, folder, reward=self.name, trust_remote_code=True)
        tokenizer = load_tokenizer(folder, reward=self.name, trust_remote_code=True)
        return LoadedJina(model.to(device=device, dtype=dtype).eval(), tokenizer, size, mean, std)

    def pixels(self, images: list[Image]) -> Any:
        from miro_reward_common.images import normalize, openai_clip_pixels

        loaded: LoadedJina = self.model
        return normalize([openai_clip_pixels(im, loaded.size) for im in images], loaded.mean, loaded.std)

    def _raw_scores(self, images: list[Image], captions: list[str]) -> list[float]:
        loaded: LoadedJina = self.model
        limit = self.options.max_length
        tokens = loaded.tokenizer(
            list(captions),
            padding=True,
            truncation=limit is not None,
            max_length=limit,
            return_tensors="pt",
        ).to(self.device)
        out = loaded.model(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            pixel_values=self.pixels(images).to(device=self.device, dtype=self.dtype),
            return_dict=True,
        )
        return out.logits_per_image.float().diagonal().tolist()

    def scale(self, raw: float) -> float:
        return raw / 100.0
