"""The LAION improved aesthetic predictor (``sac+logos+ava1-l14-linearMSE.pth``).

A linear head (768-1024-128-64-16-1, no activations) on the L2-normalised OpenAI CLIP ViT-L/14 image
embedding, predicting a 1-10 rating. Preprocessing is the OpenAI ``clip`` transform (shortest side 224
bicubic in the image's own mode, centre crop, then RGB, OpenAI mean/std). The caption is not used.
MIRO bins the rating divided by 10.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from miro_reward_common.base import PaperReward, PaperRewardOptions

if TYPE_CHECKING:
    from PIL.Image import Image

HEAD_FILE = "sac+logos+ava1-l14-linearMSE.pth"


class AestheticOptions(PaperRewardOptions):
    #: The head's ``.pth`` state dict, or a folder holding ``sac+logos+ava1-l14-linearMSE.pth``.
    checkpoint: str | None = None
    #: Folder (or cached repo id) of the Hugging Face CLIP ViT-L/14 whose image embedding the head reads.
    clip_model: str = "openai/clip-vit-large-patch14"


@dataclass
class LoadedAesthetic:
    clip: Any
    head: Any
    image_size: int


def l2_normalise(x: Any) -> Any:
    """``x / ||x||`` row-wise, leaving all-zero rows at zero (the reference's ``normalized``)."""
    norm = x.norm(dim=-1, keepdim=True)
    return x / norm.masked_fill(norm == 0, 1.0)


class AestheticScore(PaperReward):
    """Aesthetic rating of the image alone; MIRO key ``aesthetic_score``."""

    name = "aesthetic"
    version = "1"
    description = "LAION aesthetic predictor on OpenAI CLIP ViT-L/14: rating / 10"
    Options = AestheticOptions
    inputs = frozenset({"image"})
    #: Peak process memory measured in float32 at real size (benchmarks/reward_throughput.py, docs/rewards.md).
    peak_memory_mib = 2300.0

    def _load(self, device: str, dtype: Any) -> LoadedAesthetic:
        from miro_reward_common.checkpoints import (
            HF_WEIGHT_FILES,
            CheckpointError,
            hf_from_pretrained,
            read_state_dict,
            resolve_file,
            resolve_folder,
            strict_load,
        )
        from miro_reward_common.heads import build_linear_head, head_input_size
        from transformers import CLIPConfig, CLIPVisionModelWithProjection

        head_path = resolve_file(
            self.options.checkpoint,
            reward=self.name,
            option="checkpoint",
            filename=HEAD_FILE,
            what="aesthetic head",
        )
        clip_folder = resolve_folder(
            self.options.clip_model,
            reward=self.name,
            option="clip_model",
            required=[("config.json",), HF_WEIGHT_FILES],
            what="CLIP ViT-L/14 model",
        )
        state = read_state_dict(head_path, reward=self.name)
        full = CLIPConfig.from_pretrained(str(clip_folder), local_files_only=True)
        vision_cfg = full.vision_config
        vision_cfg.projection_dim = full.projection_dim  # CLIPModel's visual_projection width
        clip = hf_from_pretrained(
            CLIPVisionModelWithProjection,
            clip_folder,
            reward=self.name,
            config=vision_cfg,
            ignore_unexpected=["text_model.*", "text_projection.*", "logit_scale", "*position_ids"],
        )
        embed_dim = clip.config.projection_dim
        found = head_input_size(state)
        if found is not None and found != embed_dim:
            raise CheckpointError(
                f"{self.name}: the head {head_path} reads {found}-d embeddings but {clip_folder} produces {embed_dim}-d"
            )
        head = build_linear_head(embed_dim)
        strict_load(head, state, reward=self.name, source=head_path)
        return LoadedAesthetic(
            clip=clip.to(device=device, dtype=dtype).eval(),
            head=head.to(device=device).eval(),  # float32, as in the reference
            image_size=int(clip.config.image_size),
        )

    def embeddings(self, images: list[Image]) -> Any:
        """L2-normalised CLIP image embeddings (float32), the head's input."""
        from miro_reward_common.images import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, normalize, openai_clip_pixels

        loaded: LoadedAesthetic = self.model
        pixels = normalize(
            [openai_clip_pixels(im, loaded.image_size) for im in images], OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
        )
        embeds = loaded.clip(pixel_values=pixels.to(device=self.device, dtype=self.dtype)).image_embeds
        return l2_normalise(embeds.float())

    def _raw_scores(self, images: list[Image], captions: list[str]) -> list[float]:
        loaded: LoadedAesthetic = self.model
        emb = self.embeddings(images)
        return loaded.head(emb).squeeze(-1).tolist()

    def scale(self, raw: float) -> float:
        return raw / 10.0
