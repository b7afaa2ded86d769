"""A Hugging Face ``CLIPModel`` preference scorer: ``exp(logit_scale) * cosine(image, text)``.

PickScore and SciScore are both CLIP ViT-H/14 fine-tunes scored this way, with the processor (tokenizer
and image preprocessing) of ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``. Each reward subclasses
:class:`HFCLIPPreferenceReward`, sets its name and default checkpoint, and loads its own weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from miro_core.errors import ConfigError
from miro_reward_common.base import PaperReward, PaperRewardOptions

if TYPE_CHECKING:
    from PIL.Image import Image

LAION_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


class HFCLIPOptions(PaperRewardOptions):
    #: Folder with the processor files (preprocessor_config.json and tokenizer), or a cached repo id.
    processor: str = LAION_PROCESSOR
    #: Token limit of the text tower (captions are truncated, as in the reference).
    max_length: int = 77


@dataclass
class ImageSettings:
    """The parts of a ``preprocessor_config.json`` that a CLIP image processor uses."""

    size: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resample: Any

    @classmethod
    def from_file(cls, path: Path, *, reward: str) -> ImageSettings:
        from miro_reward_common.checkpoints import read_json
        from miro_reward_common.images import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

        cfg = read_json(path, reward=reward)
        for flag in ("do_resize", "do_center_crop", "do_normalize"):
            if cfg.get(flag, True) is not True:
                raise ConfigError(f"{reward}: {path} sets {flag}=false; only the CLIP processor layout is supported")
        size = cfg.get("size", 224)
        if isinstance(size, dict):
            if "shortest_edge" not in size:
                raise ConfigError(f"{reward}: {path} size {size} is not a shortest_edge resize")
            size = size["shortest_edge"]
        crop = cfg.get("crop_size", size)
        if isinstance(crop, dict):
            if crop.get("height") != crop.get("width"):
                raise ConfigError(f"{reward}: {path} crop_size {crop} is not square")
            crop = crop["height"]
        return cls(
            size=int(size),
            crop=int(crop),
            mean=tuple(cfg.get("image_mean", OPENAI_CLIP_MEAN)),
            std=tuple(cfg.get("image_std", OPENAI_CLIP_STD)),
            resample=cfg.get("resample", 3),
        )

    def pixels(self, images: Sequence[Image]) -> Any:
        from miro_reward_common.images import hf_clip_pixels, normalize

        return normalize(
            [hf_clip_pixels(im, self.size, self.crop, self.resample) for im in images], self.mean, self.std
        )


@dataclass
class LoadedCLIP:
    model: Any
    tokenizer: Any
    image: ImageSettings


def features(output: Any) -> Any:
    """transformers 5 returns an output object from get_*_features; older versions a tensor."""
    return output if hasattr(output, "norm") else output.pooler_output


class HFCLIPPreferenceReward(PaperReward):
    """PickScore-style scorer; subclasses set ``name``, ``Options`` (checkpoint default) and docs."""

    Options: ClassVar[type[HFCLIPOptions]] = HFCLIPOptions
    inputs = frozenset({"image", "caption"})

    def _load(self, device: str, dtype: Any) -> LoadedCLIP:
        from transformers import CLIPModel

        from miro_reward_common.checkpoints import HF_WEIGHT_FILES, hf_from_pretrained, resolve_folder
        from miro_reward_common.tokenizers import TOKENIZER_FILES, load_tokenizer

        folder = resolve_folder(
            self.options.checkpoint,
            reward=self.name,
            option="checkpoint",
            required=[("config.json",), HF_WEIGHT_FILES],
            what="CLIP checkpoint",
        )
        proc = resolve_folder(
            self.options.processor,
            reward=self.name,
            option="processor",
            required=[("preprocessor_config.json",), TOKENIZER_FILES],
            what="processor",
        )
        model = hf_from_pretrained(CLIPModel, folder, reward=self.name)
        model = model.to(device=device, dtype=dtype).eval()
        tokenizer = load_tokenizer(proc, reward=self.name)
        if len(tokenizer) > model.config.text_config.vocab_size:
            raise ConfigError(
                f"{self.name}: tokenizer in {proc} has {len(tokenizer)} entries but the text tower only "
                f"{model.config.text_config.vocab_size}; the processor does not belong to this checkpoint"
            )
        return LoadedCLIP(
            model, tokenizer, ImageSettings.from_file(proc / "preprocessor_config.json", reward=self.name)
        )

    def embeddings(self, images: list[Image], captions: list[str]) -> tuple[Any, Any, Any]:
        """(image features, text features, logit scale) before normalisation."""
        loaded: LoadedCLIP = self.model
        model = loaded.model
        pixels = loaded.image.pixels(images).to(device=self.device, dtype=self.dtype)
        tokens = loaded.tokenizer(
            captions, padding=True, truncation=True, max_length=self.options.max_length, return_tensors="pt"
        ).to(self.device)
        image = features(model.get_image_features(pixel_values=pixels))
        text = features(model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]))
        return image, text, model.logit_scale

    def _raw_scores(self, images: list[Image], captions: list[str]) -> list[float]:
        image, text, logit_scale = self.embeddings(images, captions)
        image = image.float() / image.float().norm(dim=-1, keepdim=True)
        text = text.float() / text.float().norm(dim=-1, keepdim=True)
        return (logit_scale.float().exp() * (image * text).sum(dim=-1)).tolist()

    def scale(self, raw: float) -> float:
        return raw / 100.0
