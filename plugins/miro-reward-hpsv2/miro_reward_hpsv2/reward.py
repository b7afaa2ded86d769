"""HPSv2 / HPSv2.1 (Wu et al., 2023): an open_clip ViT-H-14 fine-tuned on human preferences.

Score: the plain cosine between the normalised image and text embeddings (no logit scale), as
``hpsv2.score``. Preprocessing is HPSv2's validation transform: RGB, longest side to 224 (bicubic on the
float tensor), zero padding to a square, OpenAI mean/std; captions use the open_clip tokenizer (77
tokens). MIRO bins the cosine unscaled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miro_reward_common.base import PaperReward, PaperRewardOptions

from miro_core.errors import ConfigError

if TYPE_CHECKING:
    from PIL.Image import Image

#: Written by open_clip's hub export; when it sits beside the weights its ``model_cfg`` is used.
CONFIG_FILE = "open_clip_config.json"


class HPSv2Options(PaperRewardOptions):
    #: The ``.pt`` file, a folder holding ``filename``, or the cached repo id ``xswu/HPSv2``.
    checkpoint: str | None = "xswu/HPSv2"
    #: File name inside a folder or repo: ``HPS_v2.1_compressed.pt`` (MIRO) or ``HPS_v2_compressed.pt``.
    filename: str = "HPS_v2.1_compressed.pt"
    #: open_clip architecture, unless an ``open_clip_config.json`` lies beside the weights.
    model_name: str = "ViT-H-14"
    #: torchvision's bicubic tensor resize antialiasing (default of torchvision >= 0.17).
    antialias: bool = True


@dataclass
class HPSPreprocessing:
    path: Path
    cfg: dict[str, Any]
    tokenizer: Any
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def model_config(weights: Path, model_name: str, *, reward: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model_cfg, preprocess_cfg): from ``open_clip_config.json`` beside the weights, else open_clip's table."""
    import open_clip
    from miro_reward_common.checkpoints import read_json

    beside = weights.parent / CONFIG_FILE
    if beside.is_file():
        cfg = read_json(beside, reward=reward)
        return dict(cfg["model_cfg"]), dict(cfg.get("preprocess_cfg", {}))
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise ConfigError(f"{reward}: open_clip knows no architecture {model_name!r}")
    return dict(cfg), {}


def unwrap_state(state: dict[str, Any]) -> dict[str, Any]:
    """The model weights of an HPSv2 checkpoint: ``state["state_dict"]``, DDP ``module.`` prefix removed."""
    inner = state.get("state_dict", state)
    if inner and all(k.startswith("module.") for k in inner):
        inner = {k[len("module.") :]: v for k, v in inner.items()}
    return dict(inner)


class HPSv2(PaperReward):
    """Human Preference Score v2.1 of an image for its caption; MIRO key ``hpsv2_score``.

    Reference: ``hpsv2.score`` (hpsv2 1.2.0): ``_convert_to_rgb_or_rgba`` (``convert("RGB")`` for every
    mode but RGBA: 16-bit and float images clipped, alpha dropped, the defaults here), ``ToTensor``,
    ``ResizeMaxSize`` (longest side, torchvision bicubic on the tensor, zero padding), ``Normalize``.
    It raises on RGBA (four channels reach the model) and on a non-square image whose longest side is
    already 224 (no padding then); the plugin drops RGBA's alpha like every other mode and pads such
    images, which equals the reference on ``image.convert("RGB")``. On CUDA the reference computes under
    float16 autocast; on CPU in float32.
    """

    name = "hpsv2"
    version = "1"
    description = "HPSv2.1 (open_clip ViT-H-14): cosine, letterboxed 224 input"
    Options = HPSv2Options
    #: Peak process memory loading and scoring in float32 at real size, measured by
    #: benchmarks/reward_memory.py (random weights in the release layout) plus a 10% margin; docs/rewards.md.
    peak_memory_mib = 5100.0

    def _build_preprocessing(self) -> HPSPreprocessing:
        from miro_reward_common.checkpoints import resolve_file
        from miro_reward_common.images import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
        from miro_reward_common.tokenizers import check_vocab
        from open_clip.tokenizer import SimpleTokenizer

        path = resolve_file(
            self.options.checkpoint,
            reward=self.name,
            option="checkpoint",
            filename=self.options.filename,
            what="HPSv2 checkpoint",
        )
        cfg, pre = model_config(path, self.options.model_name, reward=self.name)
        if cfg.get("custom_text") or "hf_model_name" in cfg.get("text_cfg", {}):
            raise ConfigError(f"{self.name}: only open_clip's plain CLIP towers are supported, got {cfg}")
        context = int(cfg.get("text_cfg", {}).get("context_length", 77))
        tokenizer = SimpleTokenizer(context_length=context)  # HPSv2's tokenizer: open_clip's bundled BPE
        check_vocab(tokenizer.encoder, reward=self.name, source="open_clip's bundled BPE vocabulary")
        size = cfg["vision_cfg"]["image_size"]
        return HPSPreprocessing(
            path=path,
            cfg=cfg,
            tokenizer=tokenizer,
            image_size=int(size if isinstance(size, int) else size[0]),
            mean=tuple(pre.get("mean", OPENAI_CLIP_MEAN)),
            std=tuple(pre.get("std", OPENAI_CLIP_STD)),
        )

    def _load(self, device: str, dtype: Any) -> Any:
        from miro_reward_common.checkpoints import assign_load, build_empty, read_state_dict
        from open_clip.model import CLIP

        prep: HPSPreprocessing = self.preprocessing
        model = build_empty(lambda: CLIP(**prep.cfg))
        state = unwrap_state(read_state_dict(prep.path, reward=self.name))
        assign_load(model, state, reward=self.name, source=prep.path)
        del state
        vocab = len(prep.tokenizer.encoder)
        if vocab != model.vocab_size:
            raise ConfigError(f"{self.name}: tokenizer has {vocab} entries, the text tower {model.vocab_size}")
        return model.to(device=device, dtype=dtype).eval()

    def _prepare(self, state: HPSPreprocessing, image: Image, caption: str) -> dict[str, Any]:
        from miro_reward_common.images import hpsv2_tensor

        pixels = hpsv2_tensor(
            image, state.image_size, state.mean, state.std, self.options.antialias, **self.options.image_choices()
        )
        return {"pixels": pixels, "tokens": state.tokenizer([caption])[0]}

    def _score_batch(self, prepared: list[dict[str, Any]]) -> list[float]:
        import torch

        pixels = torch.stack([p["pixels"] for p in prepared]).to(device=self.device, dtype=self.dtype)
        tokens = torch.stack([p["tokens"] for p in prepared]).to(self.device)
        image = self.model.encode_image(pixels, normalize=True).float()
        text = self.model.encode_text(tokens, normalize=True).float()
        return (image * text).sum(dim=-1).tolist()
