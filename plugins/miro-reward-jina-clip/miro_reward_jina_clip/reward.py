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


#: The revision of jina-clip-v2's model code this project documents (docs/rewards.md, the plugin README):
#: ``auto_map`` in jina-clip-v2's config.json points at code in another repository, which would otherwise
#: run at whatever revision the local cache holds as ``main``.
CODE_REPO = "jinaai/jina-clip-implementation"
CODE_REVISION = "39e6a55ae971b59bea6e44675d237c99762e7ee2"
#: The checkpoint revision the code revision above belongs to.
MODEL_REVISION = "e10d47f5691d0454a0fb5d13f46f2199b74cb436"


class JinaCLIPOptions(PaperRewardOptions):
    #: Folder (or cached repo id) of jina-clip-v2 with its code files, weights, tokenizer and processor config.
    checkpoint: str | None = "jinaai/jina-clip-v2"
    #: Run the Python code shipped in the checkpoint folder. Off by default: read that code first.
    trust_remote_code: bool = False
    #: Commit of the repository holding the model code (``auto_map``'s ``owner/repo--module.Class``). It must be
    #: in the local Hugging Face cache at exactly this revision; ``null`` runs whatever code the checkpoint
    #: folder itself carries (a folder whose ``auto_map`` names local files), unchecked.
    code_revision: str | None = CODE_REVISION
    #: Truncate captions to this many tokens; None keeps the tokenizer's own limit (the processor's default).
    max_length: int | None = None


@dataclass
class JinaPreprocessing:
    folder: Path
    tokenizer: Any
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def code_reference(folder: Path, *, reward: str) -> tuple[str | None, str]:
    """(code repository or None for files in ``folder``, module name) of config.json's ``auto_map.AutoModel``."""
    from miro_reward_common.checkpoints import read_json

    auto_map = read_json(folder / "config.json", reward=reward).get("auto_map", {})
    code = auto_map.get("AutoModel")
    if not code:
        raise ConfigError(f"{reward}: {folder}/config.json has no auto_map.AutoModel; is it jina-clip-v2?")
    repo, _, reference = str(code).rpartition("--")
    return (repo or None), reference.rsplit(".", 1)[0]


def check_code_revision(folder: Path, revision: str | None, *, reward: str) -> None:
    """The model code transformers will run is the documented revision, present in the local cache.

    Raises :class:`MissingWeightsError` naming the repository and revision when it is not cached, and
    :class:`ConfigError` when the checkpoint carries its own code but a revision is required (or the reverse).
    """
    from miro_core.errors import MissingWeightsError

    repo, module = code_reference(folder, reward=reward)
    if repo is None:
        if revision is not None:
            raise ConfigError(
                f"{reward}: {folder} carries its own model code ({module}.py), not {CODE_REPO} at the documented "
                f"revision {revision}; read that code, then set code_revision: null to run it "
                f"(--reward-option {reward}.code_revision=null)"
            )
        return
    if revision is None:
        raise ConfigError(
            f"{reward}: {folder} runs code from {repo}; name its revision with code_revision (documented: "
            f"{CODE_REVISION} of {CODE_REPO})"
        )
    try:
        from huggingface_hub import snapshot_download

        snapshot = Path(snapshot_download(repo, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - absent in the cache, or not a revision at all
        snapshot = None
    if snapshot is None or not (snapshot / f"{module}.py").is_file():
        raise MissingWeightsError(
            f"{reward}: the model code {repo}@{revision} ({module}.py) is not in the local Hugging Face cache; "
            f"nothing is downloaded. On a machine with internet run `huggingface-cli download {repo} "
            f"--revision {revision}` and copy the cache over"
            + ("" if revision == CODE_REVISION else f" (the documented revision is {CODE_REVISION})")
        )


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
    """Image-caption agreement under jina-clip-v2; MIRO key ``clip_score``.

    No offline reference comparison exists for this reward: the model is code shipped with its weights
    (see the plugin README). Its transform is open_clip's (resize and crop, then ``convert("RGB")``), so the
    mode-conversion defaults follow the other ``clip``-style rewards.
    """

    name = "jina-clip"
    version = "1"
    description = "jina-clip-v2 logits_per_image diagonal / 100 (needs trust_remote_code)"
    Options = JinaCLIPOptions
    #: Peak process memory in float32 at real size: 4584 MiB measured on a same-size stand-in (0.87B parameters;
    #: the model itself cannot be built offline) by benchmarks/reward_throughput.py, plus a 10% margin.
    peak_memory_mib = 5100.0

    def _checkpoint(self) -> Path:
        from miro_reward_common.checkpoints import HF_WEIGHT_FILES, resolve_folder
        from miro_reward_common.tokenizers import TOKENIZER_FILES

        return resolve_folder(
            self.options.checkpoint,
            reward=self.name,
            option="checkpoint",
            required=[("config.json",), ("preprocessor_config.json",), HF_WEIGHT_FILES, TOKENIZER_FILES],
            what="jina-clip-v2 checkpoint",
        )

    def _build_preprocessing(self) -> JinaPreprocessing:
        from miro_reward_common.tokenizers import load_tokenizer

        folder = self._checkpoint()
        size, mean, std = image_settings(folder / "preprocessor_config.json", reward=self.name)
        tokenizer = load_tokenizer(folder, reward=self.name, need_pad=True)
        return JinaPreprocessing(folder, tokenizer, size, mean, std)

    def _load(self, device: str, dtype: Any) -> Any:
        from miro_reward_common.checkpoints import hf_from_pretrained
        from transformers import AutoModel

        folder = self._checkpoint()
        repo, module = code_reference(folder, reward=self.name)
        if not self.options.trust_remote_code:
            where = (
                f"{module}.py in {folder}" if repo is None else f"{module}.py of {repo}@{self.options.code_revision}"
            )
            raise ConfigError(
                f"{self.name}: jina-clip-v2 runs Python code shipped with its weights ({where}, and the modules it "
                "imports). Read it, then opt in with the option trust_remote_code: true "
                f"(--reward-option {self.name}.trust_remote_code=true)"
            )
        _ = self.preprocessing  # the processor settings and tokenizer are checked before any code runs
        check_code_revision(folder, self.options.code_revision, reward=self.name)
        extra = {"code_revision": self.options.code_revision} if repo is not None else {}
        model = hf_from_pretrained(AutoModel, folder, reward=self.name, trust_remote_code=True, **extra)
        return model.to(device=device, dtype=dtype).eval()

    def _prepare(self, state: JinaPreprocessing, image: Image, caption: str) -> dict[str, Any]:
        from miro_reward_common.images import normalize, openai_clip_pixels

        pixels = normalize(
            [openai_clip_pixels(image, state.size, **self.options.image_choices())], state.mean, state.std
        )[0]
        limit = self.options.max_length
        ids = state.tokenizer(caption, truncation=limit is not None, max_length=limit)["input_ids"]
        return {"pixels": pixels, "input_ids": list(ids)}

    def _score_batch(self, prepared: list[dict[str, Any]]) -> list[float]:
        import torch
        from miro_reward_common.clip_scorer import pad_ids

        ids, mask = pad_ids([p["input_ids"] for p in prepared], self.preprocessing.tokenizer.pad_token_id)
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            pixel_values=torch.stack([p["pixels"] for p in prepared]).to(device=self.device, dtype=self.dtype),
            return_dict=True,
        )
        return out.logits_per_image.float().diagonal().tolist()

    def scale(self, raw: float) -> float:
        return raw / 100.0
