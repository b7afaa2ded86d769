"""Bad data and environment faults never stop annotation or poison what follows (issues 14 and 15).

Every case of the fault corpus (tests/fault_corpus.py) is checked here: unreadable shards, duplicate keys,
unusable samples, non-finite and malformed reward outputs, rewards that modify their inputs, oversized and
high-bit-depth images, a second writer, leftovers of killed runs, environment faults and out-of-range
options. Rewards are tiny classes defined here; annotation runs in-process (``workers=0``) unless a test
is about workers.
"""

from __future__ import annotations

import errno
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from miro_cli.main import app
from miro_core.annotate import AnnotateConfig, Annotator
from miro_core.annotation.config import EXIT_DATA_SKIPPED, EXIT_ERROR, EXIT_OK
from miro_core.errors import ConfigError, DataError, OutputLockedError, RewardContractError, StorageError
from miro_core.image_modes import to_rgb8
from miro_core.records.layout import read_records
from miro_core.rewards import RewardModel

from . import fault_corpus as fc


# -- rewards ---------------------------------------------------------------------------------------------
class MeanRed(RewardModel):
    """Mean red intensity in [0, 1]: any change to the pixels changes it."""

    name = "mean-red"

    def score(self, images, captions):
        return [float(np.asarray(to_rgb8(image))[..., 0].mean() / 255.0) for image in images]


class ByCaption(RewardModel):
    """Returns whatever the caption's last word names: how a buggy plugin's values look."""

    name = "by-caption"
    VALUES = {"inf": math.inf, "minusinf": -math.inf, "none": None, "text": "abc", "bool": True, "nan": math.nan}

    def score(self, images, captions):
        return [self.VALUES.get(c.split()[-1], 0.5) for c in captions]


class Mutator(RewardModel):
    """Does every in-place change Pillow allows to the images it is given, and reorders the list."""

    name = "mutator"

    def score(self, images, captions):
        from PIL import ImageDraw

        for i, image in enumerate(images):
            image.frombytes(bytes(len(image.tobytes())))  # Pillow does not guard this one for read-only images
            ImageDraw.Draw(image).rectangle((0, 0, image.width, image.height), fill=(0, 0, 255))
            image.putpixel((0, 0), (0, 255, 0))
            image.paste((0, 0, 0), (0, 0, 4, 4))
            image.thumbnail((4, 4))
            images[i] = Image.new("RGB", (8, 8))
        images.reverse()
        return [0.0] * len(images)


class AlwaysFails(RewardModel):
    name = "fragile"

    def score(self, images, captions):
        raise RuntimeError("weights not found at /nowhere")


class Fixed(RewardModel):
    """The same names as the broken rewards, fixed."""

    name = "fragile"

    def score(self, images, captions):
        return [0.25] * len(images)


def breaking(name: str, result):
    """A reward named ``name`` that returns ``result(n)`` for batches whose captions say 'break'."""

    class Breaking(RewardModel):
        def score(self, images, captions):
            if any("break" in c for c in captions):
                return result(len(images))
            return [0.5] * len(images)

    Breaking.name = name
    return Breaking


def annotate(data: Path, out: Path, rewards: list[RewardModel], **options):
    options.setdefault("workers", 0)
    cfg = AnnotateConfig(data=str(data), out=str(out), rewards=[r.name for r in rewards], **options)
    return Annotator(cfg, rewards).run()


def rows(out: Path) -> list[dict]:
    found = []
    for table in sorted((out / "scores").glob("*.parquet")):
        found += pq.read_table(table).to_pylist()
    return found


def errors(out: Path) -> list[dict]:
    found = []
    for table in sorted((out / "errors").glob("*.parquet")):
        found += pq.read_table(table).to_pylist()
    return found


# -- shards ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loading", ["all", "sequential"])
def test_unreadable_shards_are_recorded_and_every_other_shard_is_scored(tmp_path: Path, loading: str):
    data, expected = fc.mixed_dataset(tmp_path / "data")
    report = annotate(data, tmp_path / "out", [MeanRed()], reward_loading=loading, batch_size=2, flush_every=1)
    scored: dict[str, int] = {}
    for row in rows(tmp_path / "out"):
        shard = Path(row["shard"]).stem
        scored[shard] = scored.get(shard, 0) + 1
    assert {k: v for k, v in expected.items() if v} == scored, "samples read before a fault are kept"
    shard_errors = {Path(e["shard"]).stem: e for e in errors(tmp_path / "out") if e["stage"] == "shard"}
    broken = {name for name in expected if name.startswith("b-")}
    assert set(shard_errors) == broken
    assert all(e["key"] is None for e in shard_errors.values())
    assert "truncated" in shard_errors["b-truncated_mid_member"]["reason"]
    assert "empty" in shard_errors["b-zero_bytes"]["reason"]
    assert "not a tar archive" in shard_errors["b-random_bytes"]["reason"]
    assert "end-of-archive" in shard_errors["b-no_end_marker"]["reason"]
    assert "corrupt" in shard_errors["b-garbage_after"]["reason"]
    assert report.status == EXIT_DATA_SKIPPED
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["shards"] == {"total": 8, "finished": 8, "unreadable": 6, "pending": 0}
    assert {s["shard"] for s in summary["skipped_shards"]} == broken


def test_a_rerun_does_not_retry_unreadable_shards_unless_asked(tmp_path: Path):
    data, expected = fc.mixed_dataset(tmp_path / "data")
    out = tmp_path / "out"
    annotate(data, out, [MeanRed()])
    again = annotate(data, out, [MeanRed()])
    assert again.stats.samples == 0 and again.status == EXIT_DATA_SKIPPED, "nothing is read again"
    # The broken shard is replaced by a complete one: --retry-errors reads it again, the rest stays.
    fc.write(data / "b-truncated_mid_member.tar", fc.tar_bytes(fc.good_members("b", 6)))
    retried = annotate(data, out, [MeanRed()], retry_errors=True)
    keys = [r["key"] for r in rows(out) if Path(r["shard"]).stem == "b-truncated_mid_member"]
    assert sorted(keys) == [f"b{i:03d}" for i in range(6)] and len(keys) == len(set(keys))
    stages = [e for e in errors(out) if Path(e["shard"]).stem == "b-truncated_mid_member"]
    assert stages == [], "the fixed shard has no error left"
    assert retried.summary["shards"]["unreadable"] == 5
    assert retried.summary["samples"] == sum(expected.values()) + 3 + 1  # 3 more samples; no_end_marker's partial


def test_cli_exits_3_when_data_was_skipped(tmp_path: Path):
    data, _ = fc.mixed_dataset(tmp_path / "data")
    result = CliRunner().invoke(
        app, ["annotate", str(data), "--rewards", "shapes-sharpness", "--out", str(tmp_path / "out"), "--workers", "0"]
    )
    assert result.exit_code == EXIT_DATA_SKIPPED, result.output
    assert "could not be read" in result.output and "Traceback" not in result.output


def test_duplicate_keys_are_recorded_never_dropped(tmp_path: Path):
    payload, _ = fc.duplicate_key_shard()
    fc.write(tmp_path / "data" / "dup.tar", payload)
    report = annotate(tmp_path / "data", tmp_path / "out", [MeanRed()], batch_size=2)
    scored = {r["key"]: r["caption"] for r in rows(tmp_path / "out")}
    assert scored == {"k000": fc.CAPTION, "k001": fc.CAPTION, "k002": fc.CAPTION}, "the first sample of a key"
    duplicates = sorted((e["key"], e["reason"]) for e in errors(tmp_path / "out") if e["stage"] == "duplicate")
    assert [k for k, _ in duplicates] == ["k000", "k001"]
    assert "sample #4" in duplicates[0][1] and "sample #2" in duplicates[1][1]
    assert report.status == EXIT_OK


def test_every_unusable_sample_gets_its_reason(tmp_path: Path):
    payload, expected = fc.bad_samples_shard()
    fc.write(tmp_path / "data" / "bad.tar", payload)
    annotate(tmp_path / "data", tmp_path / "out", [MeanRed()])
    assert [r["key"] for r in rows(tmp_path / "out")] == ["ok"]
    reasons = {e["key"]: e["reason"] for e in errors(tmp_path / "out")}
    assert set(reasons) == set(expected)
    for key, fragment in expected.items():
        assert fragment in reasons[key], (key, reasons[key])


def test_error_reasons_are_reproducible(tmp_path: Path):
    payload, _ = fc.bad_samples_shard()
    fc.write(tmp_path / "data" / "bad.tar", payload)
    for name in ("a", "b"):
        annotate(tmp_path / "data", tmp_path / name, [MeanRed(), ByCaption()])
    first, second = errors(tmp_path / "a"), errors(tmp_path / "b")
    assert first == second and first
    assert not any("0x" in e["reason"] for e in first), "no memory addresses in reasons"


# -- reward outputs --------------------------------------------------------------------------------------
def by_caption_dataset(folder: Path) -> Path:
    members: fc.Members = []
    for word in ("good", "inf", "minusinf", "none", "text", "bool", "nan"):
        members += fc.sample(word, fc.png(), f"value {word}")
    fc.write(folder / "values.tar", fc.tar_bytes(members))
    return folder


def test_every_non_finite_or_non_float_score_is_a_row_error(tmp_path: Path):
    annotate(by_caption_dataset(tmp_path / "data"), tmp_path / "out", [ByCaption()])
    values = {r["key"]: r["by-caption"] for r in rows(tmp_path / "out")}
    assert values["good"] == 0.5
    assert all(math.isnan(values[k]) for k in ("inf", "minusinf", "none", "text", "bool", "nan"))
    reasons = {e["key"]: e["reason"] for e in errors(tmp_path / "out")}
    assert reasons == {
        "inf": "score is +inf, not a finite float",
        "minusinf": "score is -inf, not a finite float",
        "none": "score is None, not a float",
        "text": "score is a str ('abc'), not a float",
        "bool": "score is a bool (True), not a float",
        "nan": "score is NaN",
    }


def test_bins_and_levels_treat_non_finite_scores_as_missing_end_to_end(tmp_path: Path):
    from miro_core.bins import BinsFile

    annotate(by_caption_dataset(tmp_path / "data"), tmp_path / "out", [ByCaption(), MeanRed()])
    # A table written by another tool may hold infinities: they are missing too.
    extra = tmp_path / "out" / "scores" / "zz-foreign.parquet"
    pq.write_table(
        pq.read_table(next((tmp_path / "out" / "scores").glob("*.parquet"))).slice(0, 2).set_column(
            3, "by-caption", __import__("pyarrow").array([math.inf, -math.inf])
        ),
        extra,
    )
    bins_path = tmp_path / "bins.json"
    result = CliRunner().invoke(app, ["bins", "fit", str(tmp_path / "out"), "--out", str(bins_path), "--bins", "4"])
    assert result.exit_code == 0, result.output
    assert "9 scores (8 missing)" in result.output
    bins = BinsFile.load(str(bins_path))
    levels = bins.levels("by-caption", np.array([math.inf, -math.inf, math.nan, 0.5]))
    assert np.isnan(levels[:3]).all() and levels[3] == 0.0
    assert bins.stats["by-caption"]["missing"] == 8


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (lambda n: [0.5] * (n - 1), "returned 1 scores for 2 samples"),
        (lambda n: 0.5, "returned a single value (0.5)"),
        (lambda n: None, "returned None"),
        (lambda n: np.zeros((n, 1)), "array of shape (2, 1)"),
        (lambda n: {"score": 1.0}, "returned a dict"),
    ],
)
def test_contract_violations_fail_fast_naming_the_reward(tmp_path: Path, result, message):
    members = fc.good_members("a", 4) + [m for i in range(4) for m in fc.sample(f"z{i}", fc.png(), "please break")]
    fc.write(tmp_path / "data" / "s0.tar", fc.tar_bytes(members))
    broken = breaking("contract-breaker", result)()
    with pytest.raises(RewardContractError) as caught:
        annotate(tmp_path / "data", tmp_path / "out", [MeanRed(), broken], batch_size=2, flush_every=1)
    text = str(caught.value)
    assert message in text and "'contract-breaker'" in text and "one float per sample" in text
    assert len(rows(tmp_path / "out")) == 0 and list((tmp_path / "out" / "parts").rglob("rows-*.parquet"))
    # Fixed plugin, same name: the rerun keeps the saved rows and finishes the shard.
    fixed = breaking("contract-breaker", lambda n: [0.75] * n)()
    report = annotate(tmp_path / "data", tmp_path / "out", [MeanRed(), fixed], batch_size=2, flush_every=1)
    assert report.status == EXIT_OK and sorted(r["key"] for r in rows(tmp_path / "out")) == sorted(
        [f"a{i:03d}" for i in range(4)] + [f"z{i}" for i in range(4)]
    )


def test_cli_reports_a_contract_violation_in_one_line(tmp_path: Path, monkeypatch):
    import miro_cli.annotate_cmd as annotate_cmd
    from miro_core.plugins import build_registry

    registry = build_registry()
    registry.rewards.add(breaking("bad-length", lambda n: [0.5] * (n + 1)), "bad-length-plugin")
    monkeypatch.setattr(annotate_cmd, "registry", lambda warn=True: registry)
    fc.write(tmp_path / "data" / "s.tar", fc.tar_bytes(fc.sample("x", fc.png(), "do break")))
    result = CliRunner().invoke(
        app, ["annotate", str(tmp_path / "data"), "--rewards", "bad-length", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1
    assert "error:" in result.output and "returned 2 scores for 1 samples" in result.output
    assert "bad-length" in result.output and "Traceback" not in result.output


def test_a_reward_failing_every_row_exits_non_zero_and_retry_rescores(tmp_path: Path):
    fc.write(tmp_path / "data" / "s.tar", fc.tar_bytes(fc.good_members("r", 5)))
    out = tmp_path / "out"
    failed = annotate(tmp_path / "data", out, [MeanRed(), AlwaysFails()], batch_size=2)
    assert failed.status == EXIT_ERROR
    assert "failed on every one of its 5 samples" in failed.messages[0] and "--retry-errors" in failed.messages[0]
    assert "weights not found" in failed.messages[0]
    rerun = annotate(tmp_path / "data", out, [MeanRed(), Fixed()])
    assert rerun.stats.samples == 0 and rerun.status == EXIT_ERROR, "without --retry-errors nothing is re-scored"
    retried = annotate(tmp_path / "data", out, [MeanRed(), Fixed()], retry_errors=True)
    assert retried.status == EXIT_OK and retried.stats.samples == 5
    assert [r["fragile"] for r in rows(out)] == [0.25] * 5 and errors(out) == []
    assert retried.summary["samples"] == 5 and retried.summary["errors"] == 0


def test_rewards_cannot_corrupt_each_others_inputs(tmp_path: Path):
    fc.write(tmp_path / "data" / "s.tar", fc.tar_bytes(fc.good_members("m", 4)))
    before = annotate(tmp_path / "data", tmp_path / "a", [Mutator(), MeanRed()], batch_size=4)
    after = annotate(tmp_path / "data", tmp_path / "b", [MeanRed(), Mutator()], batch_size=4)
    first = [r["mean-red"] for r in rows(tmp_path / "a")]
    second = [r["mean-red"] for r in rows(tmp_path / "b")]
    assert first == second and min(first) > 0.5, "the mutations were never seen by the other reward"
    assert any("'mutator'" in w and "modified the images" in w for w in before.stats.warnings)
    assert any("'mutator'" in w for w in after.summary["warnings"])


def test_read_only_views_guard_every_in_place_write():
    """frombytes, putpalette and apply_transparency write into the shared pixels of a read-only image in
    Pillow 12; a view copies first, so the original is untouched and the view reports the change."""
    from miro_core.reward_contract import read_only_view, was_modified

    rgb = Image.new("RGB", (4, 4), (200, 10, 10))
    view = read_only_view(rgb)
    view.frombytes(bytes(48))
    assert rgb.getpixel((0, 0)) == (200, 10, 10) and view.getpixel((0, 0)) == (0, 0, 0) and was_modified([view])
    palette = Image.new("P", (4, 4))
    palette.putpalette([9, 8, 7] * 256)
    palette.info["transparency"] = 0
    for change in (lambda v: v.putpalette([255, 0, 0] * 256), lambda v: (v.apply_transparency(), v.load())):
        view = read_only_view(palette)
        change(view)
        assert palette.convert("RGB").getpixel((0, 0)) == (9, 8, 7) and was_modified([view])
    untouched = read_only_view(rgb)
    assert not was_modified([untouched]) and untouched.getpixel((0, 0)) == (200, 10, 10)


def _mutator_and_reader_registry():
    import types

    from miro_core.hookspecs import hookimpl
    from miro_core.plugins import build_registry

    def register_rewards(register):
        register(Mutator)
        register(MeanRed)

    module = types.ModuleType("mutating_plugin")
    module.MIRO_API = ">=1,<2"
    module.register_rewards = hookimpl(register_rewards)
    return build_registry(load_entry_points=False, extra_plugins=[("mutating", module)])


def test_eval_and_serve_rewards_cannot_corrupt_each_others_inputs():
    from miro_core.evaluation import score_choice
    from miro_core.run_rewards import RewardChoice
    from miro_core.serve_logic import Scorer

    registry = _mutator_and_reader_registry()
    images = [Image.new("RGB", (8, 8), (204, 0, 0)) for _ in range(3)]
    warnings: list[str] = []
    scores = score_choice(registry, RewardChoice(["mutator", "mean-red"], {}, origin="requested"), images,
                          ["a red square"] * 3, warn=warnings.append)
    assert list(scores["mean-red"]) == [0.8] * 3, "eval: the mutations were never seen by the next reward"
    assert len(warnings) == 1 and "mutator" in warnings[0] and "modified the images" in warnings[0]
    assert all(image.getpixel((0, 0)) == (204, 0, 0) for image in images), "the generated images are untouched"
    served = Scorer(registry, names=["mutator", "mean-red"]).score(images, "a red square")
    assert [s["mean-red"] for s in served] == [0.8] * 3, "serve: the same"
    assert all(image.getpixel((0, 0)) == (204, 0, 0) for image in images)


# -- images ----------------------------------------------------------------------------------------------
def test_decoding_is_capped_and_large_jpegs_are_decoded_smaller():
    from miro_core.data.decode import decode_image

    t0 = time.perf_counter()
    image, reason = decode_image(fc.huge_png(3000), max_pixels=1_000_000)
    assert image is None and "3000x3000" in reason and "cap of 1 Mpx" in reason
    assert time.perf_counter() - t0 < 1.0, "refused from the header, without decoding"
    image, reason = decode_image(fc.huge_jpeg(3000), max_pixels=1_000_000)
    assert reason is None and image.size == (750, 750), "libjpeg decoded it at 1/4 scale"
    image, reason = decode_image(fc.huge_jpeg(3000), max_pixels=10_000_000)
    assert reason is None and image.size == (3000, 3000), "under the cap: full size"


def test_annotation_caps_decoded_pixels(tmp_path: Path):
    members = fc.sample("big", fc.huge_png(1200)) + fc.sample("jpeg", fc.huge_jpeg(1200), ext="jpg")
    members += fc.sample("small", fc.png())
    fc.write(tmp_path / "data" / "s.tar", fc.tar_bytes(members))
    annotate(tmp_path / "data", tmp_path / "out", [MeanRed()], max_pixels=500_000)
    assert sorted(r["key"] for r in rows(tmp_path / "out")) == ["jpeg", "small"]
    (error,) = errors(tmp_path / "out")
    assert error["key"] == "big" and "--max-pixels" in error["reason"]


class RecordsModes(RewardModel):
    """Returns a code per image mode, to check that rewards receive images as decoded."""

    name = "modes"
    CODES = {"RGB": 1.0, "I;16": 2.0, "I": 2.0, "F": 3.0, "CMYK": 4.0, "LA": 5.0, "P": 6.0, "RGBA": 7.0}

    def score(self, images, captions):
        return [self.CODES.get(image.mode, 0.0) for image in images]


def test_rewards_receive_images_as_decoded_and_shapes_rewards_rescale_high_bit_depth(tmp_path: Path, registry):
    members: fc.Members = []
    for name, payload in fc.unusual_modes().items():
        members += fc.sample(name, payload, ext="tif" if name == "float" else "jpg" if name == "cmyk" else "png")
    fc.write(tmp_path / "data" / "modes.tar", fc.tar_bytes(members))
    shapes = [registry.rewards.create(n) for n in ("shapes-aesthetic", "shapes-sharpness", "shapes-alignment")]
    annotate(tmp_path / "data", tmp_path / "out", [RecordsModes(), *shapes])
    found = {r["key"]: r for r in rows(tmp_path / "out")}
    assert {k: v["modes"] for k, v in found.items()} == {
        "i16": 2.0, "float": 3.0, "cmyk": 4.0, "la": 5.0, "p_transparent": 6.0, "rgba": 7.0,
    }
    assert all(math.isfinite(r[n]) for r in found.values() for n in ("shapes-aesthetic", "shapes-sharpness"))
    assert errors(tmp_path / "out") == []


@pytest.mark.parametrize("name", ["shapes-aesthetic", "shapes-sharpness"])
def test_high_bit_depth_scores_equal_the_8bit_version(registry, name):
    reward = registry.rewards.create(name)
    eight = Image.fromarray(fc.gradient_8bit(), mode="L")
    sixteen = Image.open(__import__("io").BytesIO(fc.gradient_16bit_png()))
    floating = Image.open(__import__("io").BytesIO(fc.float_tiff()))
    scores = reward.score([eight, sixteen, floating], ["", "", ""])
    assert scores[0] == pytest.approx(scores[1], abs=1e-6) and scores[0] == pytest.approx(scores[2], abs=1e-6)
    assert np.array_equal(np.asarray(to_rgb8(sixteen)), np.asarray(eight.convert("RGB")))


# -- the output folder -----------------------------------------------------------------------------------
HOLD_LOCK = """
import sys, time
from miro_core.data.lock import OutputLock
OutputLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_one_writer_per_output_folder_and_stale_locks_are_recovered(tmp_path: Path):
    fc.write(tmp_path / "data" / "s.tar", fc.tar_bytes(fc.good_members("l", 2)))
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLockedError) as caught:
            annotate(tmp_path / "data", out, [MeanRed()])
        import socket

        assert f"pid {holder.pid} on host {socket.gethostname()}" in str(caught.value)
        assert not (out / "config.json").exists()
    finally:
        holder.kill()  # kill -9: the lock file stays behind, its flock is gone
        holder.wait()
    report = annotate(tmp_path / "data", out, [MeanRed()])
    assert report.status == EXIT_OK and [lock["pid"] for lock in report.stats.recovered_locks] == [holder.pid]
    assert len(rows(out)) == 2


def test_leftovers_of_killed_writes_are_cleaned(tmp_path: Path):
    fc.write(tmp_path / "data" / "s0.tar", fc.tar_bytes(fc.good_members("c", 2)))
    fc.write(tmp_path / "data" / "s1.tar", fc.tar_bytes(fc.good_members("d", 2)))
    out = tmp_path / "out"
    annotate(tmp_path / "data", out, [MeanRed()])
    # A kill at the end of s0 (after its table, before its parts were removed), and mid-write temporaries.
    (out / "parts" / "s0").mkdir(parents=True)
    (out / "parts" / "s0" / "rows-000000.parquet").write_bytes(b"x")
    (out / "scores" / "s1.parquet.tmp-1234abcd").write_bytes(b"x")
    (out / "errors" / "s0.parquet.tmp-deadbeef").write_bytes(b"x")
    report = annotate(tmp_path / "data", out, [MeanRed()])
    assert report.stats.cleaned_leftovers == 3
    assert not (out / "parts" / "s0").exists()
    assert not list(out.rglob("*.tmp-*"))


def test_summary_totals_the_whole_folder_across_runs(tmp_path: Path):
    fc.write(tmp_path / "data" / "s0.tar", fc.tar_bytes(fc.good_members("t", 3)))
    out = tmp_path / "out"
    annotate(tmp_path / "data", out, [MeanRed()])
    fc.write(tmp_path / "data" / "s1.tar", fc.tar_bytes(fc.good_members("u", 4)))
    second = annotate(tmp_path / "data", out, [MeanRed()])
    summary = json.loads((out / "summary.json").read_text())
    assert second.stats.samples == 4 and summary["samples"] == 7 and summary["runs"] == 2
    assert summary["images_per_second"] > 0 and 0 <= summary["device_wait_share"] <= 1


def test_config_is_written_only_after_inputs_are_validated(tmp_path: Path):
    out = tmp_path / "out"
    with pytest.raises(DataError, match="does not exist"):
        annotate(tmp_path / "missing", out, [MeanRed()])
    assert not (out / "config.json").exists()
    fc.write(tmp_path / "data" / "s.tar", fc.tar_bytes(fc.good_members("v", 2)))
    assert annotate(tmp_path / "data", out, [ByCaption()]).status == EXIT_OK, "another reward list is fine"
    result = CliRunner().invoke(app, ["annotate", str(tmp_path / "data"), "--rewards", "no-such", "--out", str(out)])
    assert result.exit_code == 1 and "no-such" in result.output


def test_config_records_each_rewards_provenance_and_options(tmp_path: Path):
    fc.write(tmp_path / "data" / "s.tar", fc.tar_bytes(fc.good_members("p", 2)))
    result = CliRunner().invoke(
        app,
        ["annotate", str(tmp_path / "data"), "--rewards", "shapes-aesthetic", "--out", str(tmp_path / "o"),
         "--reward-option", "shapes-aesthetic.working_size=16", "--workers", "0"],
    )
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    record = config["components"]["rewards"]["shapes-aesthetic"]
    assert record["distribution"] == "miro-reward-shapes-aesthetic" and record["distribution_version"]
    assert record["plugin"] == "shapes-aesthetic" and record["version"] == "1"
    assert record["options"]["working_size"] == 16 and "checkpoint" in record["options"]


# -- environment faults and options ----------------------------------------------------------------------
def test_output_in_memory_is_refused(tmp_path: Path):
    fc.write(tmp_path / "data" / "s.tar", fc.tar_bytes(fc.good_members("w", 1)))
    with pytest.raises(ConfigError, match="in-memory"):
        annotate(tmp_path / "data", "memory://annotations", [MeanRed()])


def test_missing_backend_and_unreachable_urls_name_the_url(tmp_path: Path):
    pytest.importorskip("fsspec")
    try:
        import s3fs  # noqa: F401
    except ImportError:
        with pytest.raises(StorageError, match="pip install s3fs"):
            annotate("s3://bucket/shards", tmp_path / "o", [MeanRed()])
    with pytest.raises(StorageError, match="cannot reach ftp://127.0.0.1:1/data"):
        annotate("ftp://127.0.0.1:1/data", tmp_path / "o", [MeanRed()])
    with pytest.raises(StorageError, match="unknown URL protocol"):
        annotate("nosuchproto://x/y", tmp_path / "o", [MeanRed()])
    assert not (tmp_path / "o").exists()


def _refuse_writes_under(monkeypatch, root: Path, code: int) -> None:
    """Make every write below ``root`` fail with ``code`` (EROFS, ENOSPC): a read-only or full disk."""
    import builtins
    import os

    real_open, real_os_open, real_makedirs = builtins.open, os.open, os.makedirs

    def inside(path) -> bool:
        return str(path).startswith(str(root))

    def fail(path):
        raise OSError(code, os.strerror(code), str(path))

    def fake_open(file, mode="r", *args, **kwargs):
        if inside(file) and any(c in mode for c in "wax+"):
            fail(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            fail(path)
        return real_os_open(path, flags, *args, **kwargs)

    def fake_makedirs(path, *args, **kwargs):
        if inside(path) and not os.path.isdir(path):
            fail(path)
        return real_makedirs(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "makedirs", fake_makedirs)


@pytest.mark.parametrize(("code", "message"), [(errno.EROFS, "read-only"), (errno.ENOSPC, "no space left")])
def test_read_only_and_full_disks_are_clear_errors(tmp_path: Path, monkeypatch, code: int, message: str):
    fc.write(tmp_path / "data" / "s.tar", fc.tar_bytes(fc.good_members("f", 1)))
    out = tmp_path / "out"
    _refuse_writes_under(monkeypatch, out, code)
    with pytest.raises(StorageError) as caught:
        annotate(tmp_path / "data", out, [MeanRed()])
    assert message in str(caught.value) and str(out) in str(caught.value)


@pytest.mark.parametrize(
    "arguments",
    [["--batch-size", "0"], ["--flush-every", "0"], ["--workers", "-1"], ["--max-pixels", "10"]],
)
def test_numeric_options_are_range_checked_before_data_is_read(tmp_path: Path, arguments):
    command = ["annotate", str(tmp_path / "nothing"), "--rewards", "shapes-sharpness", "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, command + arguments)
    assert result.exit_code == 2 and arguments[0] in result.output
    assert not (tmp_path / "o").exists()


def test_config_file_values_are_range_checked_before_data_is_read(tmp_path: Path):
    config = tmp_path / "annotate.yaml"
    config.write_text("batch_size: -4\nflush_every: 0\n")
    command = ["annotate", str(tmp_path / "nothing"), "--rewards", "shapes-sharpness", "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, [*command, "--config", str(config)])
    assert result.exit_code == 1 and "batch_size" in result.output and "does not exist" not in result.output
    with pytest.raises(Exception, match="greater than or equal to 1"):
        AnnotateConfig(data="d", out="o", rewards=["x"], batch_size=0)


def test_bins_options_are_range_checked(tmp_path: Path):
    for arguments in (["--bins", "1"], ["--sample", "0"], ["--bins", "100000"], ["--seed", str(2**64)]):
        result = CliRunner().invoke(app, ["bins", "fit", str(tmp_path), "--out", str(tmp_path / "b.json"), *arguments])
        assert result.exit_code == 2 and arguments[0] in result.output


def test_disk_full_while_writing_a_table_is_a_clear_error_and_keeps_finished_shards(tmp_path: Path, monkeypatch):
    import pyarrow.parquet as parquet

    fc.write(tmp_path / "data" / "s0.tar", fc.tar_bytes(fc.good_members("e", 2)))
    fc.write(tmp_path / "data" / "s1.tar", fc.tar_bytes(fc.good_members("g", 2)))
    out = tmp_path / "out"
    real_write = parquet.write_table
    calls = {"n": 0}

    def write_then_fill(table, where, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # s0's error and score tables fit; then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(table, where, *args, **kwargs)

    monkeypatch.setattr(parquet, "write_table", write_then_fill)
    with pytest.raises(StorageError, match="no space left") as caught:
        annotate(tmp_path / "data", out, [MeanRed()])
    assert "s1.parquet" in str(caught.value)
    monkeypatch.setattr(parquet, "write_table", real_write)
    assert [r["key"] for r in rows(out)] == ["e000", "e001"]
    assert annotate(tmp_path / "data", out, [MeanRed()]).summary["samples"] == 4


# -- an independent corpus (web-crawl shards, edited tables and bins, damaged runs): every command --------
def test_compressed_shards_are_read_whatever_their_extension(tmp_path: Path):
    shards = fc.compressed_shards()
    for file_name, (_, payload) in shards.items():
        fc.write(tmp_path / "data" / file_name, payload)
    report = annotate(tmp_path / "data", tmp_path / "out", [MeanRed()])
    assert report.status == EXIT_OK and not [e for e in errors(tmp_path / "out") if e["stage"] == "shard"]
    assert len(rows(tmp_path / "out")) == 15, "a .tar.gz, .tar.bz2 or .tar.xz in the folder is not skipped silently"
    assert sorted(p.stem for p in (tmp_path / "out" / "scores").glob("*.parquet")) == sorted(
        name for name, _ in shards.values()
    )
    fc.write(tmp_path / "data" / "z-tgz.tar", fc.tar_bytes(fc.good_members("d", 1)))
    with pytest.raises(DataError, match="two shards named 'z-tgz'"):
        annotate(tmp_path / "data", tmp_path / "again", [MeanRed()])


def test_links_strays_odd_names_and_non_utf8_captions_are_error_rows(tmp_path: Path):
    payload, expected = fc.special_members_shard()
    fc.write(tmp_path / "data" / "special.tar", payload)
    annotate(tmp_path / "data", tmp_path / "out", [MeanRed()])
    assert [r["key"] for r in rows(tmp_path / "out")] == ["good"]
    reasons = {e["key"]: e["reason"] for e in errors(tmp_path / "out")}
    assert set(reasons) == set(expected), "every member is the scored sample or an error row"
    for key, fragment in expected.items():
        assert fragment in reasons[key], (key, reasons[key])
    assert all(e["stage"] == "input" for e in errors(tmp_path / "out"))


def test_encode_keeps_the_samples_before_a_shard_fault_and_exits_3(tmp_path: Path):
    broken = fc.broken_shards("e")
    data = fc.write_dataset(tmp_path / "data", {
        "good": fc.tar_bytes(fc.good_members("g", 2)),
        "cut": broken["e-truncated_mid_member"][0],
        "empty": broken["e-zero_bytes"][0],
        "all-bad": fc.bad_samples_shard()[0],  # only one usable sample
        "nothing-usable": fc.tar_bytes(fc.sample("x", b"not an image")),
    })
    out = tmp_path / "records"
    command = ["encode", str(data), "--out", str(out), "--autoencoder", "pixels", "--image-size", "16",
               "--workers", "1", "--quiet", "--text-encoder-option", "max_length=8"]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 3, result.output
    assert "could not be read to the end (cut, empty)" in " ".join(result.output.split())
    assert "Traceback" not in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["unreadable_shards"]) == {"cut", "empty"} and "truncated" in summary["unreadable_shards"]["cut"]
    index = read_records(str(out))
    sizes = {Path(s["url"]).stem: s["nsamples"] for s in index.shards}
    assert sizes == {"all-bad": 1, "cut": 3, "empty": 0, "good": 2, "nothing-usable": 0}
    assert CliRunner().invoke(app, command).exit_code == 3, "the folder still says that data was skipped"


def test_worker_tracebacks_never_reach_the_user():
    from miro_cli.common import explain
    from miro_core.errors import ShardReadError

    text = (
        "Caught ShardReadError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise ShardReadError(reason)\n'
        "miro_core.errors.ShardReadError: truncated tar: member 'a.jpg' is cut short"
    )
    assert explain(ShardReadError(text), {}, {}) == "truncated tar: member 'a.jpg' is cut short"
    assert "Traceback" not in explain(ValueError(text.replace("ShardReadError", "ValueError")), {}, {})


def test_files_in_the_way_and_folders_for_files_name_the_option(tmp_path: Path):
    from miro_cli.common import explain

    a_file = tmp_path / "afile"
    a_file.write_text("x")
    message = explain(OSError(errno.EEXIST, "File exists", str(a_file)), {"out": str(a_file)}, {"out": "--out"})
    assert message.startswith(f"--out {a_file}: a file is in the way")
    tmp = f"{tmp_path / 'adir'}.tmp-0123abcd"
    message = explain(IsADirectoryError(errno.EISDIR, "Is a directory", tmp), {"out": str(tmp_path / "adir")},
                      {"out": "--out"})
    assert message == f"--out {tmp_path / 'adir'} is a folder where a file is needed; give a file path"
    assert explain(MemoryError(), {"batch_size": 8}, {"batch_size": "--batch-size"}).startswith("out of memory")


class ExitsInScore(RewardModel):
    name = "exits"

    def score(self, images, captions):
        raise SystemExit(0)


def test_a_reward_calling_sys_exit_stops_the_run_with_a_message(tmp_path: Path):
    fc.write(tmp_path / "data" / "s.tar", fc.tar_bytes(fc.good_members("s", 2)))
    with pytest.raises(RewardContractError, match=r"called sys.exit\(0\)"):
        annotate(tmp_path / "data", tmp_path / "out", [ExitsInScore()])


def test_sys_exit_inside_a_command_is_an_error_not_a_silent_success(tmp_path: Path, monkeypatch):
    import miro_core.evaluation as evaluation

    def exits(*args, **kwargs):
        raise SystemExit(0)

    monkeypatch.setattr(evaluation, "run_eval", exits)
    result = CliRunner().invoke(app, ["eval", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == EXIT_ERROR and "sys.exit(0)" in result.output


def test_file_urls_work_for_every_path_option(tmp_path: Path):
    config = tmp_path / "my config.yaml"
    config.write_text("batch_size: 0\n")
    command = ["annotate", str(tmp_path), "--rewards", "shapes-sharpness", "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, [*command, "--config", f"file://{config}"])
    assert result.exit_code == 1 and "`batch_size` in" in result.output, result.output


def test_hand_edited_score_tables_are_named_not_misread(tmp_path: Path):
    from miro_core.bins import read_annotations

    folders = fc.edited_score_tables(tmp_path, ["r1", "r2"])
    fragments = {
        "truncated": "cannot read annotation table",
        "missing_column": "lacks r2",
        "extra_column": "extra column(s) bogus",
        "text_scores": "'r1' of annotation table",
        "no_key": "no 'key' column",
    }
    for name, folder in folders.items():
        with pytest.raises(DataError, match="s1.parquet") as caught:
            read_annotations(str(folder))
        assert fragments[name] in str(caught.value) and "rerun `miro annotate`" in str(caught.value)
    result = CliRunner().invoke(app, ["bins", "fit", str(folders["extra_column"]), "--out", str(tmp_path / "b.json")])
    assert result.exit_code == 1 and "bogus" in result.output and not (tmp_path / "b.json").exists()


def test_hand_edited_bins_files_are_refused(tmp_path: Path):
    from miro_core.bins import BinsFile, fit_bins

    fc.write(tmp_path / "data" / "s.tar", fc.tar_bytes(fc.good_members("s", 6)))
    annotate(tmp_path / "data", tmp_path / "ann", [MeanRed()])
    payload = fit_bins(str(tmp_path / "ann"), num_bins=4).to_json()
    payload["rewards"]["mean-red"]["edges"] = [0.1, 0.2, 0.3, 0.4]  # distinct edges, as real scores give
    BinsFile.from_json(payload)  # the undamaged file loads
    for name, damaged in fc.damaged_bins(payload, "mean-red").items():
        with pytest.raises(DataError, match="refit it with `miro bins fit`"):
            BinsFile.from_json(json.loads(json.dumps(damaged)), source=name)


def test_damaged_records_are_named_when_read(tmp_path: Path):
    from miro_core.records.reader import empty_caption
    from miro_core.records.synthetic import write_synthetic_records

    out = tmp_path / "records"
    write_synthetic_records(str(out), 2, input_shape=(4, 4, 4), text_shape=(4, 8))
    info = read_records(str(out))
    (out / "empty_caption.safetensors").write_bytes(b"xx")
    with pytest.raises(DataError, match="empty_caption.safetensors is damaged"):
        empty_caption(info)


def test_records_with_non_finite_values_are_damaged(tmp_path: Path, monkeypatch):
    from miro_core.records import reader as records_reader
    from miro_core.records.synthetic import write_synthetic_records

    out = tmp_path / "records"
    write_synthetic_records(str(out), 2, input_kind="pixels", input_shape=(3, 4, 4), text_shape=(4, 8))
    dataset = records_reader.RecordDataset(read_records(str(out)))
    assert np.isfinite(dataset[0]["tokens"]).all()
    real = records_reader.NpyReader.__call__

    def nan_tokens(self, payload):
        array = real(self, payload)
        return np.full_like(array, np.nan) if array.dtype == np.float16 else array

    monkeypatch.setattr(records_reader.NpyReader, "__call__", nan_tokens)
    with pytest.raises(DataError, match="non-finite values in its tokens"):
        records_reader.RecordDataset(read_records(str(out)))[1]


def test_damaged_run_folders_are_named(tmp_path: Path):
    import torch
    from safetensors.torch import save_file

    from miro_core.run_folder import latest_checkpoint, load_model_weights, load_weights, read_run_config

    run = tmp_path / "run"
    (run / "checkpoints" / "step-00000001").mkdir(parents=True)
    (run / "checkpoints" / "step-00000001" / "trainer_state.json").write_text("{}")
    (run / "latest.json").write_text('{"step": ')
    with pytest.raises(DataError, match="latest.json is damaged"):
        latest_checkpoint(run)
    (run / "config.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="config.json is damaged"):
        read_run_config(run)
    weights = run / "checkpoints" / "step-00000001" / "model_ema.safetensors"
    save_file({"w": torch.tensor([1.0, float("nan")])}, str(weights))
    with pytest.raises(DataError, match="NaN or infinite values in w"):
        load_weights(weights)
    weights.write_bytes(weights.read_bytes()[:20])
    with pytest.raises(DataError, match="cannot be read"):
        load_weights(weights)
    save_file({"other": torch.zeros(2)}, str(weights))
    with pytest.raises(DataError, match="does not fit the network"):
        load_model_weights(torch.nn.Linear(2, 2), weights)


def test_image_folders_decode_capped_and_convert_like_training(tmp_path: Path):
    from miro_core.evaluation import read_image_folder

    folder = tmp_path / "images"
    fc.write(folder / "gradient.png", fc.gradient_16bit_png())
    (folder / "captions.jsonl").write_text(json.dumps({"file": "gradient.png", "prompt": "a gradient"}))
    image = read_image_folder(folder).images[0]
    assert np.array_equal(np.asarray(image)[..., 0], fc.gradient_8bit()), "16-bit is rescaled, not clipped"
    fc.write(folder / "gradient.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(DataError, match="gradient.png: cannot decode image"):
        read_image_folder(folder)
    (folder / "captions.jsonl").write_bytes('{"file": "gradient.png", "prompt": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_image_folder(folder)


def test_config_files_that_are_not_utf8_or_miss_a_list_item_are_named(tmp_path: Path):
    from miro_core.config import read_yaml

    config = tmp_path / "c.yaml"
    config.write_bytes(b"\xff\xfe rewards: [x]\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_yaml(config)
    config.write_text("betas: [0.9]\n")
    result = CliRunner().invoke(app, ["train", "--config", str(config), "--data", str(tmp_path), "--quiet"])
    assert result.exit_code == 1 and "`betas.1`" in result.output and "is required" not in result.output


@pytest.mark.parametrize(
    "arguments",
    [
        ["train", "--data-workers", "99999999999999999999"],
        ["train", "--seed", "99999999999999999999"],
        ["train", "--batch-size", "99999999999"],
        ["sample", "RUN", "--out", "o", "--prompt", "x", "--steps", "99999999999999999999"],
        ["eval", "RUN", "--out", "o", "--n", "99999999999"],
        ["encode", "ANN", "--workers", "99999"],
        ["data", "shapes", "--out", "o", "--image-size", "99999999999999999999"],
        ["backbones", "--cond-dim", "99999999999999999999"],
    ],
)
def test_huge_numbers_are_refused_before_any_work(tmp_path: Path, arguments):
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code in (1, 2) and arguments[-2] in result.output, result.output
    assert "Traceback" not in result.output and "unexpected" not in result.output


def test_backbone_shape_errors_are_clear():
    result = CliRunner().invoke(app, ["backbones", "hybrid-tiny", "--image-size", "30"])
    assert result.exit_code == 1 and "must be divisible by 4 (--image-size 30)" in result.output


def test_extreme_aspect_ratios_resize_in_bounded_memory(monkeypatch):
    from miro_core.encode import resize_crop

    requested: list[tuple[int, int]] = []
    real = Image.Image.resize

    def recording(self, size, *args, **kwargs):
        requested.append(tuple(size))
        return real(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", recording)
    strip = Image.new("RGB", (2, 40_000), (10, 200, 30))  # scaled naively: 32 x 640000 pixels
    pixels = resize_crop(strip, 32)
    assert pixels.shape == (3, 32, 32) and (pixels[:, 16, 16] == (10, 200, 30)).all()
    assert max(w * h for w, h in requested) <= 8 * 32 * 32, requested


@pytest.mark.parametrize("seed", ["-1", str(2**64)])
def test_shapes_seed_is_range_checked(tmp_path: Path, seed: str):
    result = CliRunner().invoke(app, ["data", "shapes", "--n", "2", "--out", str(tmp_path / "d"), "--seed", seed])
    assert result.exit_code == 2 and "--seed" in result.output
    assert not (tmp_path / "d").exists()


def test_a_byte_order_mark_is_not_part_of_a_caption(tmp_path: Path):
    """Windows editors start UTF-8 text with U+FEFF; it must not reach caption-reading rewards or the text encoder."""
    members = fc.sample("bom", fc.png(), caption="placeholder")
    members = [(name, "\ufeffa red circle\r\n".encode() if name.endswith(".txt") else data) for name, data in members]
    fc.write(tmp_path / "data" / "s.tar", fc.tar_bytes(members))
    annotate(tmp_path / "data", tmp_path / "out", [MeanRed()])
    assert [r["caption"] for r in rows(tmp_path / "out")] == ["a red circle"]


def test_a_prompts_file_with_a_byte_order_mark(tmp_path: Path):
    from miro_cli.sample_cmd import read_prompts

    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes("\ufeffa red circle\r\na blue square\r\n".encode())
    assert read_prompts([], prompts) == ["a red circle", "a blue square"]


class HugeInt(RewardModel):
    name = "huge-int"

    def score(self, images, captions):
        return [10**400 for _ in images]


def test_an_int_beyond_the_float_range_is_a_row_error(tmp_path: Path):
    """float(10**400) raises OverflowError: it was reported as an unexpected failure of the framework."""
    fc.write(tmp_path / "data" / "s.tar", fc.tar_bytes(fc.good_members("h", 2)))
    annotate(tmp_path / "data", tmp_path / "out", [HugeInt(), MeanRed()])
    reasons = [e["reason"] for e in errors(tmp_path / "out")]
    assert reasons == ["score is beyond the float range, not a finite float"] * 2
    assert all(not math.isnan(r["mean-red"]) for r in rows(tmp_path / "out"))


def _edited_records(tmp_path: Path) -> Path:
    from miro_core.records.synthetic import write_synthetic_records

    out = tmp_path / "records"
    write_synthetic_records(str(out), 4, input_kind="pixels", input_shape=(3, 4, 4), text_shape=(4, 8))
    return out


@pytest.mark.parametrize(
    ("member", "payload", "message"),
    [
        ("0000002.image.npy", fc.npy_bytes(np.zeros((3, 4, 4))),
         r"input is float64 \(3, 4, 4\), records.json says uint8"),
        ("0000002.image.npy", fc.npy_bytes(np.zeros((3, 2, 2), np.uint8)), r"input is uint8 \(3, 2, 2\)"),
        ("0000002.tokens.npy", fc.npy_bytes(np.zeros((2, 8), np.float16)), r"tokens is float16 \(2, 8\)"),
        ("0000002.mask.npy", fc.npy_bytes(np.ones(4, np.float32)), r"mask is float32 \(4,\), records.json says bool"),
        ("0000002.json", b'{"scores": {"reward-a": "high"}}', "score 'reward-a' is 'high', not a number"),
        ("0000002.json", b'{"scores": [1, 2]}', "scores are a list, not a table"),
    ],
)
def test_records_edited_after_encoding_name_the_record(tmp_path: Path, member: str, payload: bytes, message: str):
    """np.stack upcast a float64 image in uint8 records (trained on as values 0..255) or failed unnamed."""
    from miro_core.records.reader import Collate, RecordDataset

    out = _edited_records(tmp_path)
    shard = out / "shards" / "synthetic-000000.tar"
    fc.replace_member(shard, member, payload)
    (out / "shards" / "synthetic-000000.index.npy").unlink()  # out of date: the reader scans the tar
    dataset = RecordDataset(read_records(str(out)))
    Collate([], None)(dataset.__getitems__([0, 1, 3]))  # the other records still read
    with pytest.raises(DataError, match=rf"record 2 of .*synthetic-000000.tar is damaged \(.*{message}"):
        dataset[2]


def test_random_bytes_in_a_record_name_it(tmp_path: Path):
    from miro_core.records.reader import RecordDataset

    out = _edited_records(tmp_path)
    index = np.load(out / "shards" / "synthetic-000000.index.npy")
    fc.scramble_member(out / "shards" / "synthetic-000000.tar", index, 1, 0)
    with pytest.raises(DataError, match=r"record 1 of .* is damaged \(its bytes are not a .npy array\)"):
        RecordDataset(read_records(str(out)))[1]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda j: j.pop("input"), r"records.json is damaged \(no 'input'\); rerun the `miro encode`"),
        (lambda j: j.pop("shardlist"), r"records.json is damaged \(no 'shardlist'\)"),
        (lambda j: j["shardlist"][0].update(nsamples="many"), "nsamples 'many' is not a count of records"),
        (lambda j: j["input"].update(kind="voxels"), "neither pixels nor latents"),
        (lambda j: j["text_encoder"].pop("dim"), r"records.json is damaged \(no 'dim'\)"),
    ],
)
def test_hand_edited_records_index_is_named(tmp_path: Path, edit, message: str):
    out = _edited_records(tmp_path)
    payload = json.loads((out / "records.json").read_text())
    edit(payload)
    (out / "records.json").write_text(json.dumps(payload))
    with pytest.raises(DataError, match=message):
        read_records(str(out))


def test_a_records_index_that_disagrees_with_the_shard_is_named(tmp_path: Path):
    """A smaller nsamples made training silently skip the shard's other records."""
    from miro_core.records.reader import RecordDataset

    out = _edited_records(tmp_path)
    payload = json.loads((out / "records.json").read_text())
    payload["shardlist"][0]["nsamples"] = 2
    (out / "records.json").write_text(json.dumps(payload))
    with pytest.raises(DataError, match="lists 2 records for .*synthetic-000000.tar but its .index.npy has 4"):
        RecordDataset(read_records(str(out)))[0]


@pytest.mark.slow
def test_a_record_damaged_mid_run_stops_training_keeping_the_finished_steps(
    tiny_annotations: Path, tiny_bins: Path, registry, tmp_path: Path
):
    """With 2 data workers the error names the shard and record, the steps before it are saved, and after the
    shard is re-encoded (here: restored) ``--resume`` ends bit-identical to a run that never met the damage."""
    import shutil

    import torch
    from safetensors.torch import load_file

    from miro_core.records.order import ShuffledOrder
    from miro_core.records.reader import RecordDataset
    from miro_core.train import Trainer

    from .conftest import tiny_train_config

    def config(out: Path, data: Path | str, **overrides):
        return tiny_train_config(data, tiny_bins, out, steps=5, save_every=0, **overrides)

    straight = tmp_path / "straight"
    Trainer(config(straight, tiny_annotations), registry, progress=False).run()
    records = tmp_path / "records"
    shutil.copytree(json.loads((straight / "config.json").read_text())["data"]["records"], records)
    info = read_records(str(records))
    batch = config(straight, records).batch_size
    first_of_step_4 = ShuffledOrder(info.shard_sizes, seed=0).at(3 * batch, 1)[0]
    number, inner = RecordDataset(info).locate(first_of_step_4)
    shard = Path(info.shards[number]["url"])
    original = shard.read_bytes()
    fc.scramble_member(shard, np.load(str(shard).removesuffix(".tar") + ".index.npy"), inner, 0)

    damaged = tmp_path / "damaged"
    expected = rf"record {inner} of .*{shard.name} is damaged.*the 3 finished steps are saved"
    with pytest.raises(DataError, match=expected):
        Trainer(config(damaged, records, data_workers=2), registry, progress=False).run()
    assert json.loads((damaged / "latest.json").read_text())["step"] == 3
    shard.write_bytes(original)
    Trainer(config(damaged, records), registry, progress=False).run(resume=True)
    for name in ("model.safetensors", "model_ema.safetensors"):
        a = load_file(str(straight / "checkpoints" / "step-00000005" / name))
        b = load_file(str(damaged / "checkpoints" / "step-00000005" / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_the_odd_score_table_is_named_even_when_it_comes_first(tmp_path: Path):
    """The first table was the reference: a column dropped from it blamed every other table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from miro_core.data.tables import check_score_tables

    urls = []
    for name, columns in (("s0", ["r1"]), ("s1", ["r1", "r2"]), ("s2", ["r1", "r2"])):
        data = {"key": ["k0"], "shard": [name], "caption": [fc.CAPTION], **{c: [0.5] for c in columns}}
        pq.write_table(pa.table(data), tmp_path / f"{name}.parquet")
        urls.append(str(tmp_path / f"{name}.parquet"))
    with pytest.raises(DataError, match=r"s0.parquet lacks r2 \(the reward columns of .*s1.parquet: r1, r2\)"):
        check_score_tables(urls)


def test_encode_counts_scored_rows_missing_from_their_shard(tmp_path: Path):
    """A shard replaced between annotate and encode lost scored samples without a word."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shard = fc.write(tmp_path / "data" / "s.tar", fc.tar_bytes(fc.good_members("g", 3)))
    (tmp_path / "ann" / "scores").mkdir(parents=True)
    keys = ["g000", "g001", "gone"]  # g002 is an annotation error row; "gone" is no longer in the shard
    table = {"key": keys, "shard": [str(shard)] * 3, "caption": [fc.CAPTION] * 3, "r": [0.1, 0.2, 0.3]}
    pq.write_table(pa.table(table), tmp_path / "ann" / "scores" / "s.parquet")
    out = tmp_path / "records"
    result = CliRunner().invoke(app, ["encode", str(tmp_path / "ann"), "--out", str(out), "--autoencoder", "pixels",
                                      "--image-size", "8", "--workers", "0", "--quiet",
                                      "--text-encoder-option", "max_length=8"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["samples"], summary["skipped"]) == (2, 1)


def test_bins_fit_names_what_to_do_for_unusable_columns(tmp_path: Path, registry):
    import pyarrow as pa

    from miro_core.bins import fit_bins

    (tmp_path / "scores").mkdir()
    table = {"key": ["a", "b", "c"], "shard": ["s"] * 3, "caption": [fc.CAPTION] * 3,
             "nan": [math.nan, math.inf, -math.inf], "huge": [1e308, -1e308, 1e308], "ok": [0.1, 0.2, 0.3]}
    pq.write_table(pa.table(table), tmp_path / "scores" / "s.parquet")
    with pytest.raises(DataError, match=r"'nan' has no finite scores .*leave it out \(--rewards huge,ok\)"):
        fit_bins(str(tmp_path), num_bins=4, registry=registry)
    with pytest.raises(DataError, match=r"'huge' \(scores from -1e\+308 to 1e\+308\)"):
        fit_bins(str(tmp_path), num_bins=4, registry=registry, rewards=["huge"])


def test_sample_names_an_empty_prompts_file_and_refuses_too_many_images(tmp_path: Path):
    from miro_cli.sample_cmd import read_prompts

    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\t\n")
    with pytest.raises(ConfigError, match="blank.txt holds no prompt"):
        read_prompts(["a red circle"], blank)
    many = tmp_path / "many.txt"
    many.write_text("\n".join(f"prompt {i}" for i in range(5001)))
    result = CliRunner().invoke(app, ["sample", str(tmp_path / "no-run"), "--out", str(tmp_path / "o"),
                                      "--prompts-file", str(many), "--n", "2"])
    assert result.exit_code == 1 and "5001 prompts x --n 2 = 10002 images" in result.output
    assert not (tmp_path / "o").exists()


def test_run_folders_that_read_but_do_not_fit_are_named(tmp_path: Path):
    import torch

    from miro_core.run_folder import load_optimizer_state, read_run_config

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"train": {}, "text_encoder": {"name": "minilm"}}')
    with pytest.raises(DataError, match=r"config.json is damaged \(no 'model' object\)"):
        read_run_config(run)
    evil = tmp_path / "optimizer.pt"
    torch.save({"f": print}, evil)  # a pickled function: never loaded
    with pytest.raises(DataError) as caught:
        load_optimizer_state(evil)
    assert "\n" not in str(caught.value) and "weights_only" not in str(caught.value)
    assert "holds pickled objects, which are never loaded" in str(caught.value)


@pytest.mark.slow
def test_resume_names_a_checkpoint_that_does_not_fit_and_accepts_the_bins_by_another_path(
    tiny_annotations: Path, tiny_bins: Path, registry, tmp_path: Path, monkeypatch
):
    import torch

    from miro_core.train import Trainer

    from .conftest import tiny_train_config

    monkeypatch.chdir(tiny_bins.parent)
    run = tmp_path / "run"
    Trainer(tiny_train_config(tiny_annotations, Path(tiny_bins.name), run, steps=2), registry, progress=False).run()
    more = tiny_train_config(tiny_annotations, tiny_bins, run, steps=3)  # the same bins, named by an absolute path
    checkpoint = run / "checkpoints" / "step-00000002"
    optimizer = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    torch.save({"state": {}, "param_groups": []}, checkpoint / "optimizer.pt")
    with pytest.raises(DataError, match=r"step-00000002 does not fit this run \(ValueError: .*parameter groups"):
        Trainer(more, registry, progress=False).run(resume=True)
    torch.save(optimizer, checkpoint / "optimizer.pt")
    Trainer(more, registry, progress=False).run(resume=True)
    assert json.loads((run / "latest.json").read_text())["step"] == 3


def _damaged_release(tmp_path: Path, damage) -> Path:
    import shutil

    source = Path(__file__).parent / "fixtures" / "authors-reference"
    folder = tmp_path / "release"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "uncond_embedding.npy"):
        shutil.copy(source / name, folder / name)
    damage(folder)
    return folder


def _edit_network(**change):
    def damage(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config["network"].update(change)
        (folder / "config.json").write_text(json.dumps(config))
    return damage


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_edit_network(data_dim="big"), r"config.json describes a network that cannot be built \(ValueError"),
        (_edit_network(latents_dim=128), r"model.safetensors does not match its config.json: .*size mismatch"),
        (lambda f: (f / "config.json").write_bytes(b'{"network": "\xff"}'), "config.json is not valid JSON"),
        (lambda f: np.save(f / "uncond_embedding.npy", np.full((1, 48), np.nan, np.float32)),
         r"uncond_embedding.npy is not a finite \(tokens, width\) embedding"),
        (lambda f: np.save(f / "uncond_embedding.npy", np.float32(1)), r"embedding \(shape \(\)\)"),
        (lambda f: (f / "uncond_embedding.npy").write_bytes(b"\x00" * 100),
         r"uncond_embedding.npy is not a readable .npy array \(damaged, or it holds pickled objects"),
    ],
)
def test_convert_names_a_damaged_release(tmp_path: Path, damage, message: str):
    """Each was an unexpected failure, a multi-line message, advice to load pickles, or NaN negative text."""
    folder = _damaged_release(tmp_path, damage)
    result = CliRunner().invoke(app, ["convert", str(folder), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert re.search(message, " ".join(result.output.split())), result.output
    assert "unexpected" not in result.output and "allow_pickle" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) <= 4  # one (wrapped) error line


def test_a_damaged_records_score_table_says_to_re_encode(tmp_path: Path):
    """The advice was to rerun `miro annotate`, which never writes a records shard's table."""
    import pyarrow as pa

    from miro_core.data.tables import check_score_tables

    table = tmp_path / "shard-000000.scores.parquet"
    pq.write_table(pa.table({"key": ["k"], "shard": ["s"], "caption": ["c"], "r": ["high"]}), table)
    with pytest.raises(DataError, match=r"not numbers; .*delete that records shard .*rerun `miro encode`"):
        check_score_tables([str(table)])


def test_a_damaged_tar_header_in_a_shard_without_index_is_named(tmp_path: Path):
    """Scanning the headers raised UnicodeDecodeError, which a DataLoader worker turns into a bare RuntimeError."""
    from miro_core.records.reader import RecordDataset

    out = _edited_records(tmp_path)
    shard = out / "shards" / "synthetic-000000.tar"
    index = np.load(out / "shards" / "synthetic-000000.index.npy")
    payload = bytearray(shard.read_bytes())
    header = int(index[2, 0, 0]) - 512
    payload[header:header + 512] = b"\xb2" * 512
    shard.write_bytes(bytes(payload))
    (out / "shards" / "synthetic-000000.index.npy").unlink()
    with pytest.raises(DataError, match=rf"synthetic-000000.tar has a damaged tar header at byte {header}; re-encode"):
        RecordDataset(read_records(str(out)))[0]


def test_the_processes_outliving_a_failed_one_say_so():
    """Under `accelerate launch`, the other ranks printed an 'unexpected RuntimeError ... GLHF' from gloo."""
    from miro_cli.common import explain

    gloo = RuntimeError("[third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer "
                        "[127.0.0.1]:9625. This is typically caused by a remote worker crashing.")
    assert explain(gloo).startswith("another process of this multi-process run stopped")


def test_a_damaged_records_index_is_rewritten_by_the_same_encode(tmp_path: Path):
    """Rerunning encode into records whose records.json is not JSON was an unexpected JSONDecodeError."""
    data = fc.write_dataset(tmp_path / "data", {"s": fc.tar_bytes(fc.good_members("g", 2))})
    out = tmp_path / "records"
    command = ["encode", str(data), "--out", str(out), "--autoencoder", "pixels", "--image-size", "8",
               "--workers", "0", "--quiet", "--text-encoder-option", "max_length=8"]
    assert CliRunner().invoke(app, command).exit_code == 0
    (out / "records.json").write_text("{not json")
    with pytest.raises(DataError, match=r"records.json is not valid JSON .*delete it and rerun the `miro encode`"):
        read_records(str(out))
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 1 and "delete it and rerun the same `miro encode` command" in result.output
    (out / "records.json").unlink()
    assert CliRunner().invoke(app, command).exit_code == 0
    assert read_records(str(out)).samples == 2


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x00" * 100, "damaged, or it holds pickled objects"),
        (fc.npy_bytes(np.full((1, 48), np.nan, np.float32)), "not a finite"),
        (fc.npy_bytes(np.zeros((1, 7), np.float32)), "width 7, the network's text width is 48"),
    ],
)
def test_a_damaged_negative_text_of_a_run_is_named(tmp_path: Path, payload: bytes, message: str):
    from miro_core.run_folder import NEGATIVE_TEXT_FILE, load_negative_text

    (tmp_path / NEGATIVE_TEXT_FILE).write_bytes(payload)
    config = {"negative_text": "uncond_embedding", "model": {"text_dim": 48}}
    with pytest.raises(DataError, match=rf"uncond_embedding.npy cannot be used \(.*{message}.*miro convert --force"):
        load_negative_text(tmp_path, config)


def test_a_folder_in_place_of_a_records_shard_or_its_index(tmp_path: Path):
    """IsADirectoryError reached the user as an unexpected failure, without the path when raised in a worker."""
    import shutil

    from miro_core.records.reader import RecordDataset

    out = _edited_records(tmp_path)
    index = out / "shards" / "synthetic-000000.index.npy"
    index.unlink()
    index.mkdir()  # an unreadable index: the tar headers are scanned instead
    assert RecordDataset(read_records(str(out)))[3]["input"].shape == (3, 4, 4)
    shutil.rmtree(index)
    shard = out / "shards" / "synthetic-000000.tar"
    shard.unlink()
    shard.mkdir()
    with pytest.raises(DataError, match=r"synthetic-000000.tar cannot be read \(Is a directory\); fix it or re-encode"):
        RecordDataset(read_records(str(out)))[0]
