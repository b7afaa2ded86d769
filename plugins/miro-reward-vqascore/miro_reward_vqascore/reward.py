"""VQAScore (Lin et al., 2024) with CLIP-FlanT5, rebuilt on transformers' T5 and CLIP classes.

The reference (``t2v_metrics`` ``clip-flant5-xxl``) is a LLaVA-style encoder-decoder:

- image: RGB, padded to a square with the processor's mean colour, then the CLIP processor at 336
  (shortest side bicubic, centre crop, OpenAI mean/std); CLIP ViT-L/14-336 features of the
  second-to-last layer without the CLS token; a ``Linear -> GELU -> Linear`` projector to the T5 width;
- text: ``A chat between ... USER: <image>\\n{question} ASSISTANT: `` where ``question`` is
  ``Does this figure show "{caption}"? Please answer yes or no.``; the two chunks around ``<image>`` are
  tokenized separately (each ends with ``</s>``) and the projected image tokens go in between;
- score: the decoder is fed the label ``Yes`` (tokenized as ``Yes </s>``); the score is
  ``exp(-mean cross-entropy)`` over the label tokens, with logits restricted to the tokenizer's
  vocabulary (the reference resizes the embeddings to ``len(tokenizer)``). MIRO bins it unscaled.

Checkpoint layout (``zhiqiulin/clip-flant5-xxl``): ``config.json`` (T5 config with ``mm_*`` keys) and
weights named as ``T5ForConditionalGeneration`` plus ``mm_projector.{0,2}.*`` and
``vision_tower.vision_tower.<CLIPVisionModel key>``. When the checkpoint holds no vision tower weights
they are read from the ``vision_tower`` folder (``openai/clip-vit-large-patch14-336``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miro_reward_common.base import PaperReward, PaperRewardOptions

from miro_core.errors import ConfigError

if TYPE_CHECKING:
    from PIL.Image import Image

SYSTEM_MSG = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
IMAGE_TOKEN = "<image>"
IGNORE_INDEX = -100
CONVERSATIONS = {
    "t5_chat": SYSTEM_MSG + " USER: " + IMAGE_TOKEN + "\n{question} ASSISTANT: ",
    "t5_chat_no_system": "USER: " + IMAGE_TOKEN + "\n{question} ASSISTANT: ",
    "t5_chat_no_system_no_user": IMAGE_TOKEN + "\n{question} : ",
    "t5_plain": IMAGE_TOKEN + "{question}",
}
VISION_PREFIX = "vision_tower.vision_tower."
PROJECTOR_PREFIX = "mm_projector."
#: config.json of openai/clip-vit-large-patch14-336's vision tower, used when only the weights are local.
CLIP_L14_336 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}


class VQAScoreOptions(PaperRewardOptions):
    #: Folder (or cached repo id) of the CLIP-FlanT5 checkpoint.
    checkpoint: str | None = "zhiqiulin/clip-flant5-xxl"
    #: Folder (or cached repo id) of the FLAN-T5 tokenizer the model was trained with.
    tokenizer: str = "google/flan-t5-xxl"
    #: Folder (or cached repo id) of the CLIP vision tower: its config.json always, its weights only when
    #: the checkpoint has none. Not needed when the checkpoint names openai/clip-vit-large-patch14-336 and
    #: holds the tower's weights.
    vision_tower: str = "openai/clip-vit-large-patch14-336"
    question_template: str = 'Does this figure show "{}"? Please answer yes or no.'
    answer_template: str = "Yes"
    #: Prompt layout of the checkpoint (``t5_chat`` for clip-flant5-xxl / -xl).
    conversation: str = "t5_chat"
    #: Token limit of the encoder input (the image counts as one token here, as in the reference).
    max_length: int = 2048


@dataclass
class LoadedVQA:
    t5: Any
    vision: Any
    projector: Any
    tokenizer: Any
    vocab: int
    select_layer: int
    select_feature: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def build_projector(kind: str, in_features: int, out_features: int) -> Any:
    """LLaVA's ``mm_projector``: ``linear`` or ``mlp{N}x_gelu``."""
    import re

    from torch import nn

    if kind == "linear":
        return nn.Linear(in_features, out_features)
    match = re.fullmatch(r"mlp(\d+)x_gelu", kind)
    if not match:
        raise ConfigError(f"vqascore: unsupported mm_projector_type {kind!r}")
    layers: list[Any] = [nn.Linear(in_features, out_features)]
    for _ in range(1, int(match.group(1))):
        layers += [nn.GELU(), nn.Linear(out_features, out_features)]
    return nn.Sequential(*layers)


def split_state(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(T5 weights, projector weights, vision tower weights) of a CLIP-T5 state dict."""
    t5: dict[str, Any] = {}
    projector: dict[str, Any] = {}
    vision: dict[str, Any] = {}
    for key, value in state.items():
        if key.startswith(VISION_PREFIX):
            vision[key[len(VISION_PREFIX) :]] = value
        elif key.startswith(PROJECTOR_PREFIX):
            projector[key[len(PROJECTOR_PREFIX) :]] = value
        elif key == "embed_tokens.weight":
            continue  # CLIPT5's alias of encoder.embed_tokens (= shared); loaded through shared.weight
        else:
            t5[key] = value
    return t5, projector, vision


#: Keys of a full CLIPModel checkpoint that are not the vision tower's.
_NOT_TOWER = ("text_model.", "text_projection.", "visual_projection.", "logit_scale")


def tower_weights(state: dict[str, Any]) -> dict[str, Any]:
    """The vision tower's tensors in a CLIP folder (a full CLIPModel or a CLIPVisionModel)."""
    if any(k.startswith("vision_model.") for k in state):
        return {k: v for k, v in state.items() if k.startswith("vision_model.")}
    return {k: v for k, v in state.items() if not k.startswith(_NOT_TOWER)}


def match_tower_keys(state: dict[str, Any], module: Any) -> dict[str, Any]:
    """Add or drop the ``vision_model.`` prefix so the keys follow ``module`` (transformers 4 vs 5 layout)."""
    prefixed = any(k.startswith("vision_model.") for k in module.state_dict())
    out = {}
    for key, value in state.items():
        bare = key[len("vision_model.") :] if key.startswith("vision_model.") else key
        out["vision_model." + bare if prefixed else bare] = value
    return out


def t5_config(cfg: dict[str, Any]) -> Any:
    from transformers import T5Config

    fields = {k: v for k, v in cfg.items() if not k.startswith("mm_") and k not in {"model_type", "architectures"}}
    fields.setdefault("pad_token_id", 0)
    fields.setdefault("decoder_start_token_id", fields["pad_token_id"])  # T5 starts decoding from <pad>
    return T5Config(**fields)


class VQAScore(PaperReward):
    """Probability that the model answers "Yes" to "Does this figure show {caption}?"; MIRO key ``vqa_score``."""

    name = "vqascore"
    version = "1"
    description = "VQAScore (CLIP-FlanT5-XXL): P(Yes | image, question)"
    Options = VQAScoreOptions
    #: Peak process memory in float32 at real size: 42.2 GiB of weights (11.33B parameters) plus activations;
    #: about half in bfloat16. Measured on the XL sibling, computed for XXL (docs/rewards.md).
    peak_memory_mib = 45000.0

    def _load(self, device: str, dtype: Any) -> LoadedVQA:
        from miro_reward_common.checkpoints import (
            HF_WEIGHT_FILES,
            CheckpointError,
            read_hf_weights,
            read_json,
            resolve_folder,
            strict_load,
        )
        from miro_reward_common.images import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
        from miro_reward_common.tokenizers import TOKENIZER_FILES, load_tokenizer
        from transformers import CLIPVisionConfig, CLIPVisionModel, T5ForConditionalGeneration

        if self.options.conversation not in CONVERSATIONS:
            raise ConfigError(f"{self.name}: conversation must be one of {', '.join(CONVERSATIONS)}")
        folder = resolve_folder(
            self.options.checkpoint,
            reward=self.name,
            option="checkpoint",
            required=[("config.json",), HF_WEIGHT_FILES],
            what="CLIP-FlanT5 checkpoint",
        )
        tok_folder = resolve_folder(
            self.options.tokenizer, reward=self.name, option="tokenizer", required=[TOKENIZER_FILES], what="tokenizer"
        )
        cfg = read_json(folder / "config.json", reward=self.name)
        t5_sd, proj_sd, vision_sd = split_state(read_hf_weights(folder, reward=self.name))

        vision_folder = self._vision_folder(cfg, need_weights=not vision_sd)
        if vision_folder is not None:
            vcfg = CLIPVisionConfig.from_pretrained(str(vision_folder), local_files_only=True)
        else:
            vcfg = CLIPVisionConfig(**CLIP_L14_336)
        vision = CLIPVisionModel(vcfg).eval()
        if vision_sd:
            tower, source = vision_sd, f"{folder} ({VISION_PREFIX}*)"
        else:
            assert vision_folder is not None
            tower, source = tower_weights(read_hf_weights(vision_folder, reward=self.name)), vision_folder
        strict_load(vision, match_tower_keys(tower, vision), reward=self.name, source=source)

        config = t5_config(cfg)
        t5 = T5ForConditionalGeneration(config).eval()
        tied = ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight"]
        if getattr(config, "tie_word_embeddings", False):
            tied.append("lm_head.weight")
        if "shared.weight" not in t5_sd:
            raise CheckpointError(f"{self.name}: {folder} does not match the architecture; missing keys: shared.weight")
        strict_load(t5, t5_sd, reward=self.name, source=folder, ignore_missing=tied)

        kind = cfg.get("mm_projector_type", "linear")
        projector = build_projector(kind, int(cfg.get("mm_hidden_size", vcfg.hidden_size)), config.d_model).eval()
        strict_load(projector, proj_sd, reward=self.name, source=f"{folder} ({PROJECTOR_PREFIX}*)")

        tokenizer = load_tokenizer(tok_folder, reward=self.name, model_max_length=self.options.max_length)
        vocab = len(tokenizer)
        if vocab > config.vocab_size:
            raise CheckpointError(
                f"{self.name}: the tokenizer in {tok_folder} has {vocab} entries, more than the model's "
                f"{config.vocab_size}; it is not the model's tokenizer"
            )
        mean, std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
        if vision_folder is not None and (vision_folder / "preprocessor_config.json").is_file():
            pre = read_json(vision_folder / "preprocessor_config.json", reward=self.name)
            mean, std = tuple(pre.get("image_mean", mean)), tuple(pre.get("image_std", std))
        return LoadedVQA(
            t5=t5.to(device=device, dtype=dtype),
            vision=vision.to(device=device, dtype=dtype),
            projector=projector.to(device=device, dtype=dtype),
            tokenizer=tokenizer,
            vocab=vocab,
            select_layer=int(cfg.get("mm_vision_select_layer", -2)),
            select_feature=str(cfg.get("mm_vision_select_feature", "patch")),
            image_size=int(vcfg.image_size),
            mean=mean,
            std=std,
        )

    def _vision_folder(self, cfg: dict[str, Any], *, need_weights: bool) -> Path | None:
        """The vision tower folder; optional when the weights are in the checkpoint and the tower is ViT-L/14-336."""
        from miro_reward_common.checkpoints import HF_WEIGHT_FILES, resolve_folder

        from miro_core.errors import MissingWeightsError

        required = [("config.json",), HF_WEIGHT_FILES] if need_weights else [("config.json",)]
        try:
            return resolve_folder(
                self.options.vision_tower,
                reward=self.name,
                option="vision_tower",
                required=required,
                what="CLIP vision tower",
            )
        except MissingWeightsError:
            if need_weights or cfg.get("mm_vision_tower") != "openai/clip-vit-large-patch14-336":
                raise
            return None

    # -- scoring ----------------------------------------------------------------------------------
    def pixels(self, images: list[Image]) -> Any:
        """RGB -> square with the mean colour -> CLIP processor at the tower's size (normalised tensor)."""
        from miro_reward_common.images import expand_to_square, hf_clip_pixels, mean_colour, normalize, to_8bit

        loaded: LoadedVQA = self.model
        fill = mean_colour(loaded.mean)
        arrays = []
        for image in images:
            rgb = to_8bit(image).convert("RGB")
            arrays.append(hf_clip_pixels(expand_to_square(rgb, fill), loaded.image_size, loaded.image_size))
        return normalize(arrays, loaded.mean, loaded.std)

    def image_tokens(self, images: list[Image]) -> Any:
        """Projected image features (B, patches, d_model)."""
        loaded: LoadedVQA = self.model
        pixels = self.pixels(images).to(device=self.device, dtype=self.dtype)
        hidden = loaded.vision(pixel_values=pixels, output_hidden_states=True).hidden_states[loaded.select_layer]
        if loaded.select_feature == "patch":
            hidden = hidden[:, 1:]
        elif loaded.select_feature != "cls_patch":
            raise ConfigError(f"{self.name}: unsupported mm_vision_select_feature {loaded.select_feature!r}")
        return loaded.projector(hidden)

    def prompt_ids(self, caption: str) -> tuple[list[int], list[int]]:
        """Token ids before and after the image for one caption (each chunk ends with ``</s>``)."""
        loaded: LoadedVQA = self.model
        question = self.options.question_template.format(caption)
        prompt = CONVERSATIONS[self.options.conversation].format(question=question)
        before, after = prompt.split(IMAGE_TOKEN)
        ids_before = list(loaded.tokenizer(before).input_ids)
        ids_after = list(loaded.tokenizer(after).input_ids)
        room = self.options.max_length - len(ids_before) - 1
        if room < 0:
            return ids_before[: self.options.max_length], []
        return ids_before, ids_after[:room]

    def label_ids(self, caption: str) -> list[int]:
        loaded: LoadedVQA = self.model
        return list(loaded.tokenizer(self.options.answer_template.format(caption)).input_ids)

    def logits(self, images: list[Image], captions: list[str]) -> tuple[Any, Any]:
        """(decoder logits restricted to the tokenizer's vocabulary, labels padded with -100)."""
        import torch

        loaded: LoadedVQA = self.model
        embed = loaded.t5.get_input_embeddings()
        features = self.image_tokens(images)
        sequences = []
        for caption, feats in zip(captions, features):
            before, after = self.prompt_ids(caption)
            parts = [embed(torch.tensor(before, dtype=torch.long, device=self.device))]
            if len(before) < self.options.max_length:
                parts.append(feats)
            if after:
                parts.append(embed(torch.tensor(after, dtype=torch.long, device=self.device)))
            sequences.append(torch.cat(parts, dim=0))
        longest = max(s.shape[0] for s in sequences)
        width = sequences[0].shape[1]
        inputs = torch.zeros(len(sequences), longest, width, dtype=sequences[0].dtype, device=self.device)
        mask = torch.zeros(len(sequences), longest, dtype=torch.long, device=self.device)
        for i, seq in enumerate(sequences):
            inputs[i, : seq.shape[0]] = seq
            mask[i, : seq.shape[0]] = 1
        labels_list = [self.label_ids(c) for c in captions]
        label_len = max(len(x) for x in labels_list)
        labels = torch.full((len(captions), label_len), IGNORE_INDEX, dtype=torch.long, device=self.device)
        for i, ids in enumerate(labels_list):
            labels[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        out = loaded.t5(
            inputs_embeds=inputs,
            attention_mask=mask,
            decoder_input_ids=loaded.t5.prepare_decoder_input_ids_from_labels(labels=labels),
            decoder_attention_mask=(labels != IGNORE_INDEX).long(),
            use_cache=False,
        )
        return out.logits[..., : loaded.vocab], labels

    def _raw_scores(self, images: list[Image], captions: list[str]) -> list[float]:
        import torch

        logits, labels = self.logits(images, captions)
        scores = []
        for row_logits, row_labels in zip(logits.float(), labels):
            loss = torch.nn.functional.cross_entropy(row_logits, row_labels, ignore_index=IGNORE_INDEX)
            scores.append(float(torch.exp(-loss)))
        return scores
