"""``miro serve`` without a browser: request checks, slider -> target mapping, scoring, runs that cannot open."""

from __future__ import annotations

import math
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from miro_cli.main import app
from miro_cli.serve_cmd import is_loopback
from miro_core.errors import ConfigError
from miro_core.serve_logic import (
    MAX_PROMPT_CHARS,
    OFFLINE_REWARDS,
    RequestError,
    SampleRequest,
    Scorer,
    ServeSession,
    Setting,
    check_run_folder,
    level_step,
    parse_strategy_options,
    scores_markdown,
    settings_from_sliders,
    slider_labels,
    slider_step,
    snap_level,
)
from miro_core.train import Trainer

from .conftest import SHAPES_REWARDS, tiny_train_config


@pytest.fixture(scope="module")
def reward_run(tiny_annotations: Path, tiny_bins: Path, registry, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serve") / "run"
    Trainer(tiny_train_config(tiny_annotations, tiny_bins, out, steps=4), registry, progress=False).run()
    return out


@pytest.fixture(scope="module")
def baseline_run(tiny_annotations: Path, registry, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serve") / "baseline"
    Trainer(tiny_train_config(tiny_annotations, None, out, steps=2), registry, progress=False).run()
    return out


@pytest.fixture(scope="module")
def session(reward_run: Path, registry, tmp_path_factory) -> ServeSession:
    opened = ServeSession.open(reward_run, registry=registry)
    opened.output_dir = tmp_path_factory.mktemp("grids")
    return opened


def ask(session: ServeSession, **changes):
    """Validate a request that is fine except for ``changes``."""
    values = dict(
        prompt="a red circle",
        num_images=2,
        steps=2,
        sampler="euler",
        guidance_scale=2.0,
        strategy="miro",
        strategy_options="",
        seed=0,
        compare=False,
        slider_values=[1.0, 0.0] * len(session.reward_keys) * 2,
    )
    values.update(changes)
    return session.validate(**values)


# -- slider values -> reward targets ---------------------------------------------------------------------


def test_slider_values_snap_to_the_levels_seen_in_training():
    assert level_step(16) == pytest.approx(1 / 15) and level_step(None) == 1.0
    assert snap_level(0.49, 16) == pytest.approx(7 / 15)
    assert snap_level(0.5, 16) == pytest.approx(8 / 15), "halfway rounds up, not to even"
    assert snap_level(0.3, 64) == pytest.approx(19 / 63)
    assert snap_level(0.0, 64) == 0.0 and snap_level(1.0, 64) == 1.0
    assert snap_level(0.4, None) == 0.0 and snap_level(0.6, None) == 1.0
    for value in np.linspace(0, 1, 101):
        level = snap_level(float(value), 16)
        assert abs(level - value) <= 0.5 / 15 + 1e-9 and math.isclose(level * 15, round(level * 15))


def test_the_browser_slider_step_reaches_level_one():
    from decimal import Decimal

    for bins in (2, 3, 16, 64, 100, 256):
        step = slider_step(bins)
        last = Decimal(repr(step)) * (bins - 1)  # the browser's last notch, computed as it does: in decimal
        assert last <= 1 and snap_level(float(last), bins) == 1.0
        assert step == pytest.approx(1 / (bins - 1), rel=1e-6)
    assert slider_step(64) == 1 / 63, "the exact step where it already reaches 1"


def test_sliders_map_to_one_setting_or_two_in_side_by_side_mode():
    keys = ["r1", "r2"]
    assert slider_labels(keys) == [
        ("A", "r1", "target"), ("A", "r1", "negative"), ("A", "r2", "target"), ("A", "r2", "negative"),
        ("B", "r1", "target"), ("B", "r1", "negative"), ("B", "r2", "target"), ("B", "r2", "negative"),
    ]
    values = [1.0, 0.0, 0.52, 0.1, 0.0, 1.0, 1.0 + 1e-9, 0.0]
    (single,) = settings_from_sliders(keys, values, 16, compare=False)
    assert single.targets == {"r1": 1.0, "r2": pytest.approx(8 / 15)}
    assert single.negative_targets == {"r1": 0.0, "r2": pytest.approx(2 / 15)}
    a, b = settings_from_sliders(keys, values, 16, compare=True)
    assert a == single
    assert b.targets == {"r1": 0.0, "r2": 1.0} and b.negative_targets == {"r1": 1.0, "r2": 0.0}
    with pytest.raises(RequestError, match=r"setting B: r2 target must be between 0 and 1, got 1\.5"):
        settings_from_sliders(keys, values[:6] + [1.5, 0.0], 16, compare=True)
    with pytest.raises(RequestError, match="setting A: r1 negative target must be between 0 and 1, got -0.2"):
        settings_from_sliders(keys, [1.0, -0.2] + values[2:], 16, compare=False)
    with pytest.raises(RequestError, match="r1 target is empty"):
        settings_from_sliders(keys, [None] + values[1:], 16, compare=False)
    with pytest.raises(RequestError, match="must be a finite number"):
        settings_from_sliders(keys, [float("nan")] + values[1:], 16, compare=False)
    with pytest.raises(RequestError, match="expected 8 reward slider values, got 3; reload the page"):
        settings_from_sliders(keys, values[:3], 16, compare=False)
    assert settings_from_sliders([], [], None, compare=True) == (Setting({}, {}),)


def test_strategy_options_are_key_value_pairs():
    assert parse_strategy_options("") == {}
    assert parse_strategy_options(" target=shapes-aesthetic, schedule=linear ,t=0.25") == {
        "target": "shapes-aesthetic", "schedule": "linear", "t": 0.25,
    }
    with pytest.raises(RequestError, match="KEY=VALUE pairs"):
        parse_strategy_options("schedule linear")
    for text in ("interval_start=.nan", "interval_end=.inf", "t=-.inf"):
        with pytest.raises(RequestError, match="must be a finite number"):
            parse_strategy_options(text)


# -- request validation -----------------------------------------------------------------------------------


def test_a_valid_request_is_normalised(session: ServeSession):
    request = ask(session, prompt="  a red circle \n", num_images=3.0, steps="7", seed=12.0, guidance_scale="2.5",
                  slider_values=[1.0, 0.0, 0.49, 0.51, 0.0, 1.0] + [0.3] * 6)
    assert isinstance(request, SampleRequest)
    assert (request.prompt, request.num_images, request.steps, request.seed) == ("a red circle", 3, 7, 12)
    assert request.guidance_scale == 2.5 and not request.compare
    (setting,) = request.settings
    assert setting.targets["shapes-aesthetic"] == pytest.approx(7 / 15)
    assert setting.negative_targets["shapes-aesthetic"] == pytest.approx(8 / 15)
    assert ask(session, compare=True).compare


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"prompt": ""}, "the prompt is empty"),
        ({"prompt": "   \n "}, "the prompt is empty"),
        ({"prompt": None}, "the prompt is empty"),
        ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, f"the prompt has {MAX_PROMPT_CHARS + 1} characters; the limit"),
        ({"prompt": 42}, "the prompt must be text"),
        ({"num_images": 0}, "number of images must be between 1 and 8, got 0"),
        ({"num_images": 9}, "number of images must be between 1 and 8, got 9"),
        ({"num_images": 2.5}, "number of images must be a whole number"),
        ({"num_images": None}, "number of images is empty"),
        ({"steps": 0}, "steps must be between 1 and 200"),
        ({"steps": "many"}, "steps must be a number, got 'many'"),
        ({"guidance_scale": -1}, "guidance scale must be between 0 and 20, got -1"),
        ({"guidance_scale": float("inf")}, "guidance scale must be a finite number"),
        ({"seed": -3}, "seed must be between 0 and 2147483647, got -3"),
        ({"seed": 2**40}, "seed must be between 0 and 2147483647"),
        ({"seed": None}, "seed is empty"),
        ({"sampler": "rk4"}, "unknown sampler 'rk4'; choose one of: .*euler"),
        ({"strategy": "magic"}, "unknown guidance strategy 'magic'; choose one of: .*miro"),
        ({"strategy": "isolate"}, "strategy isolate: invalid options .*target"),
        ({"strategy": "isolate", "strategy_options": "target=clip_score"}, "not a reward of this run"),
        ({"strategy": "tradeoff", "strategy_options": "reward_a=shapes-aesthetic, reward_b=x"}, "'x' is not a reward"),
        ({"strategy_options": "schedule=sideways"}, "strategy miro: invalid options .*schedule"),
        ({"strategy_options": "scale=9"}, "guidance scale slider"),
        ({"strategy_options": "interval_start=.nan"}, "interval_start=.nan: must be a finite number"),
        ({"strategy_options": 3}, "strategy options must be text"),
        ({"compare": "yes"}, "side by side must be true or false"),
        ({"sampler": None}, "unknown sampler None"),
        ({"num_images": "abc"}, "number of images must be a number, got 'abc'"),
        ({"slider_values": [1.0, 0.0, 2.0, 0.0, 1.0, 0.0] * 2}, "setting A: shapes-aesthetic target must be between"),
    ],
)
def test_bad_requests_get_a_message(session: ServeSession, changes: dict, message: str):
    with pytest.raises(RequestError, match=message):
        ask(session, **changes)


def test_strategies_with_their_options_pass(session: ServeSession):
    request = ask(session, strategy="isolate", strategy_options="target=shapes-aesthetic, schedule=linear")
    assert request.strategy_options == {"target": "shapes-aesthetic", "schedule": "linear"}
    ask(session, strategy="tradeoff", strategy_options="reward_a=shapes-aesthetic, reward_b=shapes-sharpness, t=0.3")


# -- sampling, scoring, grid --------------------------------------------------------------------------------


def test_side_by_side_renders_the_same_seed_and_scores_every_image(session: ServeSession):
    same = session.generate(ask(session, compare=True))
    assert [len(batch) for batch in same.images] == [2, 2]
    for a, b in zip(*same.images):
        assert np.array_equal(np.asarray(a), np.asarray(b)), "same settings and seed must give the same images"
    low_b = [1.0, 0.0] * 3 + [0.0, 1.0] * 3
    changed = session.generate(ask(session, compare=True, slider_values=low_b))
    assert np.array_equal(np.asarray(changed.images[0][0]), np.asarray(same.images[0][0]))
    assert not np.array_equal(np.asarray(changed.images[1][0]), np.asarray(same.images[1][0]))
    for per_setting in changed.scores:
        for scores in per_setting:
            assert list(scores) == list(OFFLINE_REWARDS)
            assert all(0.0 <= v <= 1.0 for v in scores.values())
    # captions carry the measured scores; display copies are upscaled, scored images are not
    image, caption = changed.gallery(1)[0]
    aesthetic = changed.scores[1][0]["shapes-aesthetic"]
    assert f"aesthetic {aesthetic:.2f}" in caption and image.size == (256, 256)
    assert changed.images[1][0].size == (32, 32)
    grid = Image.open(changed.grid_path)
    assert grid.size == (2 * 32 * 4, 2 * (32 * 4 + 12))
    table = scores_markdown(changed, session.reward_keys, session.scorer.names)
    row = next(line for line in table.splitlines() if line.startswith("| shapes-aesthetic |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    means = [changed.mean_scores(i)["shapes-aesthetic"] for i in (0, 1)]
    assert cells == ["shapes-aesthetic", "1.00 / 0.00", f"{means[0]:.3f}", "0.00 / 1.00", f"{means[1]:.3f}",
                     f"{means[1] - means[0]:+.3f}"]
    assert "Generated 4 images (settings A and B from the same seed)" in changed.status()


def test_concurrent_requests_queue_and_a_failing_one_does_not_affect_the_others(session: ServeSession):
    request = ask(session, seed=5)
    reference = [np.asarray(im) for im in session.generate(request).images[0]]
    broken = SampleRequest(**{**request.__dict__, "sampler": "no-such-sampler"})
    results: dict[int, object] = {}

    def work(i: int) -> None:
        try:
            results[i] = session.generate(broken if i == 1 else request)
        except Exception as err:  # the failure is the point
            results[i] = err

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert "no-such-sampler" in str(results[1])
    for i in (0, 2, 3):
        images = [np.asarray(im) for im in results[i].images[0]]
        assert all(np.array_equal(x, y) for x, y in zip(images, reference)), f"request {i} was disturbed"
    assert not session._lock.locked()
    assert session.generate(request).images[0][0].size == (32, 32), "the session still serves after a failure"


def test_scorer_keeps_only_rewards_that_load_offline(registry):
    scorer = Scorer(registry, names=["shapes-sharpness", "aesthetic", "no-such-reward"])
    assert scorer.names == ["shapes-sharpness"]
    assert "no aesthetic head given" in scorer.unavailable["aesthetic"]
    assert scorer.unavailable["no-such-reward"].startswith("not installed")
    assert "`aesthetic` (aesthetic: no aesthetic head given" in scorer.describe()
    flat = Image.new("RGB", (32, 32), (128, 128, 128))
    (scores,) = scorer.score([flat], "a red circle")
    assert set(scores) == {"shapes-sharpness"} and 0.0 <= scores["shapes-sharpness"] <= 1.0


def test_the_page_measures_with_the_runs_own_rewards(session: ServeSession, registry):
    assert session.scorer.choice.origin == "run" and session.scorer.names == session.reward_keys
    assert "measured by the run's own rewards" in session.describe_run()
    assert session.scorer.provenance()["shapes-aesthetic"]["distribution"] == "miro-reward-shapes-aesthetic"


def test_rewards_that_cannot_load_are_named_and_the_fallback_is_said(registry):
    run_config = {"reward_keys": ["aesthetic", "no-such-reward"], "train": {"data": "/nonexistent"}}
    scorer = Scorer(registry, run_config=run_config)
    assert scorer.choice.origin == "fallback" and scorer.names == list(OFFLINE_REWARDS)
    text = scorer.describe()
    assert "shapes-world rewards instead (fallback because none of the run's rewards could be loaded)" in text
    assert "`aesthetic` (aesthetic: no aesthetic head given" in text and "`no-such-reward` (not installed" in text
    partly = Scorer(registry, run_config={"reward_keys": ["shapes-sharpness", "aesthetic"]})
    assert partly.choice.origin == "run" and partly.names == ["shapes-sharpness"] and "aesthetic" in partly.unavailable
    baseline = Scorer(registry, run_config={"reward_keys": []})
    assert baseline.choice.origin == "fallback" and "trained without rewards" in baseline.describe()


def test_a_reward_returning_garbage_gives_nan_not_a_crash(registry):
    class Garbage:
        def score(self, images, captions):
            return 0.5

    scorer = Scorer(registry, names=[])
    scorer.rewards = {"garbage": Garbage()}
    (scores,) = scorer.score([Image.new("RGB", (8, 8))], "x")
    assert math.isnan(scores["garbage"])


def test_alignment_is_scored_against_the_prompt(registry):
    from miro_core.shapes.world import make_sample

    sample = make_sample(3, seed=0, degraded_fraction=0.0, mismatched_fraction=0.0)
    scorer = Scorer(registry, names=["shapes-alignment"])
    (matching,) = scorer.score([sample.image], sample.caption)
    (other,) = scorer.score([sample.image], "five purple triangles")
    assert matching["shapes-alignment"] > other["shapes-alignment"]


# -- runs without rewards, runs that do not exist ---------------------------------------------------------------


def test_a_run_without_rewards_has_no_sliders_and_says_so(baseline_run: Path, registry, tmp_path):
    baseline = ServeSession.open(baseline_run, registry=registry)
    baseline.output_dir = tmp_path
    assert baseline.reward_keys == [] and baseline.default_strategy == "cfg"
    assert "trained without rewards" in baseline.describe_run()
    request = ask(baseline, strategy="cfg", compare=True, slider_values=[])
    assert request.settings == (Setting({}, {}),) and not request.compare
    with pytest.raises(RequestError, match="expected 0 reward slider values"):
        ask(baseline, strategy="cfg", slider_values=[1.0, 0.0])
    generation = baseline.generate(request)
    table = scores_markdown(generation, baseline.reward_keys, baseline.scorer.names)
    assert "| shapes-aesthetic | not a run reward |" in table

    from miro_core.webui import build_app

    page = build_app(baseline)
    sliders = [b for b in page.blocks.values() if type(b).__name__ == "Slider"]
    assert {s.elem_id for s in sliders} == {"num-images", "steps", "guidance"}, "no reward sliders"
    markdown = " ".join(str(b.value) for b in page.blocks.values() if type(b).__name__ == "Markdown")
    assert "trained without rewards" in markdown and "no reward sliders" in markdown


def test_the_page_has_a_target_and_a_negative_slider_per_reward_on_the_level_grid(session: ServeSession):
    from miro_core.webui import build_app

    page = build_app(session)
    sliders = {b.elem_id: b for b in page.blocks.values() if type(b).__name__ == "Slider"}
    for name in ("A", "B"):
        for key in SHAPES_REWARDS:
            target, negative = sliders[f"{name}-{key}-target"], sliders[f"{name}-{key}-negative"]
            assert (target.value, negative.value) == (1.0, 0.0)
            assert target.step == negative.step == pytest.approx(1 / 15)
            assert (target.minimum, target.maximum) == (0, 1)
    dropdowns = {b.label: b for b in page.blocks.values() if type(b).__name__ == "Dropdown"}
    assert {c[0] for c in dropdowns["Sampler"].choices} == set(session.samplers)
    assert {c[0] for c in dropdowns["Guidance strategy"].choices} == set(session.strategies)
    assert dropdowns["Guidance strategy"].value == "miro"


def test_missing_or_unfinished_run_folders_say_what_to_do(tmp_path: Path, reward_run: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no trained run at runs/demo/run: run `make demo` first"):
        check_run_folder(Path("runs/demo/run"))
    with pytest.raises(ConfigError, match=r"run folder .*elsewhere does not exist; run `make demo` first"):
        check_run_folder(tmp_path / "elsewhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a run folder"):
        check_run_folder(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"not a miro run folder \(no config.json\)"):
        check_run_folder(tmp_path / "empty")
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "config.json").write_text((reward_run / "config.json").read_text())
    with pytest.raises(ConfigError, match="has no checkpoint yet"):
        check_run_folder(tmp_path / "training")
    assert check_run_folder(reward_run) == reward_run

    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 1
    assert "no trained run at runs/demo/run: run `make demo` first" in " ".join(result.output.split())

    from miro_core.webui import build_app

    page = build_app(None, error="no trained run at runs/demo/run")
    texts = [str(b.value) for b in page.blocks.values() if type(b).__name__ == "Markdown"]
    assert any("Cannot open the run" in t and "runs/demo/run" in t for t in texts)


def test_serve_without_gradio_says_how_to_install_it(reward_run: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)
    result = CliRunner().invoke(app, ["serve", str(reward_run)])
    assert result.exit_code == 1
    assert "needs gradio" in result.output and "pip install -e '.[ui]'" in " ".join(result.output.split())


def test_serve_binds_localhost_by_default_and_warns_otherwise(reward_run: Path, monkeypatch):
    import miro_core.webui

    calls = []
    monkeypatch.setattr(miro_core.webui, "serve", lambda session, host, port: calls.append((session, host, port)))
    result = CliRunner().invoke(app, ["serve", str(reward_run), "--port", "7999"])
    assert result.exit_code == 0, result.output
    session, host, port = calls[0]
    assert (host, port) == ("127.0.0.1", 7999) and session.reward_keys == SHAPES_REWARDS
    assert "warning" not in result.output
    result = CliRunner().invoke(app, ["serve", str(reward_run), "--host", "0.0.0.0", "--port", "7999"])
    assert result.exit_code == 0 and calls[1][1] == "0.0.0.0"
    assert "anyone who can reach this machine can use the page" in " ".join(result.output.split())
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
