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

FLAN-T5 is *untied*: ``lm_head`` is its own matrix, while ``shared``, ``encoder.embed_tokens`` and
``decoder.embed_tokens`` are one embedding (one module in transformers 4.x, which the reference runs).
transformers 5's ``T5Config`` always sets ``tie_word_embeddings=True`` (a saved ``False`` only turns
off the decoder output scaling), so a model built the usual way would silently use one tensor for the
embedding and the head. Here the model is built on the meta device and the checkpoint's tensors are
assigned one by one: ``lm_head.weight`` from its own key, the three embeddings from ``shared.weight``
(explicitly, also when the checkpoint omits the ``embed_tokens`` keys, never left random).
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
    select_layer: int
    select_feature: str


@dataclass
class VQAPreprocessing:
    folder: Path
    config: dict[str, Any]
    tokenizer: Any
    vocab: int
    vision_folder: Path | None
    vision_config: Any
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
        else:  # includes CLIPT5's ``embed_tokens.weight``, its alias of encoder.embed_tokens (= shared)
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


def ties_head(cfg: dict[str, Any]) -> bool:
    """Whether the checkpoint's T5 shares its head with the embedding (original T5; not FLAN-T5 / T5 v1.1)."""
    return cfg.get("tie_word_embeddings", True) is not False


#: Keys that hold the one T5 input embedding besides ``shared.weight`` (``embed_tokens`` is CLIPT5's alias).
EMBEDDING_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "embed_tokens.weight")


def untied_t5_state(t5_sd: dict[str, Any], cfg: dict[str, Any], *, reward: str, source: Any) -> dict[str, Any]:
    """The T5 tensors with every embedding key taken from ``shared.weight`` and the head from its own key.

    A checkpoint's ``encoder.embed_tokens`` / ``decoder.embed_tokens`` / ``embed_tokens`` must equal
    ``shared`` (transformers 4.x saves one module under all four names); when absent they are filled from
    ``shared`` here, so no embedding is ever left uninitialised.
    """
    import torch
    from miro_reward_common.checkpoints import CheckpointError

    if "shared.weight" not in t5_sd:
        raise CheckpointError(f"{reward}: {source} does not match the architecture; missing keys: shared.weight")
    shared = t5_sd["shared.weight"]
    out = dict(t5_sd)
    for key in EMBEDDING_ALIASES:
        value = out.pop(key, None)
        if value is not None and (value.shape != shared.shape or not torch.equal(value, shared)):
            raise CheckpointError(
                f"{reward}: {source} holds a {key} that differs from shared.weight; T5 (and the reference) "
                "use one input embedding"
            )
    out["encoder.embed_tokens.weight"] = shared
    out["decoder.embed_tokens.weight"] = shared
    if ties_head(cfg):
        head = out.get("lm_head.weight")
        if head is not None and not torch.equal(head, shared):
            raise CheckpointError(f"{reward}: {source} ties lm_head to shared (tie_word_embeddings) but they differ")
        out["lm_head.weight"] = shared
    elif "lm_head.weight" not in out:
        raise CheckpointError(
            f"{reward}: {source} does not match the architecture; missing keys: lm_head.weight "
            "(its config sets tie_word_embeddings=false: the head is a separate matrix)"
        )
    return out


class VQAScore(PaperReward):
    """Probability that the model answers "Yes" to "Does this figure show {caption}?"; MIRO key ``vqa_score``.

    Reference: t2v_metrics 3.0 ``CLIPT5Model.forward``: ``Image.open(path).convert("RGB")`` (16-bit and
    float images clipped, alpha dropped: the defaults here), ``expand2square`` with the mean colour, the
    tower's ``CLIPImageProcessor``, the slow sentencepiece FLAN-T5 tokenizer. Devices: the reference casts
    the whole model to bfloat16 and computes under CUDA autocast (it cannot run on a CPU); the plugin runs in
    the ``--dtype`` it is given (bfloat16 on CUDA reproduces the reference's precision; float32 on CPU) and
    always takes the cross-entropy in float32 from the logits. transformers 4.x misreads a square image of
    1 or 3 pixels as channels-first; the plugin does not.
    """

    name = "vqascore"
    version = "1"
    description = "VQAScore (CLIP-FlanT5-XXL): P(Yes | image, question)"
    Options = VQAScoreOptions
    #: Peak process memory loading and scoring CLIP-FlanT5-XXL in float32: 11.46B parameters (43716 MiB) plus the
    #: overhead measured on the XL sibling by benchmarks/reward_memory.py (923 MiB; XXL does not fit the 24 GiB
    #: machine) = 44638 MiB, plus a 10% margin. About half in bfloat16 (22780 MiB computed). docs/rewards.md.
    peak_memory_mib = 49100.0

    def _build_preprocessing(self) -> VQAPreprocessing:
        from miro_reward_common.checkpoints import HF_WEIGHT_FILES, read_json, resolve_folder
        from miro_reward_common.images import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
        from miro_reward_common.tokenizers import TOKENIZER_FILES, load_tokenizer
        from transformers import CLIPVisionConfig

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
        # T5Tokenizer, not AutoTokenizer: a folder with spiece.model alone (FLAN-T5's minimum) names no class.
        tokenizer = load_tokenizer(
            tok_folder, reward=self.name, cls="T5Tokenizer", model_max_length=self.options.max_length
        )
        vision_folder = self._vision_folder(cfg)
        if vision_folder is not None:
            vcfg = CLIPVisionConfig.from_pretrained(str(vision_folder), local_files_only=True)
        else:
            vcfg = CLIPVisionConfig(**CLIP_L14_336)
        mean, std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
        if vision_folder is not None and (vision_folder / "preprocessor_config.json").is_file():
            pre = read_json(vision_folder / "preprocessor_config.json", reward=self.name)
            mean, std = tuple(pre.get("image_mean", mean)), tuple(pre.get("image_std", std))
        return VQAPreprocessing(
            folder=folder,
            config=cfg,
            tokenizer=tokenizer,
            vocab=len(tokenizer),
            vision_folder=vision_folder,
            vision_config=vcfg,
            image_size=int(vcfg.image_size),
            mean=mean,
            std=std,
        )

    def _load(self, device: str, dtype: Any) -> LoadedVQA:
        from miro_reward_common.checkpoints import (
            HF_WEIGHT_FILES,
            CheckpointError,
            assign_load,
            build_empty,
            read_hf_weights,
            resolve_folder,
        )
        from transformers import CLIPVisionModel, T5ForConditionalGeneration

        prep: VQAPreprocessing = self.preprocessing
        folder, cfg = prep.folder, prep.config
        t5_sd, proj_sd, vision_sd = split_state(read_hf_weights(folder, reward=self.name))

        config = t5_config(cfg)
        if prep.vocab > config.vocab_size:
            raise CheckpointError(
                f"{self.name}: the tokenizer has {prep.vocab} entries, more than the model's {config.vocab_size}; "
                "it is not the model's tokenizer"
            )
        vision = build_empty(lambda: CLIPVisionModel(prep.vision_config))
        if vision_sd:
            tower, source = vision_sd, f"{folder} ({VISION_PREFIX}*)"
        else:
            vision_folder = resolve_folder(
                self.options.vision_tower,
                reward=self.name,
                option="vision_tower",
                required=[("config.json",), HF_WEIGHT_FILES],
                what="CLIP vision tower (the checkpoint holds none)",
            )
            tower, source = tower_weights(read_hf_weights(vision_folder, reward=self.name)), vision_folder
        # ``position_ids`` buffers saved by transformers < 4.31 are skipped here as in every other reward.
        assign_load(
            vision,
            match_tower_keys(tower, vision),
            reward=self.name,
            source=source,
            ignore_unexpected=["*position_ids"],
        )
        del tower, vision_sd

        t5 = build_empty(lambda: T5ForConditionalGeneration(config))
        t5_sd = untied_t5_state(t5_sd, cfg, reward=self.name, source=folder)
        assign_load(t5, t5_sd, reward=self.name, source=folder)
        del t5_sd
        if not ties_head(cfg) and t5.lm_head.weight is t5.shared.weight:  # pragma: no cover - a transformers change
            raise CheckpointError(f"{self.name}: the T5 head is still tied to the embedding after loading {folder}")

        kind = cfg.get("mm_projector_type", "linear")
        in_features = int(cfg.get("mm_hidden_size", prep.vision_config.hidden_size))
        projector = build_empty(lambda: build_projector(kind, in_features, config.d_model))
        assign_load(projector, proj_sd, reward=self.name, source=f"{folder} ({PROJECTOR_PREFIX}*)")
        return LoadedVQA(
            t5=t5.to(device=device, dtype=dtype).eval(),
            vision=vision.to(device=device, dtype=dtype).eval(),
            projector=projector.to(device=device, dtype=dtype).eval(),
            select_layer=int(cfg.get("mm_vision_select_layer", -2)),
            select_feature=str(cfg.get("mm_vision_select_feature", "patch")),
        )

    def _vision_folder(self, cfg: dict[str, Any]) -> Path | None:
        """The vision tower folder; optional when the tower is ViT-L/14-336 (its weights are then needed from
        the checkpoint, which :meth:`_load` checks)."""
        from miro_reward_common.checkpoints import resolve_folder

        from miro_core.errors import MissingWeightsError

        try:
            return resolve_folder(
                self.options.vision_tower,
                reward=self.name,
                option="vision_tower",
                required=[("config.json",)],
                what="CLIP vision tower",
            )
        except MissingWeightsError:
            if cfg.get("mm_vision_tower") != "openai/clip-vit-large-patch14-336":
                raise
            return None

    # -- scoring ----------------------------------------------------------------------------------
    def _prepare(self, state: VQAPreprocessing, image: Image, caption: str) -> dict[str, Any]:
        from miro_reward_common.images import expand_to_square, hf_clip_pixels, mean_colour, normalize

        from miro_core.image_modes import to_rgb8

        rgb = to_rgb8(image, **self.options.image_choices())  # type: ignore[arg-type]
        square = expand_to_square(rgb, mean_colour(state.mean))
        pixels = normalize([hf_clip_pixels(square, state.image_size, state.image_size)], state.mean, state.std)[0]
        before, after = self.prompt_ids(state.tokenizer, caption)
        label = list(state.tokenizer(self.options.answer_template.format(caption)).input_ids)
        return {"pixels": pixels, "before": before, "after": after, "label": label}

    def prompt_ids(self, tokenizer: Any, caption: str) -> tuple[list[int], list[int]]:
        """Token ids before and after the image for one caption (each chunk ends with ``</s>``).

        The prompt is split at the template's own ``<image>`` (the first one): a caption that itself
        contains ``<image>`` makes the reference raise, here it is text.
        """
        question = self.options.question_template.format(caption)
        prompt = CONVERSATIONS[self.options.conversation].format(question=question)
        before, after = prompt.split(IMAGE_TOKEN, 1)
        ids_before = list(tokenizer(before).input_ids)
        ids_after = list(tokenizer(after).input_ids)
        room = self.options.max_length - len(ids_before) - 1
        if room < 0:
            return ids_before[: self.options.max_length], []
        return ids_before, ids_after[:room]

    def image_tokens(self, pixels: Any) -> Any:
        """Projected image features (B, patches, d_model)."""
        loaded: LoadedVQA = self.model
        hidden = loaded.vision(pixel_values=pixels, output_hidden_states=True).hidden_states[loaded.select_layer]
        if loaded.select_feature == "patch":
            hidden = hidden[:, 1:]
        elif loaded.select_feature != "cls_patch":
            raise ConfigError(f"{self.name}: unsupported mm_vision_select_feature {loaded.select_feature!r}")
        return loaded.projector(hidden)

    def logits(self, prepared: list[dict[str, Any]]) -> tuple[Any, Any]:
        """(decoder logits restricted to the tokenizer's vocabulary, labels padded with -100)."""
        import torch

        loaded: LoadedVQA = self.model
        embed = loaded.t5.get_input_embeddings()
        pixels = torch.stack([p["pixels"] for p in prepared]).to(device=self.device, dtype=self.dtype)
        features = self.image_tokens(pixels)
        sequences = []
        for item, feats in zip(prepared, features):
            parts = [embed(torch.tensor(item["before"], dtype=torch.long, device=self.device))]
            if len(item["before"]) < self.options.max_length:
                parts.append(feats)
            if item["after"]:
                parts.append(embed(torch.tensor(item["after"], dtype=torch.long, device=self.device)))
            sequences.append(torch.cat(parts, dim=0))
        longest = max(s.shape[0] for s in sequences)
        width = sequences[0].shape[1]
        inputs = torch.zeros(len(sequences), longest, width, dtype=sequences[0].dtype, device=self.device)
        mask = torch.zeros(len(sequences), longest, dtype=torch.long, device=self.device)
        for i, seq in enumerate(sequences):
            inputs[i, : seq.shape[0]] = seq
            mask[i, : seq.shape[0]] = 1
        label_len = max(len(p["label"]) for p in prepared)
        labels = torch.full((len(prepared), label_len), IGNORE_INDEX, dtype=torch.long, device=self.device)
        for i, item in enumerate(prepared):
            labels[i, : len(item["label"])] = torch.tensor(item["label"], dtype=torch.long)
        out = loaded.t5(
            inputs_embeds=inputs,
            attention_mask=mask,
            decoder_input_ids=loaded.t5.prepare_decoder_input_ids_from_labels(labels=labels),
            decoder_attention_mask=(labels != IGNORE_INDEX).long(),
            use_cache=False,
        )
        return out.logits[..., : self.preprocessing.vocab], labels

    def _score_batch(self, prepared: list[dict[str, Any]]) -> list[float]:
        import torch

        logits, labels = self.logits(prepared)
        scores = []
        for row_logits, row_labels in zip(logits.float(), labels):
            loss = torch.nn.functional.cross_entropy(row_logits, row_labels, ignore_index=IGNORE_INDEX)
            scores.append(float(torch.exp(-loss)))
        return scores
