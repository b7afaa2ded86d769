"""The conformance kit: contract checks for plugin authors, in the spirit of scikit-learn's ``check_estimator``.

Each ``check_*`` function takes a component class (and the options it needs), runs every check of its
contract, and raises :class:`ConformanceError` (an ``AssertionError``, so pytest shows it as a test failure)
listing each failed check with what was wrong. It returns a :class:`Report` of what passed and what was
skipped (a reward whose weights are not on this machine skips the checks that need them; pass
``require_weights=True`` to make that a failure)::

    from miro_core.conformance import check_reward

    def test_my_reward_conforms():
        check_reward(MyReward, options={"checkpoint": "tests/tiny-weights"})

What is checked, per contract (names as they appear in reports):

- every component: a valid ``name`` and ``version``; ``Options`` rejects unknown keys and non-finite
  numbers; options survive a JSON round trip (they are recorded in every config.json); importing the
  component's module imports no heavy library (torch, transformers, ...), so ``miro plugins`` stays fast.
- rewards: one finite-or-NaN float per sample (a list, never a bare float); a batch scores like one sample
  at a time and like the same batch reversed; the same call gives the same scores; the images and captions
  handed in are not modified; unusual inputs (grey, RGBA, 16-bit, float, palette, 1x1 images, empty and long
  captions) give finite-or-NaN scores; a reward that does not read captions ignores them; ``prepare`` /
  ``score_prepared`` agree with ``score`` and pickle; scores survive ``unload`` and ``load``.
- binners: ``num_bins`` non-decreasing edges; levels on the grid ``i / (B - 1)``, monotone in the score,
  NaN for non-finite scores; fitting is deterministic and leaves its input untouched; the state survives a
  JSON round trip into a fresh binner; constant and tiny samples fit.
- guidance strategies: negative targets for exactly the run's reward keys, each in [0, 1], inputs untouched;
  a finite weight at every step, zero everywhere when ``scale`` is 0; ``combine`` keeps shapes and is the
  positive branch at weight 0.
- samplers: exact on a constant velocity field, accurate on ``dx/dt = x``, times from 1 towards 0, the
  declared number of evaluations per step, noise untouched, deterministic, each evaluation's state handed on.
- backbones: output shaped like ``x`` and finite; a batch equals one sample at a time; padded text tokens
  (mask False) do not change the output; inputs untouched; weights survive a safetensors round trip into a
  freshly built network; gradients reach the parameters; unknown size overrides are rejected.
- text encoders and autoencoders: shapes, dtypes, determinism, batch equals one at a time, inputs untouched.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from miro_core.errors import ConfigError, MiroError, MissingWeightsError

#: Libraries a component's module must not import at registration (``miro plugins`` would slow down).
HEAVY_MODULES = ("torch", "torchvision", "transformers", "diffusers", "open_clip", "timm", "tensorflow", "jax")
#: Reward keys a guidance strategy is checked with.
REWARD_KEYS = ("reward-a", "reward-b", "reward-c")
UNKNOWN_OPTION = "miro_conformance_unknown_option"


class ConformanceError(AssertionError):
    """One or more contract checks failed; the message lists each with what was wrong."""


class SkipCheck(Exception):
    """A check that cannot run here (no weights, a module that cannot be imported alone)."""


@dataclass
class Report:
    """What :func:`check_reward` and friends found."""

    component: str
    passed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def raise_for_failures(self) -> Report:
        if self.failed:
            lines = "\n".join(f"  - {name}: {why}" for name, why in self.failed.items())
            raise ConformanceError(f"{self.component} fails {len(self.failed)} contract check(s):\n{lines}")
        return self

    def __str__(self) -> str:
        text = f"{self.component}: {len(self.passed)} passed, {len(self.skipped)} skipped, {len(self.failed)} failed"
        text += "".join(f"\n  skipped {k}: {v}" for k, v in self.skipped.items())
        return text + "".join(f"\n  FAILED {k}: {v}" for k, v in self.failed.items())


class _Run:
    """Runs named checks, recording each outcome instead of stopping at the first failure."""

    def __init__(self, cls: type[Any]) -> None:
        self.cls = cls
        self.report = Report(f"{cls.kind()} {getattr(cls, 'name', '?')!r} ({cls.__module__}.{cls.__qualname__})")

    def __call__(self, name: str, check: Callable[[], Any]) -> bool:
        try:
            check()
        except SkipCheck as skip:
            self.report.skipped[name] = str(skip)
            return False
        except Exception as err:  # noqa: BLE001 - every failure is reported by name
            why = str(err) if isinstance(err, AssertionError) and str(err) else f"{type(err).__name__}: {err}"
            self.report.failed[name] = why
            return False
        self.report.passed.append(name)
        return True

    def skip(self, names: Sequence[str], why: str) -> None:
        for name in names:
            self.report.skipped[name] = why

    def finish(self, raise_on_failure: bool) -> Report:
        return self.report.raise_for_failures() if raise_on_failure else self.report


def _require(condition: Any, message: str) -> None:
    if not condition:
        raise AssertionError(message)


# -- checks every component shares --------------------------------------------------------------------------
def _check_identity(cls: type[Any], base: type[Any]) -> None:
    _require(isinstance(cls, type) and issubclass(cls, base), f"{cls!r} is not a subclass of {base.__name__}")
    name = getattr(cls, "name", "")
    _require(isinstance(name, str) and name, "`name` is empty: set the name users type on the command line")
    _require(
        not any(c.isspace() or c in ",:" for c in name),
        f"name {name!r} contains a space, ',' or ':' (they separate names on the command line)",
    )
    _require(isinstance(cls.version, str) and cls.version, "`version` must be a non-empty string")


def _check_unknown_option(cls: type[Any], options: Mapping[str, Any]) -> None:
    try:
        cls({**options, UNKNOWN_OPTION: 1})
    except ConfigError as err:
        _require(UNKNOWN_OPTION in str(err), f"the error for an unknown option does not name the key: {err}")
        return
    raise AssertionError(f"an unknown option key ({UNKNOWN_OPTION}) was accepted; Options needs extra='forbid'")


def _float_fields(cls: type[Any]) -> list[str]:
    return [name for name, info in cls.Options.model_fields.items() if info.annotation in (float, float | None)]


def _check_non_finite_options(cls: type[Any], options: Mapping[str, Any]) -> None:
    floats = _float_fields(cls)
    if not floats:
        raise SkipCheck("the options have no float field")
    for name in floats:
        for bad in (float("nan"), float("inf")):
            try:
                cls({**options, name: bad})
            except ConfigError:
                continue
            raise AssertionError(f"option {name}={bad} was accepted; options must reject NaN and infinity")


def _check_options_round_trip(cls: type[Any], options: Mapping[str, Any]) -> None:
    component = cls(dict(options))
    dumped = component.options.model_dump(mode="json")
    again = cls(json.loads(json.dumps(dumped)))
    _require(
        again.options.model_dump(mode="json") == dumped,
        "options do not survive a JSON round trip (they are recorded in config.json and read back)",
    )


def _check_light_import(cls: type[Any]) -> None:
    module = cls.__module__
    loaded = sys.modules.get(module)
    if module == "__main__" or loaded is None or not getattr(loaded, "__file__", None):
        raise SkipCheck(f"module {module} cannot be imported on its own")
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        f"print(json.dumps(sorted(m for m in {list(HEAVY_MODULES)!r} if m in sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    if result.returncode != 0:
        raise SkipCheck(f"importing {module} alone failed: {result.stderr.strip().splitlines()[-1:]}")
    heavy = json.loads(result.stdout.strip().splitlines()[-1])
    _require(
        not heavy,
        f"importing {module} imports {', '.join(heavy)}; import heavy libraries inside load/score/build so that "
        "`miro plugins` and `miro --help` stay instant",
    )


def _common(run: _Run, cls: type[Any], base: type[Any], options: Mapping[str, Any], light_import: bool) -> bool:
    ok = run("subclass, name and version", lambda: _check_identity(cls, base))
    run("unknown options are rejected", lambda: _check_unknown_option(cls, options))
    run("non-finite options are rejected", lambda: _check_non_finite_options(cls, options))
    ok &= run("options survive a JSON round trip", lambda: _check_options_round_trip(cls, options))
    if light_import:
        run("no heavy import at registration", lambda: _check_light_import(cls))
    return ok


# -- inputs ---------------------------------------------------------------------------------------------------
def conformance_images() -> tuple[list[Any], list[str]]:
    """Four ordinary RGB images with captions (different content, so a reward has something to rank)."""
    from PIL import Image, ImageDraw

    images = []
    specs = [((220, 30, 30), "ellipse", (255, 255, 255)), ((30, 30, 220), "rectangle", (250, 250, 240)),
             ((30, 160, 30), "polygon", (20, 20, 20)), ((240, 220, 40), "ellipse", (90, 90, 200))]
    for index, (colour, shape, background) in enumerate(specs):
        image = Image.new("RGB", (48 + 8 * index, 40), background)
        draw = ImageDraw.Draw(image)
        box = (6 + index, 6, 30 + 2 * index, 32)
        if shape == "polygon":
            draw.polygon([(box[0], box[3]), ((box[0] + box[2]) // 2, box[1]), (box[2], box[3])], fill=colour)
        else:
            getattr(draw, shape)(box, fill=colour)
        images.append(image)
    captions = ["a red circle", "a blue square", "a green triangle on a black background", "yellow"]
    return images, captions


def unusual_images() -> tuple[list[Any], list[str]]:
    """Images as a dataset can decode them (modes, sizes) and captions a crawl can hold."""
    from PIL import Image

    rng = np.random.default_rng(0)
    grey = Image.fromarray(rng.integers(0, 256, (31, 17), dtype=np.uint8), "L")
    rgba = Image.fromarray(rng.integers(0, 256, (20, 31, 4), dtype=np.uint8), "RGBA")
    deep = Image.fromarray(rng.integers(0, 65536, (29, 23), dtype=np.uint16))
    floats = Image.fromarray(rng.random((13, 21), dtype=np.float32), "F")
    palette = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "RGB").convert(
        "P", palette=Image.Palette.ADAPTIVE, colors=8
    )
    palette.info["transparency"] = 2
    tiny = Image.new("RGB", (1, 1), (128, 64, 32))
    wide = Image.fromarray(rng.integers(0, 256, (4, 97, 3), dtype=np.uint8), "RGB")
    captions = ["", "a grey square " * 60, "un chat noir sur un canapé vert", "🙂 emoji", "\n", "x", "two circles"]
    return [grey, rgba, deep, floats, palette, tiny, wide], captions


def _snapshot(images: Sequence[Any]) -> list[tuple[str, tuple[int, int], bytes, dict[str, Any]]]:
    return [(im.mode, im.size, im.tobytes(), dict(im.info)) for im in images]


def _scores(values: Any, expected: int, what: str) -> np.ndarray:
    """Validate a reward's return value against the contract; NaN allowed, infinities not."""
    _require(
        not isinstance(values, (float, int, str, bytes)) and hasattr(values, "__len__"),
        f"{what} returned {type(values).__name__} {values!r}; return a list with one float per sample",
    )
    _require(len(values) == expected, f"{what} returned {len(values)} scores for {expected} samples")
    out = []
    for index, value in enumerate(values):
        ok = isinstance(value, (float, int, np.floating, np.integer)) and not isinstance(value, (bool, np.bool_))
        _require(ok, f"{what}: score {index} is {type(value).__name__} {value!r}, not a float")
        number = float(value)
        _require(not math.isinf(number), f"{what}: score {index} is {number}; return NaN for a sample you cannot score")
        out.append(number)
    return np.asarray(out, dtype=np.float64)


def _close(a: np.ndarray, b: np.ndarray, rtol: float, atol: float, what: str) -> None:
    same = np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
    if not same.all():
        i = int(np.flatnonzero(~same)[0])
        raise AssertionError(f"{what}: sample {i} scored {a[i]!r} vs {b[i]!r} (and {int((~same).sum()) - 1} more)")


# -- rewards ----------------------------------------------------------------------------------------------------
def check_reward(
    cls: type[Any],
    options: Mapping[str, Any] | None = None,
    *,
    images: Sequence[Any] | None = None,
    captions: Sequence[str] | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    rtol: float = 1e-4,
    atol: float = 1e-5,
    require_weights: bool = False,
    light_import: bool = True,
    raise_on_failure: bool = True,
) -> Report:
    """Check a :class:`~miro_core.rewards.RewardModel` subclass against the reward contract."""
    from miro_core.rewards import RewardModel

    options = dict(options or {})
    run = _Run(cls)
    if not _common(run, cls, RewardModel, options, light_import):
        return run.finish(raise_on_failure)
    run("inputs are a subset of {image, caption}", lambda: _require(
        isinstance(cls.inputs, frozenset) and cls.inputs and cls.inputs <= {"image", "caption"},
        f"inputs is {cls.inputs!r}",
    ))
    if images is None or captions is None:
        images, captions = conformance_images()
    images, captions = list(images), list(captions)
    _require(len(images) == len(captions) and len(images) >= 2, "give at least two images and as many captions")
    reward = cls(options)
    weighted = [
        "one float per sample", "batch equals one at a time", "batch order does not matter", "deterministic",
        "inputs are not modified", "unusual inputs give finite-or-NaN scores", "captions ignored unless read",
        "prepare and score_prepared agree with score", "scores survive unload and load",
    ]
    try:
        reward.load(device, dtype)
    except MissingWeightsError as err:
        if require_weights:
            run.report.failed["load"] = f"weights are missing: {err}"
        else:
            run.skip(weighted, f"needs weights not on this machine ({str(err).splitlines()[0][:200]})")
        return run.finish(raise_on_failure)
    except Exception as err:  # noqa: BLE001
        run.report.failed["load"] = f"{type(err).__name__}: {err}"
        return run.finish(raise_on_failure)
    try:
        state: dict[str, np.ndarray] = {}

        def batch() -> None:
            before, texts = _snapshot(images), list(captions)
            state["batch"] = _scores(reward.score(images, captions), len(images), "score(batch)")
            state["untouched"] = _snapshot(images) == before and list(captions) == texts

        if not run("one float per sample", batch):
            run.skip(weighted[1:], "score() does not return one float per sample")
            return run.finish(raise_on_failure)

        def one_at_a_time() -> None:
            single = np.concatenate([
                _scores(reward.score([im], [cap]), 1, "score(one sample)") for im, cap in zip(images, captions)
            ])
            _close(state["batch"], single, rtol, atol, "a batch scores differently from one sample at a time")

        def reversed_order() -> None:
            backwards = _scores(reward.score(images[::-1], captions[::-1]), len(images), "score(reversed batch)")
            _close(state["batch"], backwards[::-1], rtol, atol, "a sample's score depends on the rest of the batch")

        def deterministic() -> None:
            again = _scores(reward.score(images, captions), len(images), "score(batch) again")
            _close(state["batch"], again, rtol, atol, "the same call gave different scores")

        def untouched() -> None:
            _require(state["untouched"], "score() modified the images or captions it was given (they are shared "
                     "with every other reward: copy before changing them)")

        def unusual() -> None:
            odd, texts = unusual_images()
            before = _snapshot(odd)
            _scores(reward.score(odd, texts), len(odd), "score(unusual images and captions)")
            _require(_snapshot(odd) == before, "score() modified an unusual image")

        def captions_ignored() -> None:
            if "caption" in cls.inputs:
                raise SkipCheck("this reward reads captions")
            other = _scores(reward.score(images, ["something else"] * len(images)), len(images), "score")
            _close(state["batch"], other, rtol, atol, "inputs lacks 'caption' but the captions change the scores")

        def prepared() -> None:
            if not cls.prepares_in_workers():
                raise SkipCheck("this reward implements score() only")
            worker_copy = pickle.loads(pickle.dumps(cls(options)))
            items = [pickle.loads(pickle.dumps(worker_copy.prepare(im, cap))) for im, cap in zip(images, captions)]
            values = _scores(reward.score_prepared(items), len(images), "score_prepared")
            _close(state["batch"], values, rtol, atol, "score_prepared(prepare(...)) differs from score()")

        def reload() -> None:
            reward.unload()
            reward.load(device, dtype)
            again = _scores(reward.score(images, captions), len(images), "score after unload and load")
            _close(state["batch"], again, rtol, atol, "scores changed after unload() and load()")

        run("batch equals one at a time", one_at_a_time)
        run("batch order does not matter", reversed_order)
        run("deterministic", deterministic)
        run("inputs are not modified", untouched)
        run("unusual inputs give finite-or-NaN scores", unusual)
        run("captions ignored unless read", captions_ignored)
        run("prepare and score_prepared agree with score", prepared)
        run("scores survive unload and load", reload)
    finally:
        reward.unload()
    return run.finish(raise_on_failure)


# -- binners ----------------------------------------------------------------------------------------------------
def check_binner(
    cls: type[Any],
    options: Mapping[str, Any] | None = None,
    *,
    light_import: bool = True,
    raise_on_failure: bool = True,
) -> Report:
    """Check a :class:`~miro_core.binning.Binner` subclass: edges, levels, non-finite scores, state round trip."""
    from miro_core.binning import Binner

    options = {"num_bins": 8, **dict(options or {})}
    run = _Run(cls)
    if not _common(run, cls, Binner, options, light_import):
        return run.finish(raise_on_failure)
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.3, 0.1, 500), rng.uniform(0, 1, 200), [np.nan, np.nan]])
    state: dict[str, Any] = {}

    def fit() -> None:
        original = values.copy()
        binner = cls(options).fit(values)
        _require(np.array_equal(values, original, equal_nan=True), "fit() modified the scores it was given")
        edges = np.asarray(binner.edges, dtype=np.float64)
        bins = binner.num_bins
        _require(edges.shape == (bins,), f"{edges.shape[0]} edges for num_bins={bins}")
        _require(np.all(np.isfinite(edges)) and np.all(np.diff(edges) >= 0), "edges must be finite, non-decreasing")
        state["binner"] = binner

    if not run("fit gives num_bins non-decreasing edges", fit):
        run.skip(["levels lie on the grid", "levels are monotone", "non-finite scores give NaN", "deterministic",
                  "state survives a JSON round trip"], "fit() failed")
        return run.finish(raise_on_failure)
    binner = state["binner"]
    grid_size = binner.num_bins - 1

    def on_grid() -> None:
        levels = np.asarray(binner.transform(values[:-2]), dtype=np.float64)
        _require(levels.shape == values[:-2].shape, "transform() changed the number of values")
        _require(np.all((levels >= 0) & (levels <= 1)), "levels must lie in [0, 1]")
        _require(np.allclose(levels * grid_size, np.round(levels * grid_size)), "levels must be i / (num_bins - 1)")

    def monotone() -> None:
        ordered = np.sort(values[:-2])
        _require(np.all(np.diff(np.asarray(binner.transform(ordered))) >= 0), "a higher score got a lower level")

    def non_finite() -> None:
        bad = np.array([np.nan, np.inf, -np.inf, 0.3])
        levels = np.asarray(binner.transform(bad), dtype=np.float64)
        _require(np.all(np.isnan(levels[:3])), f"NaN, +inf and -inf must give NaN (missing), got {levels[:3]}")
        _require(np.isfinite(levels[3]), "a finite score got a non-finite level")

    def deterministic() -> None:
        again = cls(options).fit(values)
        _require(np.array_equal(again.edges, binner.edges), "fitting the same scores twice gave different edges")

    def round_trip() -> None:
        saved = json.loads(json.dumps(binner.state_dict()))
        fresh = cls({**options, "num_bins": saved.get("num_bins", binner.num_bins)})
        fresh.load_state_dict(saved)
        probe = np.linspace(-0.5, 1.5, 41)
        _require(
            np.array_equal(fresh.transform(probe), binner.transform(probe), equal_nan=True),
            "a binner loaded from state_dict() maps scores to other levels",
        )

    def degenerate() -> None:
        constant = cls(options).fit(np.full(50, 0.5))
        _require(np.all(np.isfinite(constant.transform(np.array([0.4, 0.5, 0.6])))), "constant scores: bad levels")
        few = cls(options).fit(np.array([0.1, 0.2, 0.9]))
        _require(np.all(np.isfinite(few.transform(np.array([0.0, 0.5, 1.0])))), "three scores: bad levels")

    run("levels lie on the grid", on_grid)
    run("levels are monotone", monotone)
    run("non-finite scores give NaN", non_finite)
    run("deterministic", deterministic)
    run("state survives a JSON round trip", round_trip)
    run("constant and tiny samples fit", degenerate)
    return run.finish(raise_on_failure)


# -- guidance strategies -------------------------------------------------------------------------------------------
def check_guidance(
    cls: type[Any],
    options: Mapping[str, Any] | None = None,
    *,
    reward_keys: Sequence[str] = REWARD_KEYS,
    light_import: bool = True,
    raise_on_failure: bool = True,
) -> Report:
    """Check a :class:`~miro_core.guidance.GuidanceStrategy` subclass: negative targets, weights, combine."""
    from miro_core.guidance import GuidanceStrategy

    options = dict(options or {})
    run = _Run(cls)
    if not _common(run, cls, GuidanceStrategy, options, light_import):
        return run.finish(raise_on_failure)
    keys = list(reward_keys)

    def has_scale() -> None:
        _require("scale" in cls.Options.model_fields, "Options has no `scale` field (extend GuidanceOptions)")

    def targets() -> None:
        strategy = cls(options)
        for positive_value, negative_value in ((1.0, 0.0), (0.25, 0.75)):
            positive = {k: positive_value for k in keys}
            negative = {k: negative_value for k in keys}
            copies = (dict(positive), dict(negative), list(keys))
            result = strategy.negative_targets(keys, positive, negative)
            _require((positive, negative, keys) == copies, "negative_targets() modified its arguments")
            _require(isinstance(result, Mapping), f"negative_targets() returned {type(result).__name__}, not a dict")
            _require(set(result) == set(keys), f"negative targets for {sorted(result)}, expected {sorted(keys)}")
            for key, value in result.items():
                _require(
                    isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0,
                    f"negative target {key}={value!r} is not in [0, 1]",
                )
            again = strategy.negative_targets(keys, positive, negative)
            _require(again == result, "negative_targets() is not deterministic")

    def no_rewards() -> None:
        try:
            result = cls(options).negative_targets([], {}, {})
        except MiroError:
            return  # refusing a run without rewards, with a clear message, is allowed
        _require(dict(result) == {}, f"a run without rewards got negative targets {result!r}")

    def weights() -> None:
        strategy = cls(options)
        for steps in (1, 7, 50):
            for step in range(steps):
                value = strategy.scale_at(step, steps)
                _require(isinstance(value, (int, float)) and math.isfinite(value),
                         f"scale_at({step}, {steps}) = {value!r} is not a finite number")
        if "scale" in cls.Options.model_fields:
            off = cls({**options, "scale": 0.0})
            weights_off = [off.scale_at(step, 10) for step in range(10)]
            _require(all(w == 0 for w in weights_off), f"scale=0 must turn guidance off, got weights {weights_off}")

    def combine() -> None:
        strategy = cls(options)
        rng = np.random.default_rng(0)
        positive, negative = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 3, 4, 4))
        copies = positive.copy(), negative.copy()
        mixed = np.asarray(strategy.combine(positive, negative, 2.5))
        _require(mixed.shape == positive.shape and np.all(np.isfinite(mixed)), "combine() changed shape or overflowed")
        _require(np.array_equal(positive, copies[0]) and np.array_equal(negative, copies[1]),
                 "combine() modified its inputs")
        _require(np.allclose(np.asarray(strategy.combine(positive, negative, 0.0)), positive),
                 "combine() at weight 0 must return the positive branch")

    run("options have a scale", has_scale)
    run("negative targets cover exactly the run's rewards, in [0, 1]", targets)
    run("a run without rewards", no_rewards)
    run("finite weights; scale 0 turns guidance off", weights)
    run("combine keeps shapes and is the positive branch at weight 0", combine)
    return run.finish(raise_on_failure)


# -- samplers --------------------------------------------------------------------------------------------------------
def check_sampler(
    cls: type[Any],
    options: Mapping[str, Any] | None = None,
    *,
    light_import: bool = True,
    raise_on_failure: bool = True,
) -> Report:
    """Check a :class:`~miro_core.sampler.Sampler` subclass on velocity fields with known solutions."""
    import torch

    from miro_core.sampler import Sampler

    options = dict(options or {})
    run = _Run(cls)
    if not _common(run, cls, Sampler, options, light_import):
        return run.finish(raise_on_failure)
    sampler = cls(options)
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))

    def constant() -> None:
        drift = torch.full_like(noise, 0.7)
        for steps in (1, 4):
            calls: list[tuple[float, int]] = []

            def velocity(x: Any, t: float, step: int, _calls: list[tuple[float, int]] = calls) -> Any:
                _calls.append((float(t), int(step)))
                return drift

            original = noise.clone()
            x0 = sampler.sample(velocity, noise, steps)
            _require(torch.equal(noise, original), "sample() modified the noise it was given")
            _require(tuple(x0.shape) == tuple(noise.shape), f"x0 has shape {tuple(x0.shape)}")
            _require(torch.allclose(x0, noise - drift, atol=1e-5), "a constant velocity v must give x0 = x1 - v")
            _require(calls and calls[0][0] == 1.0, "the first evaluation must be at t = 1 (pure noise)")
            _require(all(0.0 <= t <= 1.0 and 0 <= s < steps for t, s in calls), "times or step indices out of range")
            _require(len(calls) <= cls.evaluations_per_step * steps,
                     f"{len(calls)} evaluations for {steps} steps; evaluations_per_step is {cls.evaluations_per_step}")

    def accurate() -> None:
        x0 = sampler.sample(lambda x, t, step: x, noise, 50)
        expected = noise * math.exp(-1.0)
        error = float((x0 - expected).abs().max() / expected.abs().max())
        _require(error < 0.05, f"on dx/dt = x with 50 steps the relative error is {error:.3f} (> 0.05)")

    def deterministic() -> None:
        a = sampler.sample(lambda x, t, step: x * t, noise, 5)
        b = sampler.sample(lambda x, t, step: x * t, noise, 5)
        _require(torch.equal(a, b), "the same call gave different samples")

    def state_handed_on() -> None:
        if not hasattr(sampler, "integrate"):
            raise SkipCheck("this miro has no stateful sampler contract")
        returned: list[int] = []
        received: list[Any] = []

        def velocity(x: Any, t: float, step: int, state: Any) -> Any:
            received.append(state)
            returned.append(len(returned))
            return x * 0.1, returned[-1]

        sampler.integrate(velocity, noise, 4)
        _require(received and received[0] is None, "the first evaluation must get state None")
        _require(all(r in returned[:i] for i, r in enumerate(received) if i), "a state was not one returned before")
        _require(received[-1] is not None, "the state returned by an evaluation never reached the next one")

    run("exact on a constant velocity", constant)
    run("accurate on dx/dt = x", accurate)
    run("deterministic", deterministic)
    run("state is handed to the next evaluation", state_handed_on)
    return run.finish(raise_on_failure)


# -- backbones --------------------------------------------------------------------------------------------------------
def check_backbone(
    cls: type[Any],
    options: Mapping[str, Any] | None = None,
    *,
    in_channels: int = 4,
    image_size: int = 16,
    cond_dim: int = 32,
    text_tokens: int = 6,
    atol: float = 1e-4,
    light_import: bool = True,
    raise_on_failure: bool = True,
) -> Report:
    """Check a :class:`~miro_core.backbone.Backbone` subclass: shapes, batching, masking, weights round trip."""
    import torch

    from miro_core.backbone import Backbone, BackboneSpec
    from miro_core.conditioning import Conditioning

    sizes = list(getattr(cls, "sizes", {}) or {})
    default_size = "tiny" if "tiny" in sizes else (sizes[0] if sizes else None)
    options = {**({"size": default_size} if default_size else {}), **dict(options or {})}
    run = _Run(cls)
    if not _common(run, cls, Backbone, options, light_import):
        return run.finish(raise_on_failure)
    spec = BackboneSpec(in_channels=in_channels, image_size=image_size, cond_dim=cond_dim)
    generator = torch.Generator().manual_seed(0)
    batch, length = 3, text_tokens
    x = torch.randn(batch, in_channels, image_size, image_size, generator=generator)
    t = torch.tensor([0.9, 0.5, 0.1])
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[:, -2:] = False  # two padding tokens per sample
    # the released design has no pooled vector (see miro_core.backbone)
    pooled = torch.randn(batch, cond_dim, generator=generator) if "framework" in getattr(
        cls, "designs", frozenset({"framework"})) else None
    cond = Conditioning(torch.randn(batch, length, cond_dim, generator=generator), mask, pooled)
    state: dict[str, Any] = {}

    def forward(net: Any, x: Any, t: Any, cond: Any) -> Any:
        """The velocity; a stateful network (self-conditioning) is called with no state, as at the first step."""
        if getattr(net, "stateful", False):
            velocity, _ = net(x, t, cond, None)
            return velocity
        return net(x, t, cond)

    def part(cond: Any, i: int) -> Any:
        return Conditioning(cond.tokens[i : i + 1], cond.mask[i : i + 1],
                            None if cond.pooled is None else cond.pooled[i : i + 1])

    def build() -> None:
        torch.manual_seed(0)
        network = cls(options).build(spec)
        _require(isinstance(network, torch.nn.Module), f"build() returned {type(network).__name__}, not nn.Module")
        network.eval()
        with torch.no_grad():
            out = forward(network, x, t, cond)
        _require(tuple(out.shape) == tuple(x.shape), f"output shape {tuple(out.shape)} != input {tuple(x.shape)}")
        _require(bool(torch.isfinite(out).all()), "the output has NaN or infinite values")
        state["network"], state["out"] = network, out

    if not run("build and forward: output shaped like x", build):
        run.skip(["batch equals one at a time", "padding tokens are ignored", "inputs are not modified",
                  "weights survive a safetensors round trip", "gradients reach the parameters", "deterministic"],
                 "build or forward failed")
        return run.finish(raise_on_failure)
    network, out = state["network"], state["out"]

    def one_at_a_time() -> None:
        with torch.no_grad():
            single = torch.cat([forward(network, x[i : i + 1], t[i : i + 1], part(cond, i)) for i in range(batch)])
        _require(torch.allclose(out, single, atol=atol, rtol=1e-4),
                 f"a batch differs from one sample at a time by {float((out - single).abs().max()):.2e}")

    def padding() -> None:
        noisy = cond.tokens.clone()
        noisy[:, -2:] = torch.randn(batch, 2, cond_dim, generator=torch.Generator().manual_seed(1)) * 10
        with torch.no_grad():
            again = forward(network, x, t, Conditioning(noisy, cond.mask, cond.pooled))
        _require(torch.allclose(out, again, atol=atol, rtol=1e-4),
                 "tokens whose mask is False (text padding) changed the output; they must be ignored")

    def untouched() -> None:
        tensors = [v for v in (x, t, cond.tokens, cond.mask, cond.pooled) if v is not None]
        copies = [v.clone() for v in tensors]
        with torch.no_grad():
            forward(network, x, t, cond)
        _require(all(torch.equal(a, b) for a, b in zip(copies, tensors)), "forward() modified its inputs")

    def deterministic() -> None:
        with torch.no_grad():
            again = forward(network, x, t, cond)
        _require(torch.equal(out, again), "two forward passes in eval mode differ")

    def weights_round_trip() -> None:
        import tempfile

        from safetensors.torch import load_file, save_file

        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.safetensors")
            save_file({k: v.detach().contiguous() for k, v in network.state_dict().items()}, path)
            torch.manual_seed(123)
            fresh = cls(options).build(spec).eval()
            fresh.load_state_dict(load_file(path))
        with torch.no_grad():
            again = forward(fresh, x, t, cond)
        _require(torch.equal(out, again), "a freshly built network with the saved weights gives other outputs")

    def gradients() -> None:
        network.train()
        network.zero_grad()
        target = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
        (forward(network, x, t, cond) - target).pow(2).mean().backward()  # not out**2: zero-initialised outputs
        grads = [p.grad for p in network.parameters() if p.requires_grad]
        _require(any(g is not None and bool(g.abs().sum() > 0) for g in grads), "no parameter received a gradient")
        _require(all(g is None or bool(torch.isfinite(g).all()) for g in grads), "a gradient is NaN or infinite")
        network.zero_grad()
        network.eval()

    def overrides() -> None:
        if cls.network_options is None:
            raise SkipCheck("network_options is not set, so overrides are not checked by name")
        try:
            cls({**options, "overrides": {UNKNOWN_OPTION: 1}}).build(spec)
        except ConfigError as err:
            _require(UNKNOWN_OPTION in str(err), f"the error does not name the override: {err}")
            return
        raise AssertionError("an unknown size override was accepted")

    run("batch equals one at a time", one_at_a_time)
    run("padding tokens are ignored", padding)
    run("inputs are not modified", untouched)
    run("deterministic", deterministic)
    run("weights survive a safetensors round trip", weights_round_trip)
    run("gradients reach the parameters", gradients)
    run("unknown overrides are rejected", overrides)
    return run.finish(raise_on_failure)


# -- text encoders and autoencoders -------------------------------------------------------------------------------
def check_text_encoder(
    cls: type[Any],
    options: Mapping[str, Any] | None = None,
    *,
    captions: Sequence[str] = ("a red circle", "", "two blue squares left of a green triangle " * 8, "ünïcödé"),
    device: str = "cpu",
    atol: float = 1e-4,
    require_weights: bool = False,
    light_import: bool = True,
    raise_on_failure: bool = True,
) -> Report:
    """Check a :class:`~miro_core.text_encoder.TextEncoder` subclass: shapes, mask, batching, determinism."""
    import torch

    from miro_core.text_encoder import TextEncoder

    options = dict(options or {})
    run = _Run(cls)
    if not _common(run, cls, TextEncoder, options, light_import):
        return run.finish(raise_on_failure)
    encoder = cls(options)
    names = ["shapes and mask", "batch equals one at a time", "deterministic", "captions are not modified"]
    try:
        encoder.load(device)
    except MissingWeightsError as err:
        if require_weights:
            run.report.failed["load"] = f"weights are missing: {err}"
        else:
            run.skip(names, f"needs weights not on this machine ({str(err).splitlines()[0][:200]})")
        return run.finish(raise_on_failure)
    texts = list(captions)
    state: dict[str, Any] = {}

    def shapes() -> None:
        tokens, mask = encoder.encode(texts)
        _require(tokens.ndim == 3 and tokens.shape[0] == len(texts) and tokens.shape[2] == encoder.dim,
                 f"tokens shape {tuple(tokens.shape)}; expected ({len(texts)}, L, dim={encoder.dim})")
        _require(tuple(mask.shape) == tuple(tokens.shape[:2]) and mask.dtype == torch.bool, "mask must be (B, L) bool")
        _require(bool(torch.isfinite(tokens.float()).all()), "token embeddings have NaN or infinite values")
        _require(bool(mask.any(dim=1).all()), "every caption, even an empty one, needs at least one real token")
        state["tokens"], state["mask"] = tokens.float(), mask

    if not run("shapes and mask", shapes):
        return run.finish(raise_on_failure)

    def one_at_a_time() -> None:
        for i, text in enumerate(texts):
            tokens, mask = encoder.encode([text])
            _require(torch.equal(mask[0], state["mask"][i]), f"caption {i}: the mask depends on the batch")
            real = mask[0]
            _require(torch.allclose(tokens[0].float()[real], state["tokens"][i][real], atol=atol),
                     f"caption {i}: its embedding depends on the rest of the batch")

    def deterministic() -> None:
        tokens, _ = encoder.encode(texts)
        _require(torch.allclose(tokens.float(), state["tokens"], atol=atol), "the same call gave other embeddings")

    def untouched() -> None:
        _require(texts == list(captions), "encode() modified the caption list")

    run("batch equals one at a time", one_at_a_time)
    run("deterministic", deterministic)
    run("captions are not modified", untouched)
    return run.finish(raise_on_failure)


def check_autoencoder(
    cls: type[Any],
    options: Mapping[str, Any] | None = None,
    *,
    image_size: int = 16,
    device: str = "cpu",
    atol: float = 1e-4,
    require_weights: bool = False,
    light_import: bool = True,
    raise_on_failure: bool = True,
) -> Report:
    """Check an :class:`~miro_core.autoencoder.Autoencoder` subclass: shapes, range, batching, determinism."""
    import torch

    from miro_core.autoencoder import Autoencoder

    options = dict(options or {})
    run = _Run(cls)
    if not _common(run, cls, Autoencoder, options, light_import):
        return run.finish(raise_on_failure)
    codec = cls(options)
    names = ["encode and decode shapes", "decoded images lie in [-1, 1]", "batch equals one at a time",
             "deterministic", "inputs are not modified"]
    try:
        codec.load(device)
    except MissingWeightsError as err:
        if require_weights:
            run.report.failed["load"] = f"weights are missing: {err}"
        else:
            run.skip(names, f"needs weights not on this machine ({str(err).splitlines()[0][:200]})")
        return run.finish(raise_on_failure)
    images = torch.rand(3, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    state: dict[str, Any] = {}

    def shapes() -> None:
        channels, size = codec.latent_shape(image_size)
        original = images.clone()
        with torch.no_grad():
            latents = codec.encode(images)
            decoded = codec.decode(latents)
        _require(torch.equal(images, original), "encode() modified the images")
        _require(tuple(latents.shape) == (3, channels, size, size),
                 f"latents {tuple(latents.shape)} but latent_shape({image_size}) = {(channels, size)}")
        _require(tuple(decoded.shape) == tuple(images.shape), f"decoded shape {tuple(decoded.shape)}")
        state["latents"], state["decoded"] = latents, decoded

    if not run("encode and decode shapes", shapes):
        return run.finish(raise_on_failure)

    def value_range() -> None:
        decoded = state["decoded"]
        _require(bool(torch.isfinite(decoded).all()) and float(decoded.abs().max()) <= 1.0 + 1e-3,
                 "decode() must return finite images in [-1, 1]")

    def one_at_a_time() -> None:
        with torch.no_grad():
            single = torch.cat([codec.encode(images[i : i + 1]) for i in range(3)])
        _require(torch.allclose(single, state["latents"], atol=atol), "a batch encodes differently from one image")

    def deterministic() -> None:
        with torch.no_grad():
            again = codec.encode(images)
        _require(torch.allclose(again, state["latents"], atol=atol), "encode() is not deterministic (use the mean)")

    def untouched() -> None:
        latents = state["latents"].clone()
        with torch.no_grad():
            codec.decode(latents)
        _require(torch.equal(latents, state["latents"]), "decode() modified the latents")

    run("decoded images lie in [-1, 1]", value_range)
    run("batch equals one at a time", one_at_a_time)
    run("deterministic", deterministic)
    run("inputs are not modified", untouched)
    return run.finish(raise_on_failure)


# -- a whole plugin module ------------------------------------------------------------------------------------------
CHECKS: dict[str, Callable[..., Report]] = {
    "rewards": check_reward,
    "binners": check_binner,
    "guidance": check_guidance,
    "samplers": check_sampler,
    "backbones": check_backbone,
    "text_encoders": check_text_encoder,
    "autoencoders": check_autoencoder,
}


def check_plugin(
    module: Any, options: Mapping[str, Mapping[str, Any]] | None = None, *, raise_on_failure: bool = True
) -> list[Report]:
    """Load a plugin module through the public registry and check every component it registers.

    The module must load cleanly (MIRO_API, hooks decorated, nothing broken); ``options`` maps a component
    name to the options it is checked with.
    """
    from miro_core.plugins import build_registry

    name = getattr(module, "__name__", "plugin")
    registry = build_registry(load_entry_points=False, extra_plugins=[(name, module)])
    info = next(p for p in registry.plugins if p.name == name)
    problems = ([info.error] if info.error else []) + info.warnings
    if problems:
        raise ConformanceError(f"plugin module {name} does not load cleanly: {'; '.join(problems)}")
    if not info.provides:
        raise ConformanceError(f"plugin module {name} registers nothing (no @hookimpl register_* function)")
    reports = []
    for attribute, table in registry.tables().items():
        for component in table.names():
            for entry in table.registrations(component):
                if entry.plugin == name:
                    check = CHECKS[attribute]
                    reports.append(check(entry.cls, (options or {}).get(component), raise_on_failure=False))
    if raise_on_failure:
        for report in reports:
            report.raise_for_failures()
    return reports
