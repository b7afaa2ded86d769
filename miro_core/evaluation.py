"""``miro eval``: generate (or read) images for a prompt set, score them with reward plugins, summarise.

The source is either a run folder (images are generated with :class:`~miro_core.pipeline.MiroPipeline`)
or an image folder (PNGs plus ``prompts.txt`` or ``captions.jsonl``, e.g. the output of ``miro sample``).
Every image is scored by the reward plugins asked for (by default the rewards the run was trained on, when
they load offline; see :mod:`miro_core.run_rewards`) and, when its prompt is in the shapes-world grammar,
judged by the compositional benchmark (:mod:`miro_core.compositional`). The output folder gets

    OUT/rows.parquet        one row per image: file, prompt, category, prompt_index, sample, each reward, passed
    OUT/summary.parquet     metric, category, mean, std, count (rewards per category; benchmark accuracies)
    OUT/summary.json        the same, plus best-of-N curves and timings
    OUT/summary.md          the tables in markdown
    OUT/config.json         the resolved configuration: the run's step, the strategy, guidance weight and reward
                            targets actually used, which rewards measured (and which could not), and the
                            provenance (name, version, distribution) of every component
    OUT/images/             generated images as PPP-NN.png + prompts.txt + captions.jsonl (run sources only)

Best-of-N: for each prompt, K samples are drawn once; for N = 1, 2, 4, ... up to K the image with the best
``best_by`` score among the prompt's *first N* samples is kept, and every metric is averaged over prompts.
The ``best_by`` curve never decreases (a maximum over a growing prefix).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from miro_core.compositional import (
    BENCHMARK_NAME,
    OTHER,
    benchmark_items,
    category_accuracy,
    outcomes,
    prompt_category,
    verify_all,
)
from miro_core.data.atomic import atomic_open
from miro_core.errors import ConfigError, DataError
from miro_core.run_rewards import FALLBACK_REWARDS, RewardChoice

#: The shapes-world rewards: what measures images when the run's own rewards cannot (see run_rewards).
DEFAULT_REWARDS: tuple[str, ...] = FALLBACK_REWARDS
#: The metric name of the compositional benchmark in tables and best-of-N curves.
COMPOSITIONAL = BENCHMARK_NAME

_SAMPLE_NAME = re.compile(r"^(\d+)-(\d+)\.png$")


class EvalConfig(BaseModel):
    """Every option of ``miro eval`` (written, resolved, to ``OUT/config.json``)."""

    model_config = ConfigDict(extra="forbid")

    source: str
    out: str
    #: Rewards to score with; None: the rewards the run was trained on (those that load offline).
    rewards: list[str] | None = None
    #: A prompt file (one prompt per line, or JSON lines with ``prompt`` and optional ``category``).
    prompts: str | None = None
    #: A built-in prompt set; the compositional benchmark is the default when ``prompts`` is not given.
    benchmark: Literal["compositional"] | None = None
    per_category: int = Field(8, ge=1)
    benchmark_seed: int = 0
    #: Images per prompt.
    n: int = Field(4, ge=1)
    #: Draw this many samples per prompt (at least ``n``) and report the best-of-N curve up to it.
    best_of: int | None = Field(None, ge=1)
    #: The reward that picks the best sample (default: the first of ``rewards``).
    best_by: str | None = None
    #: Guidance weight; None: the run's (or ``scale`` in ``strategy_options``; both must agree).
    guidance: float | None = Field(None, ge=0)
    #: Guidance strategy; None: ``miro`` for a run with rewards, ``cfg`` for a baseline.
    strategy: str | None = None
    strategy_options: dict[str, Any] = {}
    steps: int = Field(50, ge=1)
    sampler: str = "euler"
    reward_targets: dict[str, float] = {}
    negative_reward_targets: dict[str, float] = {}
    seed: int = 0
    #: Images per sampling call, and per reward call.
    batch_size: int = Field(64, ge=1)
    device: str = "cpu"
    weights: Literal["ema", "raw"] = "ema"
    #: Evaluate this checkpoint of the run instead of the latest.
    checkpoint_step: int | None = None
    save_images: bool = True

    @property
    def images_per_prompt(self) -> int:
        return max(self.n, self.best_of or 1)

    def selection_reward(self, measured: Sequence[str] | None = None) -> str | None:
        if self.best_of is None:
            return None
        names = list(measured) if measured is not None else list(self.rewards or [])
        return self.best_by or (names[0] if names else None)


@dataclass
class EvalImages:
    """Images with their prompts; ``prompt_index`` groups the samples of one prompt, ``sample`` orders them."""

    images: list[Any]
    prompts: list[str]
    categories: list[str]
    prompt_index: list[int]
    sample: list[int]
    files: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)


# -- prompt sets --------------------------------------------------------------------------------------------
def read_prompt_file(path: str | Path) -> tuple[list[str], list[str]]:
    """Prompts and categories from a text file (one prompt per line) or JSON lines (``prompt``, ``category``).

    A category missing from the file is the prompt's caption kind (``other`` outside the shapes grammar).
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"--prompts {path} does not exist")
    prompts: list[str] = []
    categories: list[str] = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as err:
                raise ConfigError(f"{path}:{number} is not valid JSON: {err}") from None
            text = entry.get("prompt", entry.get("caption")) if isinstance(entry, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise ConfigError(f"{path}:{number} has no 'prompt' (or 'caption') string")
            prompts.append(text.strip())
            categories.append(str(entry.get("category") or prompt_category(text)))
        else:
            prompts.append(line.strip())
            categories.append(prompt_category(line.strip()))
    if not prompts:
        raise ConfigError(f"--prompts {path} holds no prompt")
    return prompts, categories


def resolve_prompt_set(cfg: EvalConfig) -> tuple[list[str], list[str], str]:
    """The prompts, their categories and the prompt set's name for a run source."""
    if cfg.prompts is not None and cfg.benchmark is not None:
        raise ConfigError("give --prompts FILE or --benchmark NAME, not both")
    if cfg.prompts is not None:
        prompts, categories = read_prompt_file(cfg.prompts)
        return prompts, categories, str(cfg.prompts)
    prompts, categories = benchmark_items(cfg.per_category, cfg.benchmark_seed)
    return prompts, categories, BENCHMARK_NAME


# -- runs ---------------------------------------------------------------------------------------------------
def is_run_folder(path: str | Path) -> bool:
    """A run folder, or a released MIRO checkpoint in the authors' layout (both sample through MiroPipeline)."""
    from miro_core.authors_layout import is_authors_folder

    config = Path(path) / "config.json"
    if not config.exists():
        return False
    if (Path(path) / "latest.json").is_file() or (Path(path) / "checkpoints").is_dir():
        return True  # a run folder, even with a damaged config.json (loading it then says so)
    try:
        return json.loads(config.read_text()).get("format") == "miro-run" or is_authors_folder(path)
    except (json.JSONDecodeError, AttributeError):
        return False


def checkpoint_steps(run: str | Path) -> list[int]:
    """Steps of the run's complete checkpoints, ascending."""
    steps = []
    for path in (Path(run) / "checkpoints").glob("step-*"):
        if (path / "trainer_state.json").exists():
            steps.append(int(path.name.removeprefix("step-")))
    return sorted(steps)


def load_checkpoint_weights(pipe: Any, run: str | Path, step: int, weights: str = "ema") -> None:
    """Swap the weights of a loaded pipeline for those of ``RUN/checkpoints/step-N`` (EMA or raw)."""
    from miro_core.run_folder import load_model_weights

    name = "model_ema.safetensors" if weights == "ema" else "model.safetensors"
    path = Path(run) / "checkpoints" / f"step-{step:08d}" / name
    if not path.exists():
        available = ", ".join(str(s) for s in checkpoint_steps(run)) or "none"
        raise ConfigError(f"{run} has no checkpoint at step {step} ({path} is missing); checkpoints: {available}")
    load_model_weights(pipe.model, path)
    pipe.step = step


def load_pipeline(
    run: str | Path, registry: Any, *, step: int | None = None, device: str = "cpu", weights: str = "ema"
) -> Any:
    """A :class:`MiroPipeline` for the run's latest checkpoint, or for checkpoint ``step``."""
    from miro_core.pipeline import MiroPipeline

    pipe = MiroPipeline.from_pretrained(run, device=device, weights=weights, registry=registry)
    if step is not None and step != pipe.step:
        load_checkpoint_weights(pipe, run, step, weights)
    return pipe


def generate_images(
    pipe: Any,
    prompts: Sequence[str],
    n: int,
    *,
    reward_targets: Mapping[str, float] | None = None,
    negative_reward_targets: Mapping[str, float] | None = None,
    guidance: float | None = None,
    steps: int = 50,
    sampler: str = "euler",
    seed: int = 0,
    batch_size: int = 64,
    strategy: str = "miro",
    strategy_options: Mapping[str, Any] | None = None,
) -> list[Any]:
    """``n`` images per prompt, prompt-major (prompt ``i`` sample ``j`` at ``i * n + j``).

    Prompts are sampled in chunks of ``max(1, batch_size // n)``; chunk ``c`` draws its noise from a
    generator seeded by ``(seed, c)``, so the same call gives the same images whatever ran before it, and
    two models (or two reward targets) see the same noise.
    """
    import torch

    per_call = max(1, batch_size // n)
    images: list[Any] = []
    for chunk, start in enumerate(range(0, len(prompts), per_call)):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + chunk)
        images += pipe(
            list(prompts[start : start + per_call]),
            num_images_per_prompt=n,
            reward_targets=reward_targets,
            negative_reward_targets=negative_reward_targets,
            guidance_scale=guidance,
            num_inference_steps=steps,
            sampler=sampler,
            strategy=strategy,
            strategy_options=dict(strategy_options or {}),
            generator=generator,
        )
    return images


# -- image folders ------------------------------------------------------------------------------------------
def _open_rgb(path: Path) -> Any:
    """The image at ``path`` in 8-bit RGB: decoded with the framework's pixel cap and converted with its one
    conversion (16-bit and float rescaled, transparency on white); an unusable file is a DataError naming it."""
    from miro_core.data.decode import decode_image
    from miro_core.image_modes import to_rgb8

    if not path.is_file():
        raise DataError(f"{path} is not an image file")
    image, reason = decode_image(path.read_bytes())
    if image is None:
        reason = str(reason).replace(" (--max-pixels)", "")  # an annotation option; eval decodes with the default cap
        raise DataError(f"{path}: {reason}; remove or replace the file (or leave it out of captions.jsonl)")
    return to_rgb8(image)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # a leading byte-order mark (Windows editors) is not text
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8") from None


def read_image_folder(folder: str | Path) -> EvalImages:
    """PNGs and their prompts from ``captions.jsonl`` or ``prompts.txt`` (``grid.png`` is ignored).

    - ``captions.jsonl``: one JSON object per line with ``file`` (or ``image``) and ``prompt`` (or
      ``caption``), optionally ``category``, ``prompt_index`` and ``sample``.
    - ``prompts.txt`` with ``PPP-NN.png`` files (``miro sample``, ``miro eval``): image ``PPP-NN`` shows line
      ``PPP``, sample ``NN``.
    - ``prompts.txt`` with other names: one line per PNG, in sorted file-name order.
    An ``images/`` subfolder (the output folder of ``miro eval``) is used when the folder has no PNG.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is neither a run folder (config.json) nor a folder of images")
    pngs = sorted(p for p in folder.glob("*.png") if p.name != "grid.png")
    if not pngs and (folder / "images").is_dir():
        return read_image_folder(folder / "images")
    if not pngs:
        raise DataError(f"{folder} holds no PNG image (and no run: config.json is missing)")
    jsonl, txt = folder / "captions.jsonl", folder / "prompts.txt"
    entries: list[tuple[str, str, str | None, int | None, int | None]] = []
    if jsonl.exists():
        for number, line in enumerate(_read_text(jsonl).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{jsonl}:{number} is not valid JSON: {err}") from None
            name = entry.get("file", entry.get("image")) if isinstance(entry, dict) else None
            text = entry.get("prompt", entry.get("caption")) if isinstance(entry, dict) else None
            if not isinstance(name, str) or not isinstance(text, str):
                raise DataError(f"{jsonl}:{number} needs 'file' and 'prompt' strings")
            if not (folder / name).is_file():
                raise DataError(f"{jsonl}:{number} names {name}, which is not a file in {folder}")
            entries.append((name, text, entry.get("category"), entry.get("prompt_index"), entry.get("sample")))
    elif txt.exists():
        lines = [line.strip() for line in _read_text(txt).splitlines() if line.strip()]
        matches = [_SAMPLE_NAME.match(p.name) for p in pngs]
        if all(matches):
            for path, match in zip(pngs, matches):
                assert match is not None
                index, sample = int(match.group(1)), int(match.group(2))
                if index >= len(lines):
                    raise DataError(f"{path.name} refers to prompt {index}, but {txt} has {len(lines)} lines")
                entries.append((path.name, lines[index], None, index, sample))
        elif len(lines) == len(pngs):
            entries = [(p.name, text, None, None, None) for p, text in zip(pngs, lines)]
        else:
            raise DataError(
                f"{txt} has {len(lines)} prompts for {len(pngs)} images; name the images PPP-NN.png (prompt line, "
                "sample) or give one line per image, or write captions.jsonl"
            )
    else:
        raise DataError(f"{folder} has images but no captions.jsonl or prompts.txt to say what they show")
    return _assemble(folder, entries)


def _assemble(folder: Path, entries: list[tuple[str, str, str | None, int | None, int | None]]) -> EvalImages:
    by_text: dict[str, int] = {}
    counts: dict[int, int] = {}
    out = EvalImages([], [], [], [], [], [], {"source_kind": "images"})
    for name, text, category, index, sample in entries:
        if index is None:
            index = by_text.setdefault(text, len(by_text))
        if sample is None:
            sample = counts.get(index, 0)
        counts[index] = max(counts.get(index, 0), int(sample) + 1)
        out.images.append(_open_rgb(folder / name))
        out.prompts.append(text)
        out.categories.append(category or prompt_category(text))
        out.prompt_index.append(int(index))
        out.sample.append(int(sample))
        out.files.append(name)
    return out


def save_images(images: EvalImages, folder: Path) -> None:
    """Write ``PPP-NN.png``, ``prompts.txt`` and ``captions.jsonl`` (atomic writes), readable by ``miro eval``."""
    folder.mkdir(parents=True, exist_ok=True)
    for image, name in zip(images.images, images.files):
        with atomic_open(str(folder / name), "wb") as handle:
            image.save(handle, format="PNG")
    prompt_lines: dict[int, str] = {}
    for index, text in zip(images.prompt_index, images.prompts):
        prompt_lines.setdefault(index, text)
    with atomic_open(str(folder / "prompts.txt"), "w") as handle:
        handle.write("\n".join(prompt_lines[i] for i in sorted(prompt_lines)) + "\n")
    with atomic_open(str(folder / "captions.jsonl"), "w") as handle:
        for name, text, category, index, sample in zip(
            images.files, images.prompts, images.categories, images.prompt_index, images.sample
        ):
            record = {"file": name, "prompt": text, "category": category, "prompt_index": index, "sample": sample}
            handle.write(json.dumps(record) + "\n")


# -- scoring ------------------------------------------------------------------------------------------------
def _score_all(
    reward: Any, name: str, images: Sequence[Any], captions: Sequence[str], batch_size: int,
    warn: Callable[[str], None] | None = None,
) -> np.ndarray:
    """One reward's scores; it sees read-only views of the images, so it cannot change what the next reward
    (or the compositional judge) sees, and trying is reported through ``warn``."""
    from miro_core.reward_contract import finite_scores, read_only_views, was_modified

    values: list[float] = []
    modified = False
    for start in range(0, len(images), batch_size):
        batch_images = read_only_views(images[start : start + batch_size])
        batch_captions = list(captions[start : start + batch_size])
        result = reward.score(batch_images, batch_captions)
        modified = modified or was_modified(batch_images)
        values += finite_scores(result, len(batch_images), f"reward {name!r}",
                                "Nothing was written; miro_core.conformance.check_reward shows the problem")
    if modified and warn is not None:
        warn(f"reward {name} modified the images it was given; it got read-only views, so no other reward saw "
             "the change, but rewards must not modify their inputs")
    return np.asarray(values, dtype=np.float64)


def score_rewards(
    registry: Any, names: Sequence[str], images: Sequence[Any], captions: Sequence[str], batch_size: int = 256,
    device: str = "cpu", options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, np.ndarray]:
    """Each reward's score for every (image, caption) pair (NaN where the reward cannot score, or returned a
    value that is not a finite number)."""
    scores: dict[str, np.ndarray] = {}
    for name in names:
        reward = registry.rewards.create(name, dict((options or {}).get(name) or {}))
        reward.load(device)
        try:
            scores[name] = _score_all(reward, name, images, captions, batch_size)
        finally:
            reward.unload()
    return scores


def score_choice(
    registry: Any, choice: RewardChoice, images: Sequence[Any], captions: Sequence[str], batch_size: int = 256,
    device: str = "cpu", warn: Callable[[str], None] | None = None,
) -> dict[str, np.ndarray]:
    """Score with the rewards of ``choice`` that load; the others go to ``choice.unavailable`` with the reason.

    Requested rewards must load (an error otherwise). One reward is loaded at a time.
    """
    from miro_core import provenance
    from miro_core.run_rewards import load_reward

    scores: dict[str, np.ndarray] = {}
    choice.provenance = {}
    for name in choice.names:
        if choice.origin == "requested":
            reward = registry.rewards.create(name, dict(choice.options.get(name) or {}))
            reward.load(device)
        else:
            reward, why = load_reward(registry, name, choice.options.get(name), device, choice.sources.get(name))
            if reward is None:
                choice.unavailable[name] = why or "cannot load"
                continue
        choice.provenance[name] = {
            **(provenance.of_instance(registry, "rewards", reward) or provenance.component(registry, "rewards", name)),
            "options": reward.options.model_dump(mode="json"),  # the resolved options that measured the images
        }
        try:
            scores[name] = _score_all(reward, name, images, captions, batch_size, warn)
        finally:
            reward.unload()
    return scores


# -- best-of-N ----------------------------------------------------------------------------------------------
def best_of_n_sizes(k: int) -> list[int]:
    """1, 2, 4, ... below ``k``, then ``k``."""
    if k < 1:
        raise ValueError("best-of-N needs at least one sample")
    sizes, n = [], 1
    while n < k:
        sizes.append(n)
        n *= 2
    return sizes + [k]


def best_of_n_curve(select: Any, values: Any, sizes: Sequence[int] | None = None) -> list[float]:
    """Mean over prompts of ``values`` at the sample that maximises ``select`` among the first N samples.

    ``select`` and ``values`` are ``(prompts, K)`` arrays; NaN in ``select`` never wins (ties go to the
    earliest sample). With ``values = select`` the curve is non-decreasing.
    """
    select = np.asarray(select, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if select.ndim != 2 or select.shape != values.shape:
        raise ValueError(f"select {select.shape} and values {values.shape} must be the same (prompts, K) shape")
    sizes = list(sizes) if sizes is not None else best_of_n_sizes(select.shape[1])
    key = np.where(np.isnan(select), -np.inf, select)
    rows = np.arange(select.shape[0])
    curve = []
    for n in sizes:
        if not 1 <= n <= select.shape[1]:
            raise ValueError(f"N = {n} is outside 1..{select.shape[1]}")
        chosen = values[rows, np.argmax(key[:, :n], axis=1)]
        finite = chosen[np.isfinite(chosen)]
        curve.append(float(finite.mean()) if finite.size else float("nan"))
    return curve


def samples_matrix(values: Sequence[float], prompt_index: Sequence[int], sample: Sequence[int], k: int) -> np.ndarray:
    """``(prompts, k)``: each prompt's first ``k`` samples (by sample number), prompts in first-seen order."""
    groups: dict[int, list[tuple[int, float]]] = {}
    for value, index, number in zip(values, prompt_index, sample):
        groups.setdefault(int(index), []).append((int(number), float(value)))
    matrix = np.empty((len(groups), k), dtype=np.float64)
    for row, (index, items) in enumerate(groups.items()):
        if len(items) < k:
            raise ConfigError(f"best-of-{k} needs {k} samples of every prompt; prompt {index} has {len(items)}")
        matrix[row] = [v for _, v in sorted(items)[:k]]
    return matrix


def best_of_n_report(
    metrics: Mapping[str, Sequence[float]], images: EvalImages, k: int, best_by: str
) -> dict[str, Any]:
    """Curves of every metric when the sample is picked by ``best_by``, for N = 1, 2, 4, ... k."""
    if best_by not in metrics:
        raise ConfigError(f"--best-by {best_by} is not a scored reward ({', '.join(metrics)})")
    sizes = best_of_n_sizes(k)
    select = samples_matrix(metrics[best_by], images.prompt_index, images.sample, k)
    curves = {
        name: best_of_n_curve(select, samples_matrix(values, images.prompt_index, images.sample, k), sizes)
        for name, values in metrics.items()
    }
    return {"best_by": best_by, "sizes": sizes, "prompts": int(select.shape[0]), "curves": curves}


# -- summaries ----------------------------------------------------------------------------------------------
def _stats(values: np.ndarray) -> dict[str, float]:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return {"mean": float("nan"), "std": float("nan"), "count": 0}
    return {"mean": float(finite.mean()), "std": float(finite.std()), "count": int(finite.size)}


def summarise(
    images: EvalImages, scores: Mapping[str, np.ndarray], passed: Sequence[bool | None]
) -> dict[str, Any]:
    """Mean, std and count of every reward (overall and per category) and the benchmark's accuracies."""
    categories = np.asarray(images.categories, dtype=object)
    order = category_order(images.categories)
    rewards: dict[str, Any] = {}
    for name, values in scores.items():
        entry = _stats(values)
        entry["categories"] = {c: _stats(values[categories == c]) for c in order}
        rewards[name] = entry
    judged = [p for p in passed if p is not None]
    return {
        "images": len(images),
        "prompts": len(set(images.prompt_index)),
        "rewards": rewards,
        COMPOSITIONAL: category_accuracy(passed, images.categories) if judged else None,
    }


def category_order(categories: Sequence[str]) -> list[str]:
    from miro_core.shapes.captions import KINDS

    present = set(categories)
    return [k for k in KINDS if k in present] + sorted(present - set(KINDS) - {OTHER}) + (
        [OTHER] if OTHER in present else []
    )


def summary_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The summary as flat rows: metric, category (``all`` / a kind / ``overall``), mean, std, count."""
    rows: list[dict[str, Any]] = []
    for name, entry in summary["rewards"].items():
        rows.append({"metric": name, "category": "all", **{k: entry[k] for k in ("mean", "std", "count")}})
        for category, stats in entry["categories"].items():
            rows.append({"metric": name, "category": category, **stats})
    bench = summary.get(COMPOSITIONAL)
    if bench:
        for category, stats in bench["categories"].items():
            p = stats["accuracy"]
            rows.append({"metric": COMPOSITIONAL, "category": category, "mean": p,
                         "std": math.sqrt(p * (1 - p)), "count": stats["images"]})
        rows.append({"metric": COMPOSITIONAL, "category": "overall", "mean": bench["overall"], "std": float("nan"),
                     "count": bench["images"]})
    return rows


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def render_markdown(summary: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """``summary.md``: rewards per category, the compositional benchmark, best-of-N."""
    lines = ["# Evaluation", ""]
    source = config.get("source_kind", "run")
    described = f"run `{config['source']}` at step {config.get('step')}" if source == "run" else (
        f"image folder `{config['source']}`"
    )
    lines.append(f"{summary['images']} images of {summary['prompts']} prompts from {described}; prompt set: "
                 f"{config.get('prompt_set', '-')}.")
    if source == "run":
        lines.append(f"Sampling: {config['steps']} {config['sampler']} steps, strategy {config.get('strategy_used')}, "
                     f"guidance w = {config['guidance_used']}, "
                     f"reward targets {config.get('reward_targets_used') or '-'}, "
                     f"negative targets {config.get('negative_reward_targets_used') or '-'}, seed {config['seed']}.")
    choice = summary.get("reward_choice")
    if choice:
        origin = {"requested": "requested rewards", "run": "the run's own rewards",
                  "fallback": "the shapes-world rewards (fallback)"}.get(choice["origin"], choice["origin"])
        lines.append(f"Measured with {origin}: {', '.join(choice['measured']) or 'none'}.")
        for name, why in choice.get("unavailable", {}).items():
            lines.append(f"Not measured: {name} ({why}).")
        if choice.get("note"):
            lines.append(f"Note: {choice['note']}.")
    lines.append("")
    rewards = summary["rewards"]
    if rewards:
        categories = list(next(iter(rewards.values()))["categories"])
        lines += ["## Rewards (mean; std over images)", ""]
        lines.append("| reward | mean | std | images | " + " | ".join(categories) + " |")
        lines.append("|---" * (4 + len(categories)) + "|")
        for name, entry in rewards.items():
            cells = [_fmt(entry["categories"][c]["mean"]) for c in categories]
            lines.append(f"| {name} | {_fmt(entry['mean'])} | {_fmt(entry['std'])} | {entry['count']} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    bench = summary.get(COMPOSITIONAL)
    if bench:
        lines += ["## Compositional benchmark (all claims hold, per image)", "",
                  "| category | accuracy | ± s.e. | passed / images |", "|---|---|---|---|"]
        for category, stats in bench["categories"].items():
            lines.append(f"| {category} | {stats['accuracy']:.3f} | {stats['stderr']:.3f} | "
                         f"{stats['passed']} / {stats['images']} |")
        lines += [f"| **overall** (mean of categories) | **{_fmt(bench['overall'], 3)}** | | {bench['images']} |", ""]
    recognition = summary.get("recognised_shapes")
    if recognition and recognition["share"] is not None:
        lines += [f"Recognisable shapes: {recognition['recognised']} of {recognition['objects']} detected objects "
                  f"({100 * recognition['share']:.1f}%) fit a circle, square or triangle.", ""]
    best = summary.get("best_of_n")
    if best:
        names = list(best["curves"])
        lines += [f"## Best-of-N (best by {best['best_by']}, {best['prompts']} prompts)", "",
                  "| N | " + " | ".join(names) + " |", "|---" * (1 + len(names)) + "|"]
        for i, size in enumerate(best["sizes"]):
            lines.append(f"| {size} | " + " | ".join(_fmt(best["curves"][m][i]) for m in names) + " |")
        lines.append("")
    seconds = summary.get("seconds")
    if seconds:
        lines += ["| stage | seconds |", "|---|---|"] + [f"| {k} | {v:.1f} |" for k, v in seconds.items()] + [""]
    return "\n".join(lines)


def _write_parquet(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({c: [row.get(c) for row in rows] for c in columns})
    with atomic_open(str(path), "wb") as handle:
        pq.write_table(table, handle)


def _write_text(path: Path, text: str) -> None:
    with atomic_open(str(path), "w") as handle:
        handle.write(text)


def _json_safe(value: Any) -> Any:
    """NaN and infinities as null, so the JSON is strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: Path, payload: Any) -> None:
    _write_text(path, json.dumps(_json_safe(payload), indent=2) + "\n")


# -- the command --------------------------------------------------------------------------------------------
def _check(cfg: EvalConfig, run_source: bool) -> None:
    if cfg.best_of is not None:
        if cfg.rewards is not None:
            best_by = cfg.selection_reward()
            if best_by is None:
                raise ConfigError("--best-of needs a reward to pick by: give --rewards or --best-by")
            if best_by not in cfg.rewards:
                raise ConfigError(f"--best-by {best_by} must be one of the scored rewards ({', '.join(cfg.rewards)})")
    elif cfg.best_by is not None:
        raise ConfigError("--best-by needs --best-of K")
    if not run_source:
        given = [name for name, value in (("--prompts", cfg.prompts), ("--benchmark", cfg.benchmark),
                                          ("--reward", cfg.reward_targets),
                                          ("--negative-reward", cfg.negative_reward_targets),
                                          ("--step", cfg.checkpoint_step), ("--guidance", cfg.guidance is not None),
                                          ("--strategy", cfg.strategy),
                                          ("--strategy-option", cfg.strategy_options)) if value]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply when evaluating a run; {cfg.source} is an image folder "
                              "(its prompts come from prompts.txt / captions.jsonl)")


def _reward_choice(cfg: EvalConfig, registry: Any, run_config: Any) -> RewardChoice:
    """The rewards to measure with: the requested ones, else the run's own (see run_rewards).

    ``--best-by`` is checked against the planned rewards here, before any image is generated or read.
    """
    from miro_core.run_rewards import run_rewards

    if cfg.rewards is not None:
        for name in cfg.rewards:
            registry.rewards.get(name)  # an unknown (or ambiguous) reward fails before any image is generated
        return RewardChoice(list(cfg.rewards), origin="requested")
    choice = run_rewards(run_config)
    if cfg.best_of is not None and cfg.best_by is not None and choice.names and cfg.best_by not in choice.names:
        raise ConfigError(
            f"--best-by {cfg.best_by} is not one of the run's rewards ({', '.join(choice.names)}); "
            "pick one of them or give --rewards"
        )
    return choice


def _prepare_output(out: Path) -> None:
    """Create the output folder and prove it writable before generating or scoring anything."""
    import tempfile

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=out):
        pass


def run_eval(cfg: EvalConfig, registry: Any, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Generate or read the images, score and judge them, write every output; returns the summary."""
    from miro_core import provenance
    from miro_core.run_rewards import fallback, folder_run_config

    run_source = is_run_folder(cfg.source)
    _check(cfg, run_source)
    out = Path(cfg.out)
    seconds: dict[str, float] = {}
    resolved: dict[str, Any] = {**cfg.model_dump(mode="json"), "source_kind": "run" if run_source else "images"}
    components: dict[str, Any] = {}
    t0 = time.perf_counter()
    if run_source:
        from miro_core.sampling_settings import resolve_settings

        pipe = load_pipeline(cfg.source, registry, step=cfg.checkpoint_step, device=cfg.device, weights=cfg.weights)
        choice = _reward_choice(cfg, registry, pipe.config)
        strategy = cfg.strategy or ("miro" if pipe.reward_keys else "cfg")
        registry.samplers.get(cfg.sampler)
        settings = resolve_settings(
            pipe, strategy=strategy, strategy_options=cfg.strategy_options, guidance=cfg.guidance,
            reward_targets=cfg.reward_targets, negative_reward_targets=cfg.negative_reward_targets, steps=cfg.steps,
        )
        prompts, categories, prompt_set = resolve_prompt_set(cfg)
        _prepare_output(out)
        k = cfg.images_per_prompt
        log(f"sampling {len(prompts)} prompts x {k} images from {cfg.source} (step {pipe.step}); strategy "
            f"{strategy}, guidance w = {settings.guidance_scale:g}")
        images = generate_images(
            pipe, prompts, k, reward_targets=cfg.reward_targets, negative_reward_targets=cfg.negative_reward_targets,
            guidance=settings.guidance_scale, steps=cfg.steps, sampler=cfg.sampler, seed=cfg.seed,
            batch_size=cfg.batch_size, strategy=strategy, strategy_options=settings.strategy_options,
        )
        data = EvalImages(
            images,
            [p for p in prompts for _ in range(k)],
            [c for c in categories for _ in range(k)],
            [i for i in range(len(prompts)) for _ in range(k)],
            [j for _ in prompts for j in range(k)],
            [f"{i:03d}-{j:02d}.png" for i in range(len(prompts)) for j in range(k)],
            {"source_kind": "run"},
        )
        resolved.update(step=pipe.step, prompt_set=prompt_set, guidance_used=settings.guidance_scale,
                        strategy_used=strategy, strategy_options_used=settings.strategy_options,
                        reward_keys=pipe.reward_keys, reward_targets_used=settings.reward_targets,
                        negative_reward_targets_used=settings.negative_reward_targets, images_per_prompt=k)
        components.update(provenance.pipeline_components(pipe, strategy=strategy, sampler=cfg.sampler))
        seconds["generate"] = time.perf_counter() - t0
        if cfg.save_images:
            save_images(data, out / "images")
    else:
        choice = _reward_choice(cfg, registry, folder_run_config(cfg.source))
        data = read_image_folder(cfg.source)
        _prepare_output(out)
        resolved.update(prompt_set=f"{cfg.source} (prompts.txt / captions.jsonl)")
        seconds["read"] = time.perf_counter() - t0
        log(f"read {len(data)} images of {len(set(data.prompt_index))} prompts from {cfg.source}")
    t0 = time.perf_counter()
    batch = max(cfg.batch_size, 64)
    def warn(message: str) -> None:
        log(f"warning: {message}")

    scores = score_choice(registry, choice, data.images, data.prompts, batch_size=batch, device=cfg.device,
                          warn=warn)
    if not scores and choice.origin == "run":
        choice = fallback(choice, registry)
        scores = score_choice(registry, choice, data.images, data.prompts, batch_size=batch, device=cfg.device,
                              warn=warn)
    log(choice.describe(list(scores)))
    seconds["score"] = time.perf_counter() - t0
    resolved["rewards"] = list(scores)
    resolved["reward_choice"] = choice.as_json(list(scores))
    components["rewards"] = {name: choice.provenance[name] for name in scores}
    resolved["components"] = components
    t0 = time.perf_counter()
    verifications = verify_all(data.images, data.prompts)
    passed = outcomes(verifications)
    seconds[COMPOSITIONAL] = time.perf_counter() - t0
    summary = summarise(data, scores, passed)
    summary["reward_choice"] = resolved["reward_choice"]
    if summary[COMPOSITIONAL] is not None:
        # shapes-world prompts: also how many drawn objects fit a known shape (drawing quality, caption-free),
        # from the detections the verifier already made
        from miro_core.shapes.recognition import count_recognised

        summary["recognised_shapes"] = count_recognised(v.detections for v in verifications if v is not None).as_json()
    if cfg.best_of is not None:
        best_by = cfg.selection_reward(list(scores))
        if best_by is None:
            raise ConfigError("--best-of needs a reward to pick by, but no reward could measure the images: "
                              f"{choice.describe([])}")
        metrics: dict[str, Sequence[float]] = {name: list(values) for name, values in scores.items()}
        if any(p is not None for p in passed):
            metrics[COMPOSITIONAL] = [float("nan") if p is None else float(p) for p in passed]
        summary["best_of_n"] = best_of_n_report(metrics, data, cfg.best_of, best_by)
        resolved["best_by_used"] = best_by
    summary["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    write_outputs(out, data, scores, passed, summary, resolved)
    return summary


def write_outputs(
    out: Path,
    data: EvalImages,
    scores: Mapping[str, np.ndarray],
    passed: Sequence[bool | None],
    summary: Mapping[str, Any],
    resolved: Mapping[str, Any],
) -> None:
    """rows.parquet, summary.parquet / .json / .md and config.json, each written atomically."""
    from miro_core import __version__

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(len(data)):
        row = {"file": data.files[i], "prompt": data.prompts[i], "category": data.categories[i],
               "prompt_index": data.prompt_index[i], "sample": data.sample[i], "passed": passed[i]}
        row.update({name: float(values[i]) for name, values in scores.items()})
        rows.append(row)
    columns = ["file", "prompt", "category", "prompt_index", "sample", *scores, "passed"]
    _write_parquet(out / "rows.parquet", rows, columns)
    _write_parquet(out / "summary.parquet", summary_rows(summary), ["metric", "category", "mean", "std", "count"])
    write_json(out / "summary.json", summary)
    write_json(out / "config.json", {"format": "miro-eval", "miro_version": __version__, **resolved})
    _write_text(out / "summary.md", render_markdown(summary, resolved))
