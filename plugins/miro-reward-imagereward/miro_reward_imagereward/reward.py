"""ImageReward-v1.0 (Xu et al., 2023) on transformers' BLIP classes.

Architecture of the reference ``ImageReward.pt``: a BLIP ViT-L/16 image encoder (224 px, LayerNorm eps
1e-6, full token sequence after the final norm), a BERT-base text encoder with cross-attention to those
tokens in every layer (``med_config.json``), and a linear head (768-1024-128-64-16-1) on the text CLS
state. Raw score ``(head - 0.16717362830052426) / 1.0333394966054072``; MIRO bins ``(raw + 2) / 4``.

The reference state dict is renamed onto ``BlipVisionModel`` / ``BlipTextModel``:
``blip.visual_encoder.*`` -> vision model, ``blip.text_encoder.*`` -> text model, ``mlp.*`` -> head. The
contrastive projections ``blip.vision_proj`` / ``blip.text_proj`` (unused by the score) and the
``position_ids`` buffer are the only keys skipped; any other missing or unexpected key is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miro_reward_common.base import PaperReward, PaperRewardOptions, torch_dtype

if TYPE_CHECKING:
    from PIL.Image import Image

MEAN = 0.16717362830052426
STD = 1.0333394966054072
WEIGHTS_FILE = "ImageReward.pt"
CONFIG_FILE = "med_config.json"
#: BLIP's tokenizer is bert-base-uncased plus these two tokens, added in this order.
EXTRA_TOKENS = ("[DEC]", "[ENC]")
#: Reference keys that the score never reads.
SKIPPED = ("blip.vision_proj.*", "blip.text_proj.*", "*position_ids")

_VISION_RENAMES = (
    (r"^cls_token$", "embeddings.class_embedding"),
    (r"^pos_embed$", "embeddings.position_embedding"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
    (r"^blocks\.(\d+)\.mlp\.fc(\d)\.", r"encoder.layers.\1.mlp.fc\2."),
    (r"^norm\.", "post_layernorm."),
)


class ImageRewardOptions(PaperRewardOptions):
    #: Folder with ``ImageReward.pt`` and ``med_config.json``, or the cached repo id.
    checkpoint: str | None = "THUDM/ImageReward"
    #: Folder (or cached repo id) of the bert-base-uncased tokenizer.
    tokenizer: str = "bert-base-uncased"
    #: Captions are padded/truncated to this many tokens, as in the reference.
    max_length: int = 35


def rename_vision_key(key: str) -> str | None:
    """BLIP ViT key -> ``BlipVisionModel`` key, or None for a key with no counterpart."""
    for pattern, repl in _VISION_RENAMES:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    return None


def split_state(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[str]]:
    """(vision, text, head, unmapped keys) from the reference ``ImageReward.pt`` state dict."""
    import fnmatch

    vision: dict[str, Any] = {}
    text: dict[str, Any] = {}
    head: dict[str, Any] = {}
    unmapped: list[str] = []
    for key, value in state.items():
        if any(fnmatch.fnmatchcase(key, p) for p in SKIPPED):
            continue
        if key.startswith("blip.visual_encoder."):
            new = rename_vision_key(key[len("blip.visual_encoder.") :])
            if new is None:
                unmapped.append(key)
            else:
                vision[new] = value
        elif key.startswith("blip.text_encoder."):
            text[key[len("blip.text_encoder.") :]] = value
        elif key.startswith("mlp."):
            head[key[len("mlp.") :]] = value
        else:
            unmapped.append(key)
    return vision, text, head, unmapped


def vision_config(vision: dict[str, Any], *, reward: str) -> Any:
    """A ``BlipVisionConfig`` read off the weights (BLIP ViTs use 64-dimensional heads)."""
    from miro_reward_common.checkpoints import CheckpointError
    from transformers import BlipVisionConfig

    try:
        patch = vision["embeddings.patch_embedding.weight"]
        positions = vision["embeddings.position_embedding"].shape[1] - 1
        fc1 = vision["encoder.layers.0.mlp.fc1.weight"]
    except KeyError as err:
        raise CheckpointError(f"{reward}: ImageReward.pt lacks blip.visual_encoder key for {err}") from None
    width, patch_size = int(patch.shape[0]), int(patch.shape[-1])
    grid = int(round(positions**0.5))
    if grid * grid != positions:
        raise CheckpointError(f"{reward}: pos_embed holds {positions} patches, not a square grid")
    depth = 1 + max(int(k.split(".")[2]) for k in vision if k.startswith("encoder.layers."))
    return BlipVisionConfig(
        hidden_size=width,
        intermediate_size=int(fc1.shape[0]),
        num_hidden_layers=depth,
        num_attention_heads=max(1, width // 64),
        image_size=grid * patch_size,
        patch_size=patch_size,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        attention_dropout=0.0,
    )


def text_config(med: dict[str, Any], encoder_width: int) -> Any:
    """A ``BlipTextConfig`` from BLIP's ``med_config.json`` (cross-attention to ``encoder_width`` tokens)."""
    from transformers import BlipTextConfig

    return BlipTextConfig(
        vocab_size=med["vocab_size"],
        hidden_size=med["hidden_size"],
        encoder_hidden_size=encoder_width,
        intermediate_size=med["intermediate_size"],
        num_hidden_layers=med["num_hidden_layers"],
        num_attention_heads=med["num_attention_heads"],
        max_position_embeddings=med["max_position_embeddings"],
        hidden_act=med.get("hidden_act", "gelu"),
        layer_norm_eps=med.get("layer_norm_eps", 1e-12),
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=med.get("pad_token_id", 0),
        bos_token_id=med["vocab_size"] - 2,  # BLIP's [DEC] (30522 in the real vocabulary)
        is_decoder=True,  # builds the cross-attention layers; the forward pass runs bidirectionally
    )


#: ImageReward's ``self.preprocess = _transform(224)``: the input size is fixed, whatever the weights.
IMAGE_SIZE = 224


@dataclass
class LoadedImageReward:
    vision: Any
    text: Any
    head: Any


@dataclass
class ImageRewardPreprocessing:
    tokenizer: Any
    folder: Path


class ImageReward(PaperReward):
    """ImageReward-v1.0 human preference score; MIRO key ``image_reward_score``.

    Reference: ``ImageReward.load("ImageReward-v1.0").score(prompt, image)`` (image-reward 1.5): the
    OpenAI ``clip``-style transform at 224 (resize and crop in the image's own mode, then
    ``convert("RGB")``: alpha dropped, 16-bit and float images clipped, the defaults here), BLIP's
    ``bert-base-uncased`` tokenizer plus ``[DEC]``/``[ENC]``, padded to 35 tokens.
    """

    name = "imagereward"
    version = "1"
    description = "ImageReward-v1.0 (BLIP ViT-L/16 + BERT): (r + 2) / 4"
    Options = ImageRewardOptions
    #: Peak process memory loading and scoring in float32 at real size, measured by
    #: benchmarks/reward_memory.py (random weights in the release layout) plus a 10% margin; docs/rewards.md.
    peak_memory_mib = 2900.0

    def _build_preprocessing(self) -> ImageRewardPreprocessing:
        from miro_reward_common.checkpoints import resolve_folder
        from miro_reward_common.tokenizers import TOKENIZER_FILES, load_tokenizer

        folder = resolve_folder(
            self.options.tokenizer,
            reward=self.name,
            option="tokenizer",
            required=[TOKENIZER_FILES],
            what="bert-base-uncased tokenizer",
        )
        # BertTokenizer, not AutoTokenizer: bert-base-uncased's files carry no tokenizer class, and a bare
        # tokenizer.json would load without BERT's [PAD] (init_tokenizer in BLIP uses BertTokenizer too).
        tokenizer = load_tokenizer(folder, reward=self.name, cls="BertTokenizer", need_pad=True)
        tokenizer.add_special_tokens({"bos_token": EXTRA_TOKENS[0]})
        tokenizer.add_special_tokens({"additional_special_tokens": [EXTRA_TOKENS[1]]})
        return ImageRewardPreprocessing(tokenizer, folder)

    def _load(self, device: str, dtype: Any) -> LoadedImageReward:
        from miro_reward_common.checkpoints import (
            CheckpointError,
            assign_load,
            build_empty,
            read_json,
            read_state_dict,
            resolve_folder,
            strict_load,
        )
        from miro_reward_common.heads import build_linear_head
        from transformers import BlipTextModel, BlipVisionModel

        folder = resolve_folder(
            self.options.checkpoint,
            reward=self.name,
            option="checkpoint",
            required=[(WEIGHTS_FILE,), (CONFIG_FILE,)],
            what="ImageReward checkpoint",
        )
        prep: ImageRewardPreprocessing = self.preprocessing
        path = folder / WEIGHTS_FILE
        med = read_json(folder / CONFIG_FILE, reward=self.name)
        if len(prep.tokenizer) != med["vocab_size"]:
            raise CheckpointError(
                f"{self.name}: the tokenizer in {prep.folder} has {len(prep.tokenizer)} entries with BLIP's "
                f"[DEC]/[ENC], but {CONFIG_FILE} says vocab_size={med['vocab_size']}; use bert-base-uncased"
            )
        vision_sd, text_sd, head_sd, unmapped = split_state(read_state_dict(path, reward=self.name))
        if unmapped:
            raise CheckpointError(
                f"{self.name}: {path} does not match the architecture; unexpected keys: {', '.join(sorted(unmapped))}"
            )
        vcfg = vision_config(vision_sd, reward=self.name)
        if vcfg.image_size != IMAGE_SIZE:
            raise CheckpointError(
                f"{self.name}: {path} holds a ViT for {vcfg.image_size} px, but ImageReward feeds it {IMAGE_SIZE} px"
            )
        vision = build_empty(lambda: BlipVisionModel(vcfg))
        text = build_empty(lambda: BlipTextModel(text_config(med, vcfg.hidden_size), add_pooling_layer=False))
        head = build_linear_head(med["hidden_size"])
        assign_load(vision, vision_sd, reward=self.name, source=f"{path} (blip.visual_encoder)")
        assign_load(
            text, text_sd, reward=self.name, source=f"{path} (blip.text_encoder)", ignore_missing=["*position_ids"]
        )
        strict_load(head, head_sd, reward=self.name, source=f"{path} (mlp)")
        del vision_sd, text_sd, head_sd
        return LoadedImageReward(
            vision=vision.to(device=device, dtype=dtype).eval(),
            text=text.to(device=device, dtype=dtype).eval(),
            head=head.to(device=device, dtype=torch_dtype("float32")),  # the reference casts the CLS state .float()
        )

    def _prepare(self, state: ImageRewardPreprocessing, image: Image, caption: str) -> dict[str, Any]:
        from miro_reward_common.images import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, normalize, openai_clip_pixels

        pixels = normalize(
            [openai_clip_pixels(image, IMAGE_SIZE, **self.options.image_choices())], OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
        )[0]
        tokens = state.tokenizer(caption, padding="max_length", truncation=True, max_length=self.options.max_length)
        return {
            "pixels": pixels,
            "input_ids": list(tokens["input_ids"]),
            "attention_mask": list(tokens["attention_mask"]),
        }

    def cls_states(self, prepared: list[dict[str, Any]]) -> Any:
        """The text encoder's CLS state after cross-attending to the image (float32), the head's input."""
        import torch

        loaded: LoadedImageReward = self.model
        pixels = torch.stack([p["pixels"] for p in prepared]).to(device=self.device, dtype=self.dtype)
        image_embeds = loaded.vision(pixel_values=pixels).last_hidden_state
        ids = torch.tensor([p["input_ids"] for p in prepared], dtype=torch.long, device=self.device)
        mask = torch.tensor([p["attention_mask"] for p in prepared], dtype=torch.long, device=self.device)
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        out = loaded.text(
            input_ids=ids,
            attention_mask=mask,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_atts,
            is_decoder=False,
        )
        return out.last_hidden_state[:, 0, :].float()

    def _score_batch(self, prepared: list[dict[str, Any]]) -> list[float]:
        rewards = self.model.head(self.cls_states(prepared)).squeeze(-1)
        return ((rewards - MEAN) / STD).tolist()

    def scale(self, raw: float) -> float:
        return (raw + 2.0) / 4.0
