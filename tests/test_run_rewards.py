"""Which rewards measure a run's images: the run's own, with its annotation options and distribution."""

from __future__ import annotations

import json
import types
from pathlib import Path

from miro_core.hookspecs import hookimpl
from miro_core.plugins import build_registry
from miro_core.rewards import RewardModel, RewardOptions
from miro_core.run_rewards import annotation_reward_options, annotation_sources, run_rewards
from miro_core.serve_logic import Scorer


class ScaledOptions(RewardOptions):
    scale: float = 1.0


def provider(distribution: str, value: float) -> types.ModuleType:
    class Same(RewardModel):
        name = "same"
        inputs = frozenset({"image"})
        Options = ScaledOptions

        def score(self, images, captions):
            return [value * self.options.scale] * len(images)

    module = types.ModuleType(distribution)
    module.MIRO_API = ">=1,<2"
    module.__distribution__ = distribution
    module.register_rewards = hookimpl(lambda register: register(Same))
    return module


def test_the_annotating_distribution_and_options_are_used_even_with_a_name_conflict(tmp_path: Path):
    registry = build_registry(load_entry_points=False, extra_plugins=[
        ("a", provider("dist-a", 0.25)), ("b", provider("dist-b", 0.75))])
    annotation = tmp_path / "ann"
    annotation.mkdir()
    (annotation / "config.json").write_text(json.dumps({
        "reward_options": {"same": {"scale": 2.0}},
        "components": {"rewards": {"same": {"name": "same", "version": "1", "plugin": "b", "distribution": "dist-b",
                                            "distribution_version": "test", "options": {"scale": 2.0}}}},
    }))
    run_config = {"reward_keys": ["same"], "train": {"data": str(annotation)}}
    assert annotation_reward_options(run_config) == {"same": {"scale": 2.0}}
    assert annotation_sources(run_config) == {"same": "dist-b:same"}
    assert run_rewards(run_config).sources == {"same": "dist-b:same"}
    scorer = Scorer(registry, run_config=run_config)
    assert scorer.choice.origin == "run" and scorer.names == ["same"]
    (scores,) = scorer.score([None], "x")
    assert scores == {"same": 1.5}, "dist-b's reward with the annotation's scale"
    assert scorer.provenance()["same"]["distribution"] == "dist-b"


def test_runs_that_record_nothing_fall_back_to_defaults(tmp_path: Path):
    assert annotation_reward_options({"train": {"data": str(tmp_path / "gone")}}) == {}
    assert run_rewards(None).note.startswith("the images name no run")
    assert run_rewards({"reward_keys": []}).note == "the run was trained without rewards"


def test_options_are_found_through_the_records_a_run_was_trained_on(tmp_path: Path):
    annotation, records = tmp_path / "ann", tmp_path / "records"
    annotation.mkdir()
    records.mkdir()
    (annotation / "config.json").write_text(json.dumps({"reward_options": {"pickscore": {"checkpoint": "/w"}}}))
    (records / "records.json").write_text(json.dumps({"source": str(annotation)}))
    run_config = {"reward_keys": ["pickscore"], "train": {"data": str(records)}}
    assert annotation_reward_options(run_config) == {"pickscore": {"checkpoint": "/w"}}
