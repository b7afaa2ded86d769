"""What the web UI (``miro serve``) does, without gradio: checks, slider mapping, sampling, scoring, grids.

The page (``miro_core/webui.py``) only lays out widgets and forwards their values here, so every rule a
request must follow is testable without a browser:

- :func:`check_run_folder` says what to do when the run folder is missing or unfinished;
- :meth:`ServeSession.validate` turns raw widget values into a :class:`SampleRequest`, or raises
  :class:`RequestError` with a message for the page;
- :func:`snap_level` maps a slider value to the nearest level the model saw in training;
- :class:`Scorer` measures every generated image with the rewards the run was trained on (those that load
  offline; the shapes-world rewards as a stated fallback), see :mod:`miro_core.run_rewards`;
- :meth:`ServeSession.generate` samples one or two settings from the same seed under a lock.
"""

from __future__ import annotations

import logging
import math
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from miro_core.errors import ConfigError, MiroError

log = logging.getLogger(__name__)

#: What ``make demo`` trains, and what ``miro serve`` opens without an argument.
DEFAULT_RUN = Path("runs/demo/run")
#: Rewards that need no weights and no network: the shapes world's (the fallback scorers).
OFFLINE_REWARDS = ("shapes-alignment", "shapes-aesthetic", "shapes-sharpness")

MAX_PROMPT_CHARS = 300
MAX_IMAGES = 8
MAX_STEPS = 200
MAX_GUIDANCE = 20.0
MAX_SEED = 2**31 - 1
#: Tolerance for slider values that overshoot [0, 1] by float rounding of the slider step.
EDGE_TOLERANCE = 1e-6
#: Setting names in side-by-side mode.
SETTING_NAMES = ("A", "B")


class RequestError(MiroError):
    """A request the page must refuse, with a message that says what to change."""


# -- the run folder -------------------------------------------------------------------------------------


def check_run_folder(run: str | Path, default: Path = DEFAULT_RUN) -> Path:
    """Return ``run`` if it holds a trained run, else raise ConfigError saying what to do."""
    path = Path(run)
    hint = (
        "run `make demo` first (it trains the demo run into runs/demo/run), or pass a run folder: "
        "`miro serve RUN`"
    )
    if not path.exists():
        if path == default:
            raise ConfigError(f"no trained run at {path}: {hint}")
        raise ConfigError(f"run folder {path} does not exist; {hint}")
    if not path.is_dir():
        raise ConfigError(f"{path} is a file, not a run folder; {hint}")
    if not (path / "config.json").exists():
        raise ConfigError(f"{path} is not a miro run folder (no config.json); {hint}")
    from miro_core.authors_layout import is_authors_folder

    if is_authors_folder(path):  # a released MIRO checkpoint: MiroPipeline loads it as it is
        return path
    if not (path / "latest.json").exists():
        raise ConfigError(f"{path} has no checkpoint yet (no latest.json); wait for `miro train` to save one")
    return path


# -- slider values -> reward targets --------------------------------------------------------------------


def level_step(num_bins: int | None) -> float:
    """Distance between neighbouring levels: ``1 / (num_bins - 1)`` (a run without bins has levels 0 and 1)."""
    bins = num_bins or 2
    return 1.0 / (bins - 1)


def slider_step(num_bins: int | None) -> float:
    """The step to give a browser range input so that its last notch is level 1.

    Browsers snap a range input to multiples of the step written in decimal, dropping any that pass the
    maximum. For 64 bins ``repr(1 / 63) * 63`` stays below 1 and the exact step works; for 16 bins
    ``repr(1 / 15) * 15`` is 1.00000000000000005, the slider would stop at 14/15, and a step rounded
    down at 1e-9 is used instead (its last notch, 0.999999999..., snaps to level 1 in :func:`snap_level`).
    """
    step = level_step(num_bins)
    if Decimal(repr(step)) * ((num_bins or 2) - 1) <= 1:
        return step
    return math.floor(step * 1e9) / 1e9


def snap_level(value: float, num_bins: int | None) -> float:
    """The training level nearest to ``value`` (levels are ``i / (num_bins - 1)``)."""
    bins = num_bins or 2
    return math.floor(float(value) * (bins - 1) + 0.5) / (bins - 1)


def _finite_number(value: Any, what: str) -> float:
    if value is None or isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
        raise RequestError(f"{what} is empty; give a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RequestError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise RequestError(f"{what} must be a finite number, got {value!r}")
    return number


def _integer(value: Any, what: str, low: int, high: int) -> int:
    number = _finite_number(value, what)
    if number != int(number):
        raise RequestError(f"{what} must be a whole number, got {value!r}")
    if not low <= number <= high:
        raise RequestError(f"{what} must be between {low} and {high}, got {int(number)}")
    return int(number)


def reward_level(value: Any, what: str, num_bins: int | None) -> float:
    """A slider value checked to lie in [0, 1] and snapped to the run's level grid."""
    number = _finite_number(value, what)
    if not -EDGE_TOLERANCE <= number <= 1.0 + EDGE_TOLERANCE:
        raise RequestError(f"{what} must be between 0 and 1, got {number:g}")
    return snap_level(min(max(number, 0.0), 1.0), num_bins)


@dataclass(frozen=True)
class Setting:
    """Positive (``s+``) and negative (``s-``) reward targets of one sampling setting."""

    targets: dict[str, float]
    negative_targets: dict[str, float]

    def describe(self, key: str) -> str:
        return f"{self.targets[key]:.2f} / {self.negative_targets[key]:.2f}"


def slider_labels(reward_keys: Sequence[str], settings: int = 2) -> list[tuple[str, str, str]]:
    """The order of the page's reward sliders: ``(setting, key, "target" | "negative")`` per slider."""
    return [
        (name, key, kind) for name in SETTING_NAMES[:settings] for key in reward_keys for kind in ("target", "negative")
    ]


def settings_from_sliders(
    reward_keys: Sequence[str], values: Sequence[Any], num_bins: int | None, compare: bool
) -> tuple[Setting, ...]:
    """Map the flat slider values (in :func:`slider_labels` order) to one setting, or two when comparing."""
    expected = len(slider_labels(reward_keys))
    if len(values) != expected:
        raise RequestError(f"expected {expected} reward slider values, got {len(values)}; reload the page")
    settings = []
    compare = compare and bool(reward_keys)  # with no rewards, two settings would be the same one
    for index, name in enumerate(SETTING_NAMES[: 2 if compare else 1]):
        chunk = values[index * 2 * len(reward_keys) : (index + 1) * 2 * len(reward_keys)]
        targets, negatives = {}, {}
        for i, key in enumerate(reward_keys):
            targets[key] = reward_level(chunk[2 * i], f"setting {name}: {key} target", num_bins)
            negatives[key] = reward_level(chunk[2 * i + 1], f"setting {name}: {key} negative target", num_bins)
        settings.append(Setting(targets, negatives))
    return tuple(settings)


def parse_strategy_options(text: str | None) -> dict[str, Any]:
    """``"target=shapes-aesthetic, schedule=linear"`` -> a dict; values are read as YAML scalars."""
    import yaml

    options: dict[str, Any] = {}
    for item in (text or "").replace("\n", ",").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RequestError(f"strategy options must be KEY=VALUE pairs separated by commas, got {item.strip()!r}")
        try:
            parsed = yaml.safe_load(value.strip())
        except yaml.YAMLError:
            raise RequestError(f"strategy option {key.strip()}: cannot read the value {value.strip()!r}") from None
        if isinstance(parsed, float) and not math.isfinite(parsed):
            raise RequestError(f"strategy option {key.strip()}={value.strip()}: must be a finite number")
        options[key.strip()] = parsed
    return options


# -- requests ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleRequest:
    """A validated request: one setting, or two (side by side, same seed)."""

    prompt: str
    num_images: int
    steps: int
    sampler: str
    guidance_scale: float
    strategy: str
    strategy_options: dict[str, Any]
    seed: int
    settings: tuple[Setting, ...]

    @property
    def compare(self) -> bool:
        return len(self.settings) > 1


@dataclass
class Generation:
    """Images and measured scores of each setting, plus the grid PNG."""

    request: SampleRequest
    images: list[list[Any]]
    scores: list[list[dict[str, float]]]
    grid_path: Path
    seconds: float

    def gallery(self, setting: int) -> list[tuple[Any, str]]:
        """``(image upscaled for display, caption with its measured scores)`` for one setting."""
        return [
            (display_image(image), caption_for(scores))
            for image, scores in zip(self.images[setting], self.scores[setting])
        ]

    def mean_scores(self, setting: int) -> dict[str, float]:
        per_image = self.scores[setting]
        keys = per_image[0].keys() if per_image else []
        return {key: _mean([s[key] for s in per_image]) for key in keys}

    def status(self) -> str:
        r = self.request
        total = sum(len(images) for images in self.images)
        mode = "settings A and B from the same seed" if r.compare else "one setting"
        return (
            f"Generated {total} images ({mode}) in {self.seconds:.1f} s: seed {r.seed}, {r.steps} steps, "
            f"{r.sampler}, strategy {r.strategy}, guidance w = {r.guidance_scale:g}."
        )


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def short_reward_name(name: str) -> str:
    return name.removeprefix("shapes-")


def caption_for(scores: Mapping[str, float]) -> str:
    """``"aesthetic 0.41 · sharpness 0.30"``: what each gallery image shows under it."""
    if not scores:
        return "no reward could measure this image"
    return " · ".join(
        f"{short_reward_name(k)} {v:.2f}" if math.isfinite(v) else f"{short_reward_name(k)} n/a"
        for k, v in scores.items()
    )


def display_image(image: Any, min_size: int = 256) -> Any:
    """Upscale small images (nearest neighbour) so the browser does not blur 32x32 pixels."""
    from PIL import Image

    factor = max(1, -(-min_size // max(image.size)))
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def scores_markdown(generation: Generation, reward_keys: Sequence[str], scorer_names: Sequence[str]) -> str:
    """A table of what each setting asked for and what the reward scorers measured (mean over images)."""
    settings = generation.request.settings
    names = [SETTING_NAMES[i] for i in range(len(settings))] if len(settings) > 1 else [""]
    header = ["reward"]
    for name in names:
        suffix = f" {name}" if name else ""
        header += [f"asked{suffix}", f"measured{suffix}"]
    if len(settings) > 1:
        header.append("B - A")
    rows = []
    for key in list(dict.fromkeys([*reward_keys, *scorer_names])):
        row = [key]
        means = []
        for i, setting in enumerate(settings):
            row.append(setting.describe(key) if key in setting.targets else "not a run reward")
            if key in scorer_names:
                value = generation.mean_scores(i)[key]
                means.append(value)
                row.append(f"{value:.3f}")
            else:
                means.append(float("nan"))
                row.append("not measured")
        if len(settings) > 1:
            row.append(f"{means[1] - means[0]:+.3f}" if all(math.isfinite(m) for m in means) else "")
        rows.append(row)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    n = generation.request.num_images
    lines.append(
        f"\nAsked: target s+ / negative target s-. Measured: the mean score of the {n} image"
        f"{'s' if n > 1 else ''} of {'each setting' if len(settings) > 1 else 'the setting'}."
    )
    return "\n".join(lines)


# -- scoring ----------------------------------------------------------------------------------------------


class Scorer:
    """The rewards that measure the page's images, loaded once: the run's own when they load offline.

    ``names`` given: exactly those (each that loads). Otherwise the run's reward keys, created with the
    options they were annotated with; when none of them loads (or the run has none) the installed
    shapes-world rewards, and :meth:`describe` says so and names every reward that could not load.
    """

    def __init__(
        self,
        registry: Any,
        names: Sequence[str] | None = None,
        device: str = "cpu",
        *,
        run_config: Mapping[str, Any] | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        from miro_core.run_rewards import RewardChoice, fallback, run_rewards

        if names is not None:
            choice = RewardChoice(list(names), {k: dict(v) for k, v in (options or {}).items()}, origin="requested")
        else:
            choice = run_rewards(run_config)
        self.registry = registry
        self.rewards: dict[str, Any] = {}
        self.unavailable = choice.unavailable
        self._load(choice, device)
        if not self.rewards and choice.origin == "run":
            choice = fallback(choice, registry)
            self.unavailable = choice.unavailable
            self._load(choice, device)
        self.choice = choice

    def _load(self, choice: Any, device: str) -> None:
        from miro_core.run_rewards import load_reward

        for name in choice.names:
            reward, why = load_reward(self.registry, name, choice.options.get(name), device, choice.sources.get(name))
            if reward is None:
                choice.unavailable[name] = why or "cannot load"
            else:
                self.rewards[name] = reward

    @property
    def names(self) -> list[str]:
        return list(self.rewards)

    def provenance(self) -> dict[str, Any]:
        from miro_core import provenance

        return provenance.rewards(self.registry, self.rewards)

    def score(self, images: Sequence[Any], prompt: str) -> list[dict[str, float]]:
        """One ``{reward: score}`` per image; the prompt is every image's caption (alignment needs it).

        A reward that fails, or returns something other than one finite number per image, gives NaN for the
        batch (logged on the server's console); the page shows "n/a".
        """
        from miro_core.reward_contract import finite_scores, read_only_views, was_modified

        per_image: list[dict[str, float]] = [{} for _ in images]
        captions = [prompt] * len(images)
        for name, reward in self.rewards.items():
            try:
                views = read_only_views(images)  # a reward cannot change what the next one (or the grid) sees
                result = reward.score(views, captions)
                if was_modified(views):
                    log.warning("reward %s modified the images it was given (it got read-only views)", name)
                values = finite_scores(result, len(images), f"reward {name!r}", "Its scores are left out")
            except Exception:
                log.exception("reward %s failed to score", name)
                values = [float("nan")] * len(images)
            for scores, value in zip(per_image, values):
                scores[name] = value
        return per_image

    def describe(self) -> str:
        origin = getattr(self.choice, "origin", "requested")
        if not self.rewards:
            text = "No reward plugin could be loaded to measure the images, so they are shown without scores."
        elif origin == "run":
            text = "Each image shows its scores measured by the run's own rewards: " + ", ".join(
                f"`{n}`" for n in self.rewards) + "."
        elif origin == "fallback":
            text = (
                f"Each image shows its scores measured by the shapes-world rewards instead ({self.choice.note}): "
                + ", ".join(f"`{n}`" for n in self.rewards) + "."
            )
        else:
            text = "Each image shows its scores measured by " + ", ".join(f"`{n}`" for n in self.rewards) + "."
        if self.unavailable:
            text += " Not measured: " + "; ".join(f"`{n}` ({why})" for n, why in self.unavailable.items()) + "."
        return text


# -- the session ------------------------------------------------------------------------------------------


@dataclass
class ServeSession:
    """A loaded pipeline and scorer behind the page; sampling runs one request at a time."""

    pipe: Any
    scorer: Scorer
    output_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="miro-serve-")))
    keep_grids: int = 64

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.output_dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def open(cls, run: str | Path, registry: Any = None, device: str = "cpu", weights: str = "ema") -> ServeSession:
        from miro_core.pipeline import MiroPipeline

        if registry is None:
            from miro_core.plugins import get_registry

            registry = get_registry()
        path = check_run_folder(run)
        pipe = MiroPipeline.from_pretrained(path, device=device, weights=weights, registry=registry)
        return cls(pipe, Scorer(registry, device=device, run_config=pipe.config))

    # -- facts for the page --------------------------------------------------------------------------
    @property
    def reward_keys(self) -> list[str]:
        return self.pipe.reward_keys

    @property
    def num_bins(self) -> int | None:
        return self.pipe.num_bins

    @property
    def samplers(self) -> list[str]:
        return self.pipe.registry.samplers.names()

    @property
    def strategies(self) -> list[str]:
        return self.pipe.registry.guidance.names()

    @property
    def default_strategy(self) -> str:
        return "miro" if self.reward_keys else "cfg"

    @property
    def default_guidance(self) -> float:
        return float(self.pipe.config.get("guidance_scale", 7.0))

    def describe_run(self) -> str:
        """The page's header: which run, which rewards and levels, what is measured."""
        pipe = self.pipe
        where = f"Run `{getattr(pipe, 'run_dir', '?')}`, step {getattr(pipe, 'step', '?')}, {pipe.image_size}x"
        where += f"{pipe.image_size} images."
        if self.reward_keys:
            levels = len(pipe.level_grid())
            rewards = (
                f" Trained on {len(self.reward_keys)} rewards: "
                + ", ".join(f"`{k}`" for k in self.reward_keys)
                + f". Sliders snap to the {levels} levels seen in training (steps of 1/{levels - 1})."
            )
        else:
            rewards = (
                " **This run was trained without rewards (a baseline): there are no reward sliders**, and"
                " guidance is plain text classifier-free guidance."
            )
        return where + rewards + " " + self.scorer.describe()

    # -- requests -------------------------------------------------------------------------------------
    def validate(
        self,
        prompt: Any,
        num_images: Any,
        steps: Any,
        sampler: Any,
        guidance_scale: Any,
        strategy: Any,
        strategy_options: Any,
        seed: Any,
        compare: Any,
        slider_values: Sequence[Any],
    ) -> SampleRequest:
        """Check every widget value; raise RequestError with a message for the page."""
        from miro_core.guidance_contract import checked_weights

        text = (prompt or "").strip() if isinstance(prompt, str) or prompt is None else None
        if text is None:
            raise RequestError("the prompt must be text")
        if not text:
            raise RequestError("the prompt is empty: type what to draw, or pick an example prompt")
        if len(text) > MAX_PROMPT_CHARS:
            raise RequestError(f"the prompt has {len(text)} characters; the limit is {MAX_PROMPT_CHARS}")
        n = _integer(num_images, "number of images", 1, MAX_IMAGES)
        step_count = _integer(steps, "steps", 1, MAX_STEPS)
        if not isinstance(sampler, str) or sampler not in self.samplers:
            raise RequestError(f"unknown sampler {sampler!r}; choose one of: {', '.join(self.samplers)}")
        scale = _finite_number(guidance_scale, "guidance scale")
        if not 0.0 <= scale <= MAX_GUIDANCE:
            raise RequestError(f"guidance scale must be between 0 and {MAX_GUIDANCE:g}, got {scale:g}")
        if not isinstance(strategy, str) or strategy not in self.strategies:
            raise RequestError(f"unknown guidance strategy {strategy!r}; choose one of: {', '.join(self.strategies)}")
        if strategy_options is not None and not isinstance(strategy_options, str):
            raise RequestError(f"strategy options must be text (KEY=VALUE, ...), got {strategy_options!r}")
        options = parse_strategy_options(strategy_options)
        if "scale" in options:
            raise RequestError("set the guidance weight with the guidance scale slider, not as a strategy option")
        seed_value = _integer(seed, "seed", 0, MAX_SEED)
        if compare not in (None, True, False):
            raise RequestError(f"side by side must be true or false, got {compare!r}")
        settings = settings_from_sliders(self.reward_keys, slider_values, self.num_bins, bool(compare))
        try:  # the strategy's own checks (options, isolate/tradeoff keys) before any sampling
            guide = self.pipe.registry.guidance.create(strategy, {"scale": scale, **options})
            for setting in settings:
                self.pipe.resolve_targets(setting.targets, setting.negative_targets, guide)
            checked_weights(guide, step_count, self.pipe.registry)
        except MiroError as err:
            raise RequestError(f"strategy {strategy}: {err}") from None
        return SampleRequest(text, n, step_count, sampler, scale, strategy, options, seed_value, settings)

    def generate(self, request: SampleRequest) -> Generation:
        """Sample every setting from the same seed, score the images, and write the grid PNG."""
        import torch

        from miro_core.grid import make_grid

        with self._lock:
            started = time.perf_counter()
            images: list[list[Any]] = []
            for setting in request.settings:
                images.append(
                    list(
                        self.pipe(
                            request.prompt,
                            num_images_per_prompt=request.num_images,
                            reward_targets=setting.targets,
                            negative_reward_targets=setting.negative_targets,
                            guidance_scale=request.guidance_scale,
                            num_inference_steps=request.steps,
                            sampler=request.sampler,
                            strategy=request.strategy,
                            strategy_options=request.strategy_options,
                            generator=torch.Generator().manual_seed(request.seed),
                        )
                    )
                )
            scores = [self.scorer.score(batch, request.prompt) for batch in images]
            labels = [
                f"{name}: {request.prompt}" if request.compare else request.prompt
                for name in SETTING_NAMES[: len(images)]
            ]
            grid = make_grid([im for batch in images for im in batch], columns=request.num_images, labels=labels)
            grid_path = self.output_dir / f"miro-grid-{uuid.uuid4().hex[:12]}.png"
            grid.save(grid_path)
            self._prune_grids()
            return Generation(request, images, scores, grid_path, time.perf_counter() - started)

    def _prune_grids(self) -> None:
        grids = sorted(self.output_dir.glob("miro-grid-*.png"), key=lambda p: p.stat().st_mtime)
        for stale in grids[: max(0, len(grids) - self.keep_grids)]:
            stale.unlink(missing_ok=True)
