"""The paper rewards pass the conformance kit on tiny random weights saved in their checkpoints' layouts.

(jina-clip runs remote code, which its own test covers; without weights every paper reward still passes
the weight-free checks: tests/test_conformance.py.)
"""

from __future__ import annotations

import pytest
from reference_layouts import load_record
from reference_layouts import write_vqascore as write_vqascore_release
from reward_helpers import tiny_clip, write_bert_tokenizer, write_clip_processor
from test_aesthetic import write_head
from test_hpsv2 import tiny_hps
from test_imagereward import write_checkpoint as write_imagereward

from miro_core.conformance import check_reward

NEEDS_WEIGHTS = ("batch equals one at a time", "inputs are not modified", "unusual inputs give finite-or-NaN scores",
                 "scores survive unload and load", "deterministic")


def aesthetic(root):
    clip = tiny_clip(root / "clip")
    (root / "head").mkdir()
    write_head(root / "head" / "sac+logos+ava1-l14-linearMSE.pth")
    return {"checkpoint": str(root / "head"), "clip_model": str(clip)}


def clip_scorer(root):
    return {"checkpoint": str(tiny_clip(root / "PickScore_v1")),
            "processor": str(write_clip_processor(root / "processor", size=32))}


def hpsv2(root):
    tiny_hps(root)
    return {"checkpoint": str(root)}


def imagereward(root):
    tokenizer = write_bert_tokenizer(root / "bert-base-uncased", size=1200)
    write_imagereward(root / "ImageReward", vocab=1202)
    return {"checkpoint": str(root / "ImageReward"), "tokenizer": str(tokenizer)}


def vqascore(root):
    # The t2v_metrics layout rebuilt from the reference record (tests/rewards/reference_layouts.py).
    return write_vqascore_release(load_record("vqascore"), root)


BUILDERS = {"aesthetic": aesthetic, "pickscore": clip_scorer, "sciscore": clip_scorer, "hpsv2": hpsv2,
            "imagereward": imagereward, "vqascore": vqascore}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_paper_reward_conforms_on_tiny_weights(registry, tmp_path, name):
    options = BUILDERS[name](tmp_path)
    report = check_reward(registry.rewards.get(name), options, require_weights=True, atol=1e-4, rtol=1e-3)
    assert set(NEEDS_WEIGHTS) <= set(report.passed), str(report)
