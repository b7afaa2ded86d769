"""`miro eval`: the compositional benchmark on images whose truth is known, best-of-N arithmetic, and the
command on a tiny run and on image folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from miro_cli.main import app
from miro_core.compositional import benchmark_items, category_accuracy, judge
from miro_core.evaluation import best_of_n_curve, best_of_n_sizes
from miro_core.shapes.captions import KINDS
from miro_core.shapes.render import draw_objects, place, to_image
from miro_core.train import Trainer

from .conftest import tiny_train_config

BACKGROUND = (0.85, 0.85, 0.85)


def scene(*objects):
    return to_image(draw_objects(objects, 32, BACKGROUND))


#: (prompt, hand-drawn image, whether the image shows what the prompt says)
CASES = [
    ("a red circle", lambda: scene(place("circle", "red", 10, 10, 12)), True),
    ("a red circle", lambda: scene(place("circle", "blue", 10, 10, 12)), False),  # wrong colour
    ("a square", lambda: scene(place("square", "green", 10, 10, 12)), True),
    ("a square", lambda: scene(place("triangle", "green", 10, 10, 12)), False),  # wrong shape
    (
        "a red circle left of a yellow square",
        lambda: scene(place("circle", "red", 2, 10, 11), place("square", "yellow", 19, 10, 11)),
        True,
    ),
    (
        "a red circle left of a yellow square",
        lambda: scene(place("circle", "red", 19, 10, 11), place("square", "yellow", 2, 10, 11)),
        False,  # right of, not left of
    ),
    (
        "two green triangles",
        lambda: scene(place("triangle", "green", 2, 11, 10), place("triangle", "green", 19, 11, 10)),
        True,
    ),
    (
        "two green triangles",
        lambda: scene(
            place("triangle", "green", 2, 2, 10), place("triangle", "green", 19, 2, 10),
            place("triangle", "green", 10, 19, 10),
        ),
        False,  # three, not two
    ),
    (
        "a red circle and a blue square",
        lambda: scene(place("circle", "red", 2, 10, 11), place("square", "blue", 19, 10, 11)),
        True,
    ),
    (
        "a red circle and a blue square",
        lambda: scene(place("circle", "blue", 2, 10, 11), place("square", "red", 19, 10, 11)),
        False,  # colours swapped between the objects
    ),
    (
        "a circle and a triangle",
        lambda: scene(place("circle", "cyan", 2, 10, 11), place("triangle", "purple", 19, 10, 11)),
        True,
    ),
]
#: Per category: colours 1/2, single object 1/2, position 1/2, counting 1/2, colour attribution 1/2, two objects 1/1.
EXPECTED_OVERALL = (5 * 0.5 + 1.0) / 6  # mean of the categories, not 6/11 pooled over images


@pytest.fixture(scope="module")
def hand_made():
    return [prompt for prompt, _, _ in CASES], [draw() for _, draw, _ in CASES], [truth for _, _, truth in CASES]


def test_judge_and_category_accuracy_on_hand_made_images(hand_made):
    prompts, images, truth = hand_made
    assert judge(images, prompts) == truth
    categories = [
        "colours", "colours", "single_object", "single_object", "position", "position", "counting", "counting",
        "colour_attribution", "colour_attribution", "two_objects",
    ]
    result = category_accuracy(truth, categories)
    assert list(result["categories"]) == [k for k in KINDS]
    assert {k: v["accuracy"] for k, v in result["categories"].items()} == {
        "single_object": 0.5, "colours": 0.5, "counting": 0.5, "two_objects": 1.0, "colour_attribution": 0.5,
        "position": 0.5,
    }
    assert result["overall"] == pytest.approx(EXPECTED_OVERALL)
    assert result["overall"] != pytest.approx(sum(truth) / len(truth))
    assert result["categories"]["two_objects"]["stderr"] == 0.0
    assert result["categories"]["colours"]["stderr"] == pytest.approx(0.5 / math.sqrt(2))


def test_category_accuracy_skips_unjudged_images_and_text_outside_the_grammar():
    result = category_accuracy([True, None, False, False, True], ["counting", "counting", "position", "position", "x"])
    assert result["categories"]["counting"] == {"accuracy": 1.0, "passed": 1, "images": 1, "stderr": 0.0}
    assert result["categories"]["position"]["accuracy"] == 0.0
    assert result["overall"] == pytest.approx((1.0 + 0.0 + 1.0) / 3) and result["images"] == 4
    assert judge([scene(place("circle", "red", 10, 10, 12))], ["a dog on a sofa"]) == [None]
    assert math.isnan(category_accuracy([None], ["counting"])["overall"])


def test_benchmark_items_cover_every_category_equally():
    prompts, categories = benchmark_items(per_category=3, seed=0)
    assert len(prompts) == 18 and [categories.count(k) for k in KINDS] == [3] * 6
    assert benchmark_items(per_category=3, seed=0) == (prompts, categories)


def test_best_of_n_curve_equals_a_hand_computation():
    select = np.array([[0.2, 0.5, 0.1, 0.9], [0.7, 0.3, 0.8, 0.6]])
    other = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    assert best_of_n_sizes(4) == [1, 2, 4] and best_of_n_sizes(5) == [1, 2, 4, 5] and best_of_n_sizes(1) == [1]
    # N=1: first samples; N=2: prompt 0 picks sample 1 (0.5), prompt 1 keeps sample 0 (0.7); N=4: samples 3 and 2
    assert best_of_n_curve(select, select) == pytest.approx([(0.2 + 0.7) / 2, (0.5 + 0.7) / 2, (0.9 + 0.8) / 2])
    assert best_of_n_curve(select, other) == pytest.approx([(1 + 5) / 2, (2 + 5) / 2, (4 + 7) / 2])
    assert best_of_n_curve(select, other, [3]) == pytest.approx([(2 + 7) / 2])
    # NaN never wins; ties go to the earliest sample
    assert best_of_n_curve([[np.nan, 0.4, 0.4]], [[9.0, 1.0, 2.0]], [1, 3]) == [9.0, 1.0]
    with pytest.raises(ValueError):
        best_of_n_curve(select, other[:, :3])


def test_best_of_n_curve_never_decreases():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.random((7, 16))
        curve = best_of_n_curve(scores, scores, list(range(1, 17)))
        assert all(b >= a for a, b in zip(curve, curve[1:]))
        assert curve[0] == pytest.approx(scores[:, 0].mean()) and curve[-1] == pytest.approx(scores.max(1).mean())


@pytest.fixture(scope="module")
def tiny_run(tiny_annotations: Path, tiny_bins: Path, registry, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval-runs") / "tiny"
    Trainer(tiny_train_config(tiny_annotations, tiny_bins, out, steps=2), registry, progress=False).run()
    return out


def read_rows(folder: Path) -> list[dict]:
    return pq.read_table(folder / "rows.parquet").to_pylist()


def test_cli_eval_on_a_run_then_on_its_images(tiny_run: Path, tmp_path: Path):
    runner = CliRunner()
    out = tmp_path / "eval"
    args = ["eval", str(tiny_run), "--per-category", "1", "--n", "1", "--best-of", "2", "--best-by",
            "shapes-aesthetic", "--steps", "2", "--reward", "shapes-aesthetic=0.9", "--guidance", "1.5", "--out",
            str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "compositional: overall" in result.output and "best-of-N by shapes-aesthetic" in result.output
    for name in ("rows.parquet", "summary.parquet", "summary.json", "summary.md", "config.json"):
        assert (out / name).exists(), name
    rows = read_rows(out)
    assert len(rows) == 6 * 2 and sorted({r["category"] for r in rows}) == sorted(KINDS)
    assert all(0.0 <= r["shapes-aesthetic"] <= 1.0 and isinstance(r["passed"], bool) for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["rewards"]) == {"shapes-alignment", "shapes-aesthetic", "shapes-sharpness"}
    aesthetic = [r["shapes-aesthetic"] for r in rows]
    assert summary["rewards"]["shapes-aesthetic"]["mean"] == pytest.approx(np.mean(aesthetic))
    assert summary["rewards"]["shapes-aesthetic"]["std"] == pytest.approx(np.std(aesthetic))
    bench = summary["compositional"]
    accuracies = [bench["categories"][k]["accuracy"] for k in KINDS]
    assert bench["overall"] == pytest.approx(np.mean(accuracies))
    best = summary["best_of_n"]
    assert best["sizes"] == [1, 2] and best["best_by"] == "shapes-aesthetic"
    assert json.loads((out / "config.json").read_text())["best_by_used"] == "shapes-aesthetic"
    by_prompt = [max(r["shapes-aesthetic"] for r in rows if r["prompt_index"] == i) for i in range(6)]
    first = [r["shapes-aesthetic"] for r in rows if r["sample"] == 0]
    assert best["curves"]["shapes-aesthetic"] == pytest.approx([np.mean(first), np.mean(by_prompt)])
    config = json.loads((out / "config.json").read_text())
    assert config["step"] == 2 and config["guidance_used"] == 1.5 and config["source_kind"] == "run"
    assert config["reward_targets_used"] == {"shapes-alignment": 1.0, "shapes-aesthetic": 0.9,
                                             "shapes-sharpness": 1.0}
    assert len(list((out / "images").glob("0*.png"))) == 12
    assert config["components"]["rewards"]["shapes-aesthetic"]["options"]["batch_size"] is None
    assert "## Compositional benchmark" in (out / "summary.md").read_text()

    # the saved images read back as an image folder score the same
    again = tmp_path / "again"
    result = runner.invoke(app, ["eval", str(out / "images"), "--out", str(again)])
    assert result.exit_code == 0, result.output
    first_rows, second_rows = read_rows(out), read_rows(again)
    for a, b in zip(first_rows, second_rows):
        assert (a["file"], a["prompt"], a["passed"]) == (b["file"], b["prompt"], b["passed"])
        assert a["shapes-sharpness"] == pytest.approx(b["shapes-sharpness"])

    bad = runner.invoke(app, ["eval", str(out / "images"), "--reward", "shapes-aesthetic=1", "--out", str(again)])
    assert bad.exit_code == 1 and "only apply when evaluating a run" in bad.output
    unknown = runner.invoke(app, ["eval", str(tiny_run), "--rewards", "nope", "--out", str(tmp_path / "u")])
    assert unknown.exit_code == 1 and "unknown reward 'nope'" in unknown.output
    # --best-by is checked against the run's own rewards before any image is generated
    early = runner.invoke(app, ["eval", str(tiny_run), "--best-of", "2", "--best-by", "nope", "--out",
                                str(tmp_path / "b")])
    assert early.exit_code == 1 and "--best-by nope is not one of the run's rewards" in early.output
    assert not (tmp_path / "b" / "images").exists()


def test_cli_eval_on_miro_sample_output(tiny_run: Path, tmp_path: Path):
    runner = CliRunner()
    samples = tmp_path / "samples"
    result = runner.invoke(app, ["sample", str(tiny_run), "--prompt", "a red circle", "--prompt", "two squares",
                                 "--n", "2", "--steps", "2", "--out", str(samples)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "eval"
    result = runner.invoke(app, ["eval", str(samples), "--rewards", "shapes-sharpness", "--best-of", "2",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert [(r["prompt"], r["sample"]) for r in rows] == [
        ("a red circle", 0), ("a red circle", 1), ("two squares", 0), ("two squares", 1)
    ]
    assert {r["category"] for r in rows} == {"colours", "counting"}
    assert json.loads((out / "config.json").read_text())["source_kind"] == "images"


def test_cli_eval_on_hand_made_image_folder(hand_made, tmp_path: Path):
    prompts, images, truth = hand_made
    folder = tmp_path / "drawn"
    folder.mkdir()
    for i, image in enumerate(images):
        image.save(folder / f"case-{i:02d}.png")
    (folder / "prompts.txt").write_text("\n".join(prompts) + "\n")
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert [r["passed"] for r in rows] == truth
    assert [r["shapes-alignment"] == 1.0 for r in rows] == truth
    summary = json.loads((out / "summary.json").read_text())
    assert summary["compositional"]["overall"] == pytest.approx(EXPECTED_OVERALL)
    from miro_core.shapes.recognition import recognise

    assert summary["recognised_shapes"] == recognise(images).as_json()
    assert summary["recognised_shapes"]["share"] > 0.9  # hand-drawn shapes are recognised
    assert "Recognisable shapes:" in (out / "summary.md").read_text()
    assert "recognisable shapes:" in result.output
    table = {(r["metric"], r["category"]): r for r in pq.read_table(out / "summary.parquet").to_pylist()}
    assert table[("compositional", "overall")]["mean"] == pytest.approx(EXPECTED_OVERALL)
    assert table[("compositional", "two_objects")]["mean"] == 1.0
    assert table[("shapes-alignment", "two_objects")]["mean"] == 1.0
    (folder / "prompts.txt").write_text("a red circle\n")
    mismatch = CliRunner().invoke(app, ["eval", str(folder), "--out", str(tmp_path / "bad")])
    assert mismatch.exit_code == 1 and "1 prompts for 11 images" in mismatch.output


def test_cli_eval_strategy_options_and_what_config_records(tiny_run: Path, tmp_path: Path):
    runner = CliRunner()
    base = ["eval", str(tiny_run), "--per-category", "1", "--n", "1", "--steps", "2", "--no-images"]
    out = tmp_path / "isolate"
    result = runner.invoke(app, [*base, "--strategy", "isolate", "--strategy-option", "target=shapes-aesthetic",
                                 "--strategy-option", "scale=3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["strategy_used"] == "isolate" and config["guidance_used"] == 3.0
    assert config["strategy_options_used"] == {"target": "shapes-aesthetic"}
    assert config["negative_reward_targets_used"] == {"shapes-alignment": 1.0, "shapes-aesthetic": 0.0,
                                                      "shapes-sharpness": 1.0}
    # measured with the run's own rewards, each with its provenance
    assert config["reward_choice"]["origin"] == "run" and config["rewards"] == config["reward_keys"]
    assert "measured with the run's own rewards" in result.output
    components = config["components"]
    assert components["guidance"]["distribution"] == "miro" and components["sampler"]["name"] == "euler"
    assert components["backbone"]["distribution"] == "miro-backbone-hybrid"
    assert components["rewards"]["shapes-aesthetic"]["distribution"] == "miro-reward-shapes-aesthetic"
    assert "strategy isolate" in (out / "summary.md").read_text()

    cases = [
        (["--guidance", "2", "--strategy-option", "scale=3"], "--guidance 2 and --strategy-option scale=3 disagree"),
        (["--strategy-option", "interval_start=.nan"], "interval_start=.nan: must be a finite number"),
        (["--strategy", "nope"], "unknown guidance strategy 'nope'"),
        (["--strategy", "isolate"], "target: Field required"),
        (["--sampler", "rk4"], "unknown sampler 'rk4'"),
        (["--weights", "foo"], "--weights foo: choose ema"),
        (["--device", "gpu"], "--device gpu: not a device"),
    ]
    for extra, message in cases:
        result = runner.invoke(app, [*base, *extra, "--out", str(tmp_path / "bad")])
        assert result.exit_code == 1, (extra, result.output)
        assert message in " ".join(result.output.split()), (extra, result.output)
        assert not (tmp_path / "bad" / "config.json").exists()
    same = runner.invoke(app, [*base, "--guidance", "3", "--strategy-option", "scale=3", "--out", str(tmp_path / "s")])
    assert same.exit_code == 0, same.output


def test_cli_eval_falls_back_clearly_when_the_runs_rewards_cannot_load(tiny_run: Path, tmp_path: Path, monkeypatch):
    from miro_core import run_rewards
    from miro_core.evaluation import EvalConfig, run_eval
    from miro_core.plugins import build_registry

    keys = json.loads((tiny_run / "config.json").read_text())["reward_keys"]
    original, calls = run_rewards.load_reward, []

    def first_pass_needs_weights(registry, name, options, device, source=None):
        calls.append(name)
        if len(calls) <= len(keys):  # the run's own rewards: "weights not on this machine"
            return None, f"{name}: weights missing"
        return original(registry, name, options, device, source)

    monkeypatch.setattr(run_rewards, "load_reward", first_pass_needs_weights)
    lines: list[str] = []
    cfg = EvalConfig(source=str(tiny_run), out=str(tmp_path / "e"), per_category=1, n=1, steps=1, save_images=False)
    summary = run_eval(cfg, build_registry(), log=lines.append)
    choice = summary["reward_choice"]
    assert choice["origin"] == "fallback" and choice["measured"] == list(run_rewards.FALLBACK_REWARDS)
    assert choice["unavailable"] == {k: f"{k}: weights missing" for k in keys}
    assert any("shapes-world rewards (fallback)" in line and "not measured" in line for line in lines)
    assert "Measured with the shapes-world rewards (fallback)" in (tmp_path / "e" / "summary.md").read_text()


def test_cli_sample_records_the_targets_and_scale_it_used(tiny_run: Path, tmp_path: Path):
    runner = CliRunner()
    base = ["sample", str(tiny_run), "--prompt", "a red circle", "--n", "1", "--steps", "2"]
    result = runner.invoke(app, [*base, "--strategy-option", "scale=2.5", "--negative-reward", "shapes-aesthetic=0.3",
                                 "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["guidance"] == 2.5 and config["strategy"] == "miro" and config["strategy_options"] == {}
    assert config["negative_reward_targets"] == {"shapes-alignment": 0.0, "shapes-aesthetic": 0.3,
                                                 "shapes-sharpness": 0.0}
    assert set(config["components"]) == {"backbone", "text_encoder", "autoencoder", "guidance", "sampler"}
    assert config["components"]["text_encoder"]["distribution"] == "miro-text-minilm"
    result = runner.invoke(app, [*base, "--strategy", "cfg", "--reward", "shapes-sharpness=0.2", "--weights", "raw",
                                 "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["negative_reward_targets"] == config["reward_targets"], "cfg: both branches ask the same"
    assert config["reward_targets"]["shapes-sharpness"] == 0.2 and config["weights"] == "raw"
    assert config["guidance"] == 1.5, "the run's default weight"
    disagree = runner.invoke(app, [*base, "--guidance", "2", "--strategy-option", "scale=5", "--out",
                                   str(tmp_path / "c")])
    assert disagree.exit_code == 1 and "--guidance 2 and --strategy-option scale=5 disagree" in disagree.output
    assert not (tmp_path / "c").exists(), "nothing is written for a refused request"
