"""The plugins against the recorded scores of the upstream reference scorers, on every image mode.

The records (tests/rewards/reference/records/*.json) were made by scripts/reference_rewards/record.py in
each reference's own environment (hpsv2 1.2.0; the improved-aesthetic-predictor recipe on the OpenAI
``clip`` package; PickScore's README recipe on transformers 4.27.3; image-reward 1.5; t2v_metrics 3.0),
from seeded weights at a small size (docs/rewards.md, "Reference comparison"). Here the same weights are
rebuilt in each release's file layout, loaded through the registry with default options, and every
(image, caption) pair the reference scored must agree to 1e-5 of the score scale. Pairs the reference
refused (it raised) or misread (transformers' channel-order guess on 1- and 3-pixel-high images) are
documented departures: the plugin must still give a finite score there.
"""

from __future__ import annotations

import math

import pytest
from reference_layouts import SCALING, WRITERS, fx, load_record

TOLERANCE = 1e-5


def plugin_scores(registry, reward: str, record: dict, tmp_path) -> list[float]:
    options = WRITERS[reward](record, tmp_path)
    plugin = registry.rewards.create(reward, {**options, "batch_size": 64})
    plugin.load("cpu", "float32")
    images = {p.name: fx.open_image(p) for p in fx.image_files()}
    captions = record["captions"]
    rows = record["scores"]
    return plugin.score([images[r[0]] for r in rows], [captions[r[1]] if r[1] is not None else "" for r in rows])


HEAVY = {"aesthetic", "imagereward", "vqascore"}  # 8-15 s each on one thread (ImageReward's fixed 224 px input)


@pytest.mark.parametrize(
    "reward", [pytest.param(r, marks=pytest.mark.slow) if r in HEAVY else r for r in sorted(SCALING)]
)
def test_plugin_reproduces_reference_scores(registry, reward, tmp_path):
    record = load_record(reward)
    assert record["images_sha256"] == fx.file_digest(fx.image_files()), "the committed images changed: re-record"
    if record["captions"] is not None:
        assert record["captions"] == fx.CAPTIONS, "the captions changed: re-record"
    ours = plugin_scores(registry, reward, record, tmp_path)
    misread = set(record.get("misread_channels") or [])
    worst, compared, departures = 0.0, 0, 0
    modes = set()
    for (image, caption, value, error), mine in zip(record["scores"], ours):
        assert math.isfinite(mine), (image, caption)
        if error is not None or image in misread:
            departures += 1
            continue
        expected = SCALING[reward](value)
        diff = abs(mine - expected)
        worst = max(worst, diff)
        compared += 1
        modes.add(fx.open_image(fx.IMAGES / image).mode)
        assert diff <= TOLERANCE, f"{reward} {image} caption {caption}: plugin {mine!r} vs reference {expected!r}"
        if reward == "vqascore":  # tiny random models give P(Yes) ~ 1e-3: check the cross-entropy itself too
            assert abs(math.log(mine) - math.log(expected)) <= 1e-4, (image, caption, mine, expected)
    assert compared >= len(record["scores"]) - 60
    every_mode = {"RGB", "RGBA", "LA", "P", "L", "1", "CMYK", "F", "I", "I;16"}
    assert every_mode - ({"RGBA"} if reward == "hpsv2" else set()) <= modes | {"I"}, modes  # HPSv2 raises on RGBA
    print(f"{reward}: {compared} pairs equal to the reference (max |diff| {worst:.2e}), {departures} departures")


def plugin_token_ids(reward: str, plugin, caption: str) -> list[int]:
    prepared = plugin.prepare(fx.open_image(fx.IMAGES / "rgb_2x2.png"), caption)
    if reward == "hpsv2":
        return prepared["tokens"].tolist()
    if reward == "vqascore":
        return prepared["before"] + [-200] + prepared["after"]
    return prepared["input_ids"]


@pytest.mark.parametrize("reward", ["hpsv2", "pickscore", "sciscore", "imagereward", "vqascore"])
def test_plugin_tokenizes_like_reference(registry, reward, tmp_path):
    """Exact token ids for every awkward caption (unicode, emoji, special-token look-alikes, very long)."""
    record = load_record(reward)
    options = WRITERS[reward](record, tmp_path)
    plugin = registry.rewards.create(reward, options)  # prepare() needs no weights: nothing is loaded
    for caption, expected in zip(record["captions"], record["token_ids"]):
        if reward == "vqascore" and expected.count(-200) != 1:
            continue  # a caption holding "<image>": the reference raises; the plugin reads it as text
        assert plugin_token_ids(reward, plugin, caption) == expected, caption
    if reward == "vqascore":
        assert plugin.prepare(fx.open_image(fx.IMAGES / "rgb_2x2.png"), "x")["label"] == record["label_ids"]
    assert not plugin.loaded
