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

    def pixels(self, image: Image, choices: dict[str, str]) -> Any:
        """One normalised (3, crop, crop) float32 tensor."""
        from miro_reward_common.images import hf_clip_pixels, normalize

        return normalize([hf_clip_pixels(image, self.size, self.crop, self.resample, **choices)], self.mean, self.std)[
            0
        ]


@dataclass
class CLIPPreprocessing:
    """What ``prepare`` needs: the processor's tokenizer and image settings."""

    tokenizer: Any
    image: ImageSettings
    folder: Path


def features(output: Any) -> Any:
    """transformers 5 returns an output object from get_*_features; older versions a tensor."""
    return output if hasattr(output, "norm") else output.pooler_output


def pad_ids(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """(input_ids, attention_mask) padded on the right to the longest row, as a tokenizer's padding=True."""
    import torch

    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


class HFCLIPPreferenceReward(PaperReward):
    """PickScore-style scorer; subclasses set ``name``, ``Options`` (checkpoint default) and docs.

    The reference is PickScore's README recipe on transformers 4.27.3: ``AutoProcessor`` (whose
    ``convert_to_rgb`` is PIL's ``convert("RGB")``: alpha dropped, 16-bit and float images clipped, the
    defaults of ``alpha`` / ``high_bit_depth``), ``get_image_features`` / ``get_text_features``,
    ``logit_scale.exp() * cosine``.
    """

    Options: ClassVar[type[HFCLIPOptions]] = HFCLIPOptions
    inputs = frozenset({"image", "caption"})

    def _build_preprocessing(self) -> CLIPPreprocessing:
        from miro_reward_common.checkpoints import resolve_folder
        from miro_reward_common.tokenizers import TOKENIZER_FILES, load_tokenizer

        proc = resolve_folder(
            self.options.processor,
            reward=self.name,
            option="processor",
            required=[("preprocessor_config.json",), TOKENIZER_FILES],
            what="processor",
        )
        tokenizer = load_tokenizer(proc, reward=self.name, cls="CLIPTokenizer", need_pad=True)
        image = ImageSettings.from_file(proc / "preprocessor_config.json", reward=self.name)
        return CLIPPreprocessing(tokenizer, image, proc)

    def _load(self, device: str, dtype: Any) -> Any:
        from transformers import CLIPConfig, CLIPModel

        from miro_reward_common.checkpoints import HF_WEIGHT_FILES, load_hf_model, resolve_folder

        folder = resolve_folder(
            self.options.checkpoint,
            reward=self.name,
            option="checkpoint",
            required=[("config.json",), HF_WEIGHT_FILES],
            what="CLIP checkpoint",
        )
        prep: CLIPPreprocessing = self.preprocessing
        config = CLIPConfig.from_pretrained(str(folder), local_files_only=True)
        if len(prep.tokenizer) > config.text_config.vocab_size:
            raise ConfigError(
                f"{self.name}: tokenizer in {prep.folder} has {len(prep.tokenizer)} entries but the text tower only "
                f"{config.text_config.vocab_size}; the processor does not belong to this checkpoint"
            )
        model = load_hf_model(CLIPModel, folder, config, reward=self.name)
        return model.to(device=device, dtype=dtype).eval()

    def _prepare(self, state: CLIPPreprocessing, image: Image, caption: str) -> dict[str, Any]:
        ids = state.tokenizer(caption, truncation=True, max_length=self.options.max_length)["input_ids"]
        return {"pixels": state.image.pixels(image, self.options.image_choices()), "input_ids": list(ids)}

    def embeddings(self, prepared: list[dict[str, Any]]) -> tuple[Any, Any, Any]:
        """(image features, text features, logit scale) before normalisation."""
        import torch

        model = self.model
        pixels = torch.stack([p["pixels"] for p in prepared]).to(device=self.device, dtype=self.dtype)
        ids, mask = pad_ids([p["input_ids"] for p in prepared], self.preprocessing.tokenizer.pad_token_id)
        image = features(model.get_image_features(pixel_values=pixels))
        text = features(model.get_text_features(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)))
        return image, text, model.logit_scale

    def _score_batch(self, prepared: list[dict[str, Any]]) -> list[float]:
        image, text, logit_scale = self.embeddings(prepared)
        image = image.float() / image.float().norm(dim=-1, keepdim=True)
        text = text.float() / text.float().norm(dim=-1, keepdim=True)
        return (logit_scale.float().exp() * (image * text).sum(dim=-1)).tolist()

    def scale(self, raw: float) -> float:
        return raw / 100.0
