"""The three shapes-world reward plugins, loaded through the public registry (editable installs).

Each reward must separate what it measures (sharpness: blur and noise; aesthetic: low contrast and
washed-out colour; alignment: mismatched captions) and must not be fooled by generated-looking images.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from PIL import Image

from miro_core.plugins import build_registry
from miro_core.rewards import RewardModel
from miro_core.shapes.degrade import NAMES, apply_degradation, make_degradation
from miro_core.shapes.probes import probe_images
from miro_core.shapes.render import render_array, to_image
from miro_core.shapes.scene import sample_plan, sample_scene

REWARDS = ("shapes-alignment", "shapes-aesthetic", "shapes-sharpness")
N = 120


@pytest.fixture(scope="module")
def rewards() -> dict[str, RewardModel]:
    registry = build_registry()
    missing = [name for name in REWARDS if name not in registry.rewards]
    if missing:
        pytest.fail(f"not registered: {missing}; run `pip install -e plugins/miro-reward-shapes-*`")
    return {name: registry.rewards.create(name) for name in REWARDS}


@pytest.fixture(scope="module")
def paired() -> dict[str, object]:
    """The same scenes clean and under each degradation (strength uniform in [0.2, 1])."""
    scenes = [sample_scene(random.Random(f"reward-test:{i}")) for i in range(N)]
    clean = [render_array(s) for s in scenes]
    strengths = random.Random(0)
    rng = np.random.default_rng(0)
    images = {"clean": [to_image(c) for c in clean]}
    for name in NAMES:
        images[name] = [
            to_image(apply_degradation(c, make_degradation(name, strengths.uniform(0.2, 1.0)), rng)) for c in clean
        ]
    mismatched = []
    for i, scene in enumerate(scenes):
        other = random.Random(f"reward-test-mismatch:{i}")
        text = scene.caption
        while text == scene.caption:
            text = sample_plan(other)[0].text()
        mismatched.append(text)
    return {"images": images, "captions": [s.caption for s in scenes], "mismatched": mismatched}


def _scores(reward: RewardModel, images: list[Image.Image], captions: list[str]) -> np.ndarray:
    values = np.asarray(reward.score(images, captions), dtype=np.float64)
    assert values.shape == (len(images),)
    return values


def _by_set(reward: RewardModel, paired: dict[str, object]) -> dict[str, np.ndarray]:
    return {k: _scores(reward, v, paired["captions"]) for k, v in paired["images"].items()}


def test_rewards_are_registered_as_plugins_with_their_inputs(rewards: dict[str, RewardModel]) -> None:
    registry = build_registry()
    for name in REWARDS:
        assert registry.rewards.provider(name) == name
    assert rewards["shapes-alignment"].inputs == frozenset({"image", "caption"})
    assert rewards["shapes-aesthetic"].inputs == frozenset({"image"})
    assert rewards["shapes-sharpness"].inputs == frozenset({"image"})
    for plugin in registry.plugins:
        if plugin.name in REWARDS:
            assert plugin.error is None and plugin.distribution == f"miro-reward-{plugin.name}"


def test_scores_are_in_unit_range(rewards: dict[str, RewardModel], paired: dict[str, object]) -> None:
    for reward in rewards.values():
        for values in _by_set(reward, paired).values():
            assert np.all((values >= 0.0) & (values <= 1.0))


def test_sharpness_ranks_clean_above_blur_and_noise(rewards: dict[str, RewardModel], paired: dict) -> None:
    s = _by_set(rewards["shapes-sharpness"], paired)
    for damaged in ("blur", "noise"):
        assert s["clean"].mean() > s[damaged].mean() + 0.25, damaged
        assert np.mean(s["clean"] > s[damaged]) > 0.97, damaged
    # it measures edges only: contrast and colour changes leave it nearly unchanged
    for other in ("low_contrast", "washed_out"):
        assert abs(s["clean"].mean() - s[other].mean()) < 0.05, other


def test_aesthetic_ranks_clean_above_low_contrast_and_washed_out(rewards: dict, paired: dict) -> None:
    a = _by_set(rewards["shapes-aesthetic"], paired)
    for damaged in ("low_contrast", "washed_out"):
        assert a["clean"].mean() > a[damaged].mean() + 0.25, damaged
        assert np.mean(a["clean"] > a[damaged]) > 0.97, damaged


def test_aesthetic_does_not_reward_noise(rewards: dict[str, RewardModel], paired: dict) -> None:
    a = _by_set(rewards["shapes-aesthetic"], paired)
    assert a["noise"].mean() < a["clean"].mean()
    assert np.mean(a["noise"] > a["clean"] + 0.01) < 0.02


def test_alignment_ranks_matching_above_mismatched(rewards: dict[str, RewardModel], paired: dict) -> None:
    alignment = rewards["shapes-alignment"]
    clean = paired["images"]["clean"]
    matching = _scores(alignment, clean, paired["captions"])
    mismatched = _scores(alignment, clean, paired["mismatched"])
    assert matching.mean() > 0.95 and mismatched.mean() < 0.4
    assert np.mean(matching > mismatched) > 0.8
    assert np.all(matching >= mismatched)
    # it measures content, not quality: degraded images with their own caption still score high
    for name in NAMES:
        assert _scores(alignment, paired["images"][name], paired["captions"]).mean() > 0.9, name


def test_alignment_is_nan_for_unparseable_captions(rewards: dict[str, RewardModel], paired: dict) -> None:
    image = paired["images"]["clean"][0]
    values = rewards["shapes-alignment"].score([image, image], ["a dog on a skateboard", paired["captions"][0]])
    assert math.isnan(values[0]) and values[1] == 1.0
    with pytest.raises(ValueError):
        rewards["shapes-alignment"].score([image], [])


def test_generated_looking_images(rewards: dict[str, RewardModel], paired: dict) -> None:
    captions = paired["captions"][:60]
    probes = {kind: probe_images(kind, 60, seed=1) for kind in ("blocky", "blobs", "noise")}
    means = {kind: {n: _scores(r, imgs, captions).mean() for n, r in rewards.items()} for kind, imgs in probes.items()}
    clean = {n: _scores(r, paired["images"]["clean"][:60], captions).mean() for n, r in rewards.items()}
    # pure noise scores low on all three
    assert means["noise"]["shapes-alignment"] < 0.05
    assert means["noise"]["shapes-aesthetic"] < 0.3
    assert means["noise"]["shapes-sharpness"] < 0.1
    # blurry blobs are not sharp; patch artefacts and blobs do not match captions
    assert means["blobs"]["shapes-sharpness"] < clean["shapes-sharpness"] - 0.3
    assert means["blobs"]["shapes-aesthetic"] < clean["shapes-aesthetic"] - 0.2
    assert means["blocky"]["shapes-alignment"] < 0.2 and means["blobs"]["shapes-alignment"] < 0.3


@pytest.mark.parametrize("name", REWARDS)
def test_odd_inputs_do_not_crash_and_are_not_modified(rewards: dict[str, RewardModel], name: str) -> None:
    base = to_image(render_array(sample_scene(random.Random("odd"))))
    caption = sample_scene(random.Random("odd")).caption
    images = [
        base.convert("L"),
        base.convert("RGBA"),
        base.convert("P"),
        base.convert("1"),
        base.resize((48, 20)),
        base.resize((64, 64), Image.Resampling.BICUBIC),
        base.resize((3, 3)),
        Image.new("RGB", (32, 32), (128, 128, 128)),
    ]
    before = [(im.mode, im.size, im.tobytes()) for im in images]
    values = rewards[name].score(images, [caption] * len(images))
    assert len(values) == len(images)
    assert all(math.isnan(v) or 0.0 <= v <= 1.0 for v in values)
    assert [(im.mode, im.size, im.tobytes()) for im in images] == before
    assert rewards[name].score([], []) == []
    unreadable = [Image.new("RGB", (0, 0)), Image.frombytes("La", (8, 8), bytes(128))]  # PIL cannot make RGB of La
    assert all(math.isnan(v) for v in rewards[name].score(unreadable, [caption] * 2))
    if name != "shapes-alignment":  # the colour-blind copies carry no colour for the caption to match
        assert abs(values[5] - rewards[name].score([base], [caption])[0]) < 0.15  # 64x64 upscale ~ same score


@pytest.mark.parametrize("name", REWARDS)
def test_batch_scores_equal_single_scores(rewards: dict[str, RewardModel], paired: dict, name: str) -> None:
    images = paired["images"]["noise"][:6] + paired["images"]["clean"][:6]
    captions = (paired["captions"][:6]) * 2
    together = rewards[name].score(images, captions)
    alone = [rewards[name].score([im], [c])[0] for im, c in zip(images, captions, strict=True)]
    assert np.allclose(together, alone)


@pytest.mark.parametrize("name", REWARDS)
def test_prepare_then_score_prepared_is_score(rewards: dict[str, RewardModel], paired: dict[str, object], name: str):
    """The split annotation uses (prepare in the workers, score_prepared in the main process) changes nothing."""
    reward = rewards[name]
    assert type(reward).prepares_in_workers()
    images = paired["images"]["blur"][:24] + paired["images"]["clean"][:24]
    captions = (paired["captions"][:24] + paired["mismatched"][:24])
    unloaded = type(reward)(reward.options)  # what a DataLoader worker holds
    prepared = [unloaded.prepare(image, caption) for image, caption in zip(images, captions)]
    np.testing.assert_array_equal(reward.score_prepared(prepared), reward.score(images, captions))


@pytest.mark.parametrize("name", REWARDS)
def test_huge_images_are_shrunk_before_any_full_resolution_work(rewards: dict[str, RewardModel], name: str):
    """A 4096x4096 copy of a 32x32 scene scores like the scene, in a fraction of a second."""
    import time

    scenes = [sample_scene(random.Random(f"huge:{i}")) for i in range(3)]
    small = [to_image(render_array(s)) for s in scenes]
    huge = [image.resize((4096, 4096), Image.Resampling.NEAREST) for image in small]
    captions = [s.caption for s in scenes]
    start = time.perf_counter()
    scores = rewards[name].score(huge, captions)
    assert time.perf_counter() - start < 5.0
    np.testing.assert_allclose(scores, rewards[name].score(small, captions), atol=0.02)


@pytest.mark.parametrize("mode", ["I;16", "F", "LA", "P", "CMYK", "RGBA"])
def test_unusual_modes_are_scored_as_the_picture_they_show(rewards: dict[str, RewardModel], mode: str) -> None:
    """High bit depth is rescaled (not clipped to white or black) before any shapes reward looks at it."""
    scene = sample_scene(random.Random("modes"))
    rgb = to_image(render_array(scene))
    grey = rgb.convert("L")
    if mode == "I;16":
        image, reference = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257, mode="I;16"), grey
    elif mode == "F":
        image, reference = Image.fromarray(np.asarray(grey).astype(np.float32) / 255.0, mode="F"), grey
    elif mode == "LA":
        image, reference = grey.convert("LA"), grey
    elif mode == "P":
        image = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        reference = image.convert("RGB")
    else:
        image, reference = rgb.convert(mode), rgb.convert(mode).convert("RGB")
    for name in ("shapes-aesthetic", "shapes-sharpness"):
        got, want = rewards[name].score([image, reference], ["", ""])
        assert got == pytest.approx(want, abs=1e-6), (name, mode)
