"""Shared loading code: tensors go straight into a meta-built model (one copy), nothing is left unset,
repo ids of both hub forms are recognised."""

from __future__ import annotations

import pytest
import torch
from miro_reward_common.checkpoints import (
    CheckpointError,
    assign_load,
    build_empty,
    looks_like_repo_id,
    read_state_dict,
)


def test_assign_load_puts_the_checkpoint_tensors_in_place(tmp_path):
    torch.manual_seed(0)
    source = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    torch.save(source.state_dict(), tmp_path / "w.pt")
    state = read_state_dict(tmp_path / "w.pt", reward="t")
    model = build_empty(lambda: torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3)))
    assert all(p.is_meta for p in model.parameters())
    assign_load(model, state, reward="t", source="w.pt")
    assert model[0].weight.data_ptr() == state["0.weight"].data_ptr()  # no second copy
    x = torch.randn(2, 4)
    torch.testing.assert_close(model(x), source(x))


def test_nothing_is_left_on_the_meta_device():
    model = build_empty(lambda: torch.nn.Linear(4, 3))
    with pytest.raises(CheckpointError, match=r"unset: bias"):
        assign_load(model, {"weight": torch.zeros(3, 4)}, reward="t", source="x", ignore_missing=["bias"])
    with pytest.raises(CheckpointError, match=r"shape mismatch.*weight \(4, 3\) vs \(3, 4\)"):
        assign_load(build_empty(lambda: torch.nn.Linear(4, 3)), {"weight": torch.zeros(4, 3)}, reward="t", source="x")


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("bert-base-uncased", True),
        ("gpt2", True),
        ("google/flan-t5-xxl", True),
        ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", True),
        ("./bert-base-uncased", False),
        ("/models/bert", False),
        ("~/bert", False),
        ("a/b/c", False),
        ("bad..name", False),
        ("name-", False),
        ("", False),
    ],
)
def test_repo_id_forms(spec, expected):
    assert looks_like_repo_id(spec) is expected
