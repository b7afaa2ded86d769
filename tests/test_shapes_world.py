"""The shapes world: generator determinism and statistics, caption grammar, detector and verifier."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

from miro_core.shapes.captions import (
    KINDS,
    CaptionParseError,
    Claim,
    ObjectRef,
    benchmark_prompts,
    caption_kind,
    parse_caption,
    parse_plan,
)
from miro_core.shapes.degrade import NAMES, apply_degradation, make_degradation
from miro_core.shapes.detect import UNKNOWN, detect_shapes
from miro_core.shapes.geometry import Box, relation_holds
from miro_core.shapes.recognition import recognise
from miro_core.shapes.render import draw_objects, place, to_image
from miro_core.shapes.scene import SceneObject
from miro_core.shapes.verify import verify
from miro_core.shapes.world import ShapesSample, generate, make_sample

LIGHT = (0.85, 0.85, 0.85)
DARK = (0.15, 0.15, 0.15)


@pytest.fixture(scope="module")
def world() -> list[ShapesSample]:
    return list(generate(1200, seed=11))


def _scene(*objects: SceneObject, background: tuple[float, float, float] = LIGHT, size: int = 32) -> Image.Image:
    return to_image(draw_objects(objects, size, background))


# --- generator -------------------------------------------------------------------------------------


def test_generation_is_deterministic_per_seed_and_index() -> None:
    first = list(generate(30, seed=5))
    second = list(generate(30, seed=5))
    for a, b in zip(first, second, strict=True):
        assert a.key == b.key and a.caption == b.caption and a.meta == b.meta
        assert a.image.tobytes() == b.image.tobytes()
    # any index regenerates alone, and through a start offset
    alone = make_sample(17, seed=5)
    assert alone.image.tobytes() == first[17].image.tobytes() and alone.caption == first[17].caption
    shifted = list(generate(3, seed=5, start=17))
    assert [s.key for s in shifted] == ["00000017", "00000018", "00000019"]
    assert shifted[0].meta == first[17].meta
    other = list(generate(30, seed=6))
    assert sum(a.caption != b.caption for a, b in zip(first, other, strict=True)) > 20


def test_samples_are_rgb_squares_with_json_meta(world: list[ShapesSample]) -> None:
    for sample in world[:50]:
        assert sample.image.mode == "RGB" and sample.image.size == (32, 32)
        json.dumps(sample.meta)
        assert sample.key == f"{sample.meta['index']:08d}"
    big = next(generate(1, seed=1, image_size=64))
    assert big.image.size == (64, 64)


def test_all_caption_kinds_are_present_and_match_the_text(world: list[ShapesSample]) -> None:
    kinds = {s.meta["true_kind"] for s in world}
    assert kinds == set(KINDS)
    for sample in world[:300]:
        assert caption_kind(sample.caption) == sample.meta["kind"]
        assert caption_kind(sample.meta["true_caption"]) == sample.meta["true_kind"]


def test_degraded_and_mismatched_fractions_follow_the_request(world: list[ShapesSample]) -> None:
    degraded = np.mean([s.meta["degradation"] is not None for s in world])
    mismatched = np.mean([s.meta["mismatched"] for s in world])
    assert abs(degraded - 0.5) < 0.05
    assert abs(mismatched - 0.2) < 0.04
    assert {s.meta["degradation"] for s in world} == {None, *NAMES}
    for sample in world:
        assert (sample.caption != sample.meta["true_caption"]) == sample.meta["mismatched"]
    clean = list(generate(100, seed=2, degraded_fraction=0.0, mismatched_fraction=0.0))
    assert all(s.meta["degradation"] is None and s.caption == s.meta["true_caption"] for s in clean)
    everything = list(generate(50, seed=2, degraded_fraction=1.0, mismatched_fraction=1.0))
    assert all(s.meta["degradation"] and s.meta["mismatched"] for s in everything)
    with pytest.raises(ValueError):
        next(generate(1, degraded_fraction=1.5))


def test_scenes_match_their_true_caption_exactly(world: list[ShapesSample]) -> None:
    for sample in world:
        objects = sample.meta["objects"]
        assert 1 <= len(objects) <= 4
        boxes = [Box(*o["bbox"]) for o in objects]
        for i, a in enumerate(boxes):
            assert 0 <= a.x0 and a.x1 <= 32 and 0 <= a.y0 and a.y1 <= 32
            assert 7 <= a.width <= 16
            assert not any(a.expanded(2.0).intersects(b) for b in boxes[i + 1 :]), "objects overlap"
        plan = parse_plan(sample.meta["true_caption"])
        for claim in plan.claims():
            matching = [o for o in objects if claim.subject.matches(o["shape"], o["colour"])]
            if claim.kind == "count":
                assert len(matching) == claim.count == len(objects)
            elif claim.kind == "exists":
                assert len(matching) >= claim.count
            else:
                others = [Box(*o["bbox"]) for o in objects if claim.other.matches(o["shape"], o["colour"])]
                assert any(relation_holds(Box(*m["bbox"]), b, claim.relation) for m in matching for b in others)


def test_max_objects_limits_scenes_and_kinds() -> None:
    single = list(generate(60, seed=3, max_objects=1))
    assert {s.meta["true_kind"] for s in single} == {"single_object", "colours"}
    assert all(len(s.meta["objects"]) == 1 for s in single)
    crowded = list(generate(400, seed=3, max_objects=6, degraded_fraction=0.0, mismatched_fraction=0.0))
    assert max(len(s.meta["objects"]) for s in crowded) == 6
    assert np.mean([verify(s.image, s.caption).score for s in crowded if len(s.meta["objects"]) >= 5]) > 0.9
    with pytest.raises(ValueError):
        next(generate(1, max_objects=0))


def test_generation_is_fast() -> None:
    start = time.perf_counter()
    count = sum(1 for _ in generate(300, seed=9))
    rate = count / (time.perf_counter() - start)
    assert rate > 250, f"{rate:.0f} samples/s (measured ~2500/s on an idle 2-core CPU)"


# --- caption grammar -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "claims"),
    [
        ("a circle", "single_object", [Claim("exists", ObjectRef("circle"))]),
        ("a red circle", "colours", [Claim("exists", ObjectRef("circle", "red"))]),
        ("three green triangles", "counting", [Claim("count", ObjectRef("triangle", "green"), count=3)]),
        ("A photo of 2 squares.", "counting", [Claim("count", ObjectRef("square"), count=2)]),
        (
            "a circle and a square",
            "two_objects",
            [Claim("exists", ObjectRef("circle")), Claim("exists", ObjectRef("square"))],
        ),
        (
            "a red circle and a blue square",
            "colour_attribution",
            [Claim("exists", ObjectRef("circle", "red")), Claim("exists", ObjectRef("square", "blue"))],
        ),
        ("a red square and a red square", "colour_attribution", [Claim("exists", ObjectRef("square", "red"), 2)]),
        (
            "a red circle left of a yellow square",
            "position",
            [
                Claim("exists", ObjectRef("circle", "red")),
                Claim("exists", ObjectRef("square", "yellow")),
                Claim("relation", ObjectRef("circle", "red"), relation="left of", other=ObjectRef("square", "yellow")),
            ],
        ),
        (
            "a triangle to the right of a circle",
            "position",
            [
                Claim("exists", ObjectRef("triangle")),
                Claim("exists", ObjectRef("circle")),
                Claim("relation", ObjectRef("triangle"), relation="right of", other=ObjectRef("circle")),
            ],
        ),
    ],
)
def test_each_caption_kind_parses_to_its_claims(text: str, kind: str, claims: list[Claim]) -> None:
    assert parse_caption(text) == claims
    assert caption_kind(text) == kind


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello world",
        "a red",
        "a pink circle",
        "three",
        "a circle and",
        "a circle near a square",
        "a circle and a square and a triangle",
        "zero circles",
        "circle",
    ],
)
def test_text_outside_the_grammar_raises_caption_parse_error(text: str) -> None:
    with pytest.raises(CaptionParseError):
        parse_caption(text)


def test_generated_captions_round_trip(world: list[ShapesSample]) -> None:
    for sample in world[:300]:
        assert parse_plan(sample.caption).text() == sample.caption


def test_benchmark_prompts_are_fixed_parseable_and_of_their_category() -> None:
    prompts = benchmark_prompts(per_category=10, seed=0)
    assert list(prompts) == list(KINDS)
    assert prompts == benchmark_prompts(per_category=10, seed=0)
    assert prompts != benchmark_prompts(per_category=10, seed=1)
    for category, texts in prompts.items():
        assert len(texts) == 10
        assert all(caption_kind(t) == category for t in texts)
    assert len(set(prompts["colour_attribution"])) == 10
    assert set(prompts["single_object"]) == {"a circle", "a square", "a triangle"}


# --- detector and verifier -------------------------------------------------------------------------


def test_detector_finds_shapes_and_colours_on_hand_made_scenes() -> None:
    for background in (LIGHT, DARK):
        image = _scene(
            place("circle", "red", 2.5, 2.25, 11),
            place("square", "cyan", 18, 3, 10),
            place("triangle", "purple", 3, 18, 12),
            place("circle", "yellow", 19.5, 19.5, 9),
            background=background,
        )
        found = {(d.shape, d.colour) for d in detect_shapes(image)}
        assert found == {("circle", "red"), ("square", "cyan"), ("triangle", "purple"), ("circle", "yellow")}


def test_detector_ignores_tiny_blobs_and_calls_misfits_unknown() -> None:
    tiny = _scene(place("square", "red", 10, 10, 3))
    assert detect_shapes(tiny) == []
    bar = np.full((32, 32, 3), 0.85, dtype=np.float32)
    bar[14:19, 3:29] = (0.2, 0.3, 0.9)  # a 26x5 bar
    ell = np.full((32, 32, 3), 0.85, dtype=np.float32)
    ell[4:28, 4:10] = ell[22:28, 4:28] = (0.9, 0.15, 0.2)  # an L
    for image in (bar, ell):
        detections = detect_shapes(image)
        assert len(detections) == 1 and detections[0].shape == UNKNOWN


def test_recognition_counts_known_shapes_among_detected_objects() -> None:
    scene = _scene(place("circle", "red", 2.5, 2.25, 11), place("square", "cyan", 18, 3, 10))
    bar = np.full((32, 32, 3), 0.85, dtype=np.float32)
    bar[14:19, 3:29] = (0.2, 0.3, 0.9)
    blank = np.full((32, 32, 3), 0.5, dtype=np.float32)
    counts = recognise([scene, bar, blank])
    assert (counts.images, counts.objects, counts.recognised) == (3, 3, 2)
    assert counts.share == pytest.approx(2 / 3)
    assert counts.as_json() == {"images": 3, "objects": 3, "recognised": 2, "share": 0.6667}
    nothing = recognise([blank])
    assert np.isnan(nothing.share) and nothing.as_json()["share"] is None


def test_verifier_scores_matching_captions_high_and_mismatched_low(world: list[ShapesSample]) -> None:
    clean = [s for s in world if s.meta["degradation"] is None]
    degraded = [s for s in world if s.meta["degradation"] is not None and not s.meta["mismatched"]]
    matching = [verify(s.image, s.caption).score for s in clean if not s.meta["mismatched"]]
    mismatched = [verify(s.image, s.caption).score for s in clean if s.meta["mismatched"]]
    assert np.mean(matching) > 0.95
    assert np.mean(mismatched) < 0.4
    assert np.mean([verify(s.image, s.caption).score for s in degraded[:200]]) > 0.9


def test_counting_claims_are_exact() -> None:
    image = _scene(
        place("circle", "red", 2, 2, 10), place("circle", "red", 19, 3, 10), place("circle", "red", 10, 19, 10)
    )
    assert verify(image, "three red circles").passed
    assert not verify(image, "two red circles").passed
    assert not verify(image, "four red circles").passed
    assert verify(image, "three circles").passed
    assert not verify(image, "three blue circles").passed
    assert verify(image, "a red circle").passed
    result = verify(image, "three squares")
    assert result.kind == "counting" and result.score == 0.0 and result.claims[0].matches == 0


@pytest.mark.parametrize(
    ("objects", "true", "false"),
    [
        (
            [place("circle", "red", 2, 11, 10), place("square", "blue", 19, 12, 10)],
            "a red circle left of a blue square",
            "a red circle right of a blue square",
        ),
        (
            [place("triangle", "green", 11, 2, 11), place("circle", "yellow", 12, 19, 10)],
            "a green triangle above a yellow circle",
            "a green triangle below a yellow circle",
        ),
        (
            [place("square", "purple", 18, 18, 11), place("square", "cyan", 3, 3, 11)],
            "a purple square below a cyan square",
            "a purple square above a cyan square",
        ),
    ],
)
def test_position_claims_are_judged_on_hand_made_scenes(objects: list[SceneObject], true: str, false: str) -> None:
    image = _scene(*objects)
    good, bad = verify(image, true), verify(image, false)
    assert good.passed and good.kind == "position" and good.score == 1.0
    assert [r.holds for r in bad.claims] == [True, True, False]
    assert bad.score == pytest.approx(2 / 3)
    assert bad.as_json()["claims"][2]["holds"] is False


def test_verifier_survives_each_degradation_on_a_hand_made_scene() -> None:
    pixels = draw_objects([place("circle", "red", 2, 11, 10), place("triangle", "blue", 19, 11, 10)], 32, LIGHT)
    caption = "a red circle left of a blue triangle"
    rng = np.random.default_rng(0)
    for name in NAMES:
        degraded = to_image(apply_degradation(pixels, make_degradation(name, 0.7), rng))
        assert verify(degraded, caption).score == 1.0, name


def test_verifier_rejects_unparseable_captions() -> None:
    with pytest.raises(CaptionParseError):
        verify(_scene(place("circle", "red", 10, 10, 10)), "a dog on a skateboard")
