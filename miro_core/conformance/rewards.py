"""Contract checks of reward models, and the images they are checked on."""

from __future__ import annotations

import math
import pickle
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from miro_core.conformance.runner import CheckRun, Report, SkipCheck, check_common, require


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
    require(
        not isinstance(values, (float, int, str, bytes, Mapping, set, frozenset)) and hasattr(values, "__len__"),
        f"{what} returned {type(values).__name__} {values!r}; return a list with one float per sample",
    )
    if hasattr(values, "ndim") and hasattr(values, "tolist"):  # a 1-D array or tensor, as the engine accepts
        require(values.ndim == 1, f"{what} returned an array of shape {tuple(values.shape)}, not 1-D")
        values = values.tolist()
    require(len(values) == expected, f"{what} returned {len(values)} scores for {expected} samples")
    out = []
    for index, value in enumerate(values):
        ok = isinstance(value, (float, int, np.floating, np.integer)) and not isinstance(value, (bool, np.bool_))
        require(ok, f"{what}: score {index} is {type(value).__name__} {value!r}, not a float")
        require(not isinstance(value, int) or abs(value) <= sys.float_info.max,
                f"{what}: score {index} is an int beyond the float range")
        number = float(value)
        require(not math.isinf(number), f"{what}: score {index} is {number}; return NaN for a sample you cannot score")
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
    run = CheckRun(cls)
    if not check_common(run, cls, RewardModel, options, light_import):
        return run.finish(raise_on_failure)
    run("inputs are a subset of {image, caption}", lambda: require(
        isinstance(cls.inputs, frozenset) and cls.inputs and cls.inputs <= {"image", "caption"},
        f"inputs is {cls.inputs!r}",
    ))
    if images is None or captions is None:
        images, captions = conformance_images()
    images, captions = list(images), list(captions)
    require(len(images) == len(captions) and len(images) >= 2, "give at least two images and as many captions")
    reward = cls(options)
    weighted = [
        "one float per sample", "batch equals one at a time", "batch order does not matter", "deterministic",
        "inputs are not modified", "unusual inputs give finite-or-NaN scores", "captions ignored unless read",
        "prepare and score_prepared agree with score", "scores survive unload and load",
    ]
    if not run.load(lambda: reward.load(device, dtype), weighted, require_weights):
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
            require(state["untouched"], "score() modified the images or captions it was given (they are shared "
                     "with every other reward: copy before changing them)")

        def unusual() -> None:
            odd, texts = unusual_images()
            before = _snapshot(odd)
            _scores(reward.score(odd, texts), len(odd), "score(unusual images and captions)")
            require(_snapshot(odd) == before, "score() modified an unusual image")

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
