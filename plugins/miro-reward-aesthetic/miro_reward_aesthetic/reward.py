"""The LAION improved aesthetic predictor (``sac+logos+ava1-l14-linearMSE.pth``).

A linear head (768-1024-128-64-16-1, no activations) on the L2-normalised OpenAI CLIP ViT-L/14 image
embedding, predicting a 1-10 rating. Preprocessing is the OpenAI ``clip`` transform (shortest side 224
bicubic in the image's own mode, centre crop, then RGB, OpenAI mean/std). The caption is not used.
MIRO bins the rating divided by 10.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miro_reward_common.base import PaperReward, PaperRewardOptions, torch_dtype

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


@dataclass
class AestheticPreprocessing:
    clip_folder: Path
    config: Any  # the CLIPConfig of ``clip_folder``
    image_size: int


def l2_normalise(x: Any) -> Any:
    """``x / ||x||`` row-wise, leaving all-zero rows at zero (the reference's ``normalized``)."""
    norm = x.norm(dim=-1, keepdim=True)
    return x / norm.masked_fill(norm == 0, 1.0)


class AestheticScore(PaperReward):
    """Aesthetic rating of the image alone; MIRO key ``aesthetic_score``.

    Reference: christophschuhmann/improved-aesthetic-predictor's ``simple_inference.py`` with the OpenAI
    ``clip`` package: ``preprocess`` resizes and crops in the image's own mode and only then converts
    with ``convert("RGB")`` (alpha dropped, 16-bit and float images clipped: the defaults here), CLIP
    ViT-L/14 ``encode_image``, numpy L2 normalisation, the MLP in float32. On CUDA the reference runs CLIP
    in float16 (``clip.load`` keeps OpenAI's half weights there); ``--dtype float16`` matches that.
    """

    name = "aesthetic"
    version = "1"
    description = "LAION aesthetic predictor on OpenAI CLIP ViT-L/14: rating / 10"
    Options = AestheticOptions
    inputs = frozenset({"image"})
    #: Peak process memory loading and scoring in float32 at real size, measured by
    #: benchmarks/reward_memory.py (random weights in the release layout) plus a 10% margin; docs/rewards.md.
    peak_memory_mib = 2400.0

    def _build_preprocessing(self) -> AestheticPreprocessing:
        from miro_reward_common.checkpoints import HF_WEIGHT_FILES, resolve_folder
        from transformers import CLIPConfig

        clip_folder = resolve_folder(
            self.options.clip_model,
            reward=self.name,
            option="clip_model",
            required=[("config.json",), HF_WEIGHT_FILES],
            what="CLIP ViT-L/14 model",
        )
        config = CLIPConfig.from_pretrained(str(clip_folder), local_files_only=True)
        return AestheticPreprocessing(clip_folder, config, int(config.vision_config.image_size))

    def _load(self, device: str, dtype: Any) -> LoadedAesthetic:
        from miro_reward_common.checkpoints import (
            CheckpointError,
            load_hf_model,
            read_state_dict,
            resolve_file,
            strict_load,
        )
        from miro_reward_common.heads import build_linear_head, head_input_size
        from transformers import CLIPVisionModelWithProjection

        head_path = resolve_file(
            self.options.checkpoint,
            reward=self.name,
            option="checkpoint",
            filename=HEAD_FILE,
            what="aesthetic head",
        )
        prep: AestheticPreprocessing = self.preprocessing
        state = read_state_dict(head_path, reward=self.name)
        vision_cfg = prep.config.vision_config
        vision_cfg.projection_dim = prep.config.projection_dim  # CLIPModel's visual_projection width
        embed_dim = int(vision_cfg.projection_dim)
        found = head_input_size(state)
        if found is not None and found != embed_dim:
            raise CheckpointError(
                f"{self.name}: the head {head_path} reads {found}-d embeddings but {prep.clip_folder} produces "
                f"{embed_dim}-d"
            )
        head = build_linear_head(embed_dim)
        strict_load(head, state, reward=self.name, source=head_path)
        clip = load_hf_model(
            CLIPVisionModelWithProjection,
            prep.clip_folder,
            vision_cfg,
            reward=self.name,
            ignore_unexpected=["text_model.*", "text_projection.*", "logit_scale", "*position_ids"],
        )
        return LoadedAesthetic(
            clip=clip.to(device=device, dtype=dtype).eval(),
            head=head.to(device=device, dtype=torch_dtype("float32")).eval(),  # float32, as in the reference
        )

    def _prepare(self, state: AestheticPreprocessing, image: Image, caption: str) -> Any:
        from miro_reward_common.images import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, normalize, openai_clip_pixels

        pixels = openai_clip_pixels(image, state.image_size, **self.options.image_choices())
        return normalize([pixels], OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)[0]

    def embeddings(self, prepared: list[Any]) -> Any:
        """L2-normalised CLIP image embeddings (float32), the head's input."""
        import torch

        pixels = torch.stack(prepared).to(device=self.device, dtype=self.dtype)
        return l2_normalise(self.model.clip(pixel_values=pixels).image_embeds.float())

    def _score_batch(self, prepared: list[Any]) -> list[float]:
        return self.model.head(self.embeddings(prepared)).squeeze(-1).tolist()

    def scale(self, raw: float) -> float:
        return raw / 10.0
