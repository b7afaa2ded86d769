"""End to end: the demo pipeline on a tiny shapes world writes its grid and report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from miro_core.demo import DEMO_REWARDS, run_demo

from .conftest import tiny_train_config


@pytest.mark.slow
def test_tiny_demo_writes_grid_and_report(registry, tmp_path: Path):
    config = tmp_path / "tiny.yaml"
    cfg = tiny_train_config(tmp_path, tmp_path, tmp_path, steps=6, save_every=3).model_dump(mode="json")
    for key in ("data", "bins", "out", "no_rewards"):
        cfg.pop(key)
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "demo"
    report = run_demo(out, registry, samples=200, config=config, images_per_prompt=2, steps=3, log=lambda _: None)
    assert (out / "grid.png").exists() and (out / "report.md").exists()
    stored = json.loads((out / "report.json").read_text())
    assert stored == json.loads(json.dumps(report))
    assert set(stored["rewards"]) == set(DEMO_REWARDS)
    for values in stored["rewards"].values():
        assert set(values) == {"high", "low"} and all(0.0 <= v <= 1.0 for v in values.values())
    assert set(stored["seconds"]) == {"data", "annotate", "bins", "encode", "train", "sample", "score"}
    # training streamed the records the encode stage wrote (not the annotations)
    run_config = json.loads((out / "run" / "config.json").read_text())
    assert run_config["data"]["records"] == str(out / "records") and run_config["data"]["samples"] == 200
    assert stored["train_steps"] == 6
    recognition = stored["recognised_shapes"]
    assert set(recognition) == {"high", "low", "training data"}
    assert recognition["high"]["images"] == 16 and recognition["training data"]["images"] == 16
    # rendered training images are drawn exactly, so nearly every object in them is recognised
    assert recognition["training data"]["share"] >= 0.9
    assert "Recognisable shapes" in (out / "report.md").read_text()
    assert stored["guidance_options"] == {"interval_start": 0.3}
    assert "| shapes-sharpness |" in (out / "report.md").read_text()
    # a second run reuses every finished stage
    again = run_demo(out, registry, samples=200, config=config, images_per_prompt=2, steps=3, log=lambda _: None)
    assert again["train_steps"] == 6 and again["seconds"]["train"] < stored["seconds"]["train"] + 5


def test_the_announced_training_time_follows_the_steps():
    """`miro demo --steps N` announces a time for N steps, not the 3000-step demo's."""
    from miro_core.demo import expected_training_time

    assert expected_training_time(3000) == "about 6 minutes"
    assert expected_training_time(200) == "about 24 seconds"
