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
class LoadedHPS:
    model: Any
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
    """Human Preference Score v2.1 of an image for its caption; MIRO key ``hpsv2_score``."""

    name = "hpsv2"
    version = "1"
    description = "HPSv2.1 (open_clip ViT-H-14): cosine, letterboxed 224 input"
    Options = HPSv2Options
    #: Peak process memory measured in float32 at real size (benchmarks/reward_throughput.py, docs/rewards.md).
    peak_memory_mib = 4800.0

    def _load(self, device: str, dtype: Any) -> LoadedHPS:
        from miro_reward_common.checkpoints import read_state_dict, resolve_file, strict_load
        from miro_reward_common.images import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
        from miro_reward_common.tokenizers import check_vocab
        from open_clip.model import CLIP
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
        model = CLIP(**cfg)
        strict_load(model, unwrap_state(read_state_dict(path, reward=self.name)), reward=self.name, source=path)
        context = int(cfg.get("text_cfg", {}).get("context_length", 77))
        tokenizer = SimpleTokenizer(context_length=context)  # HPSv2's tokenizer: open_clip's bundled BPE
        vocab = check_vocab(tokenizer.encoder, reward=self.name, source="open_clip's bundled BPE vocabulary")
        if vocab != model.vocab_size:
            raise ConfigError(f"{self.name}: tokenizer has {vocab} entries, the text tower {model.vocab_size}")
        size = cfg["vision_cfg"]["image_size"]
        return LoadedHPS(
            model=model.to(device=device, dtype=dtype).eval(),
            tokenizer=tokenizer,
            image_size=int(size if isinstance(size, int) else size[0]),
            mean=tuple(pre.get("mean", OPENAI_CLIP_MEAN)),
            std=tuple(pre.get("std", OPENAI_CLIP_STD)),
        )

    def pixels(self, images: list[Image]) -> Any:
        import torch
        from miro_reward_common.images import hpsv2_tensor

        loaded: LoadedHPS = self.model
        return torch.stack(
            [hpsv2_tensor(im, loaded.image_size, loaded.mean, loaded.std, self.options.antialias) for im in images]
        )

    def _raw_scores(self, images: list[Image], captions: list[str]) -> list[float]:
        loaded: LoadedHPS = self.model
        pixels = self.pixels(images).to(device=self.device, dtype=self.dtype)
        tokens = loaded.tokenizer(list(captions)).to(self.device)
        image = loaded.model.encode_image(pixels, normalize=True).float()
        text = loaded.model.encode_text(tokens, normalize=True).float()
        return (image * text).sum(dim=-1).tolist()
