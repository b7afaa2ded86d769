"""Guidance strategies against hand-computed values on a fake velocity field."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from miro_core.errors import ConfigError
from miro_core.sampling import Branch, guided_sample

KEYS = ["a", "b", "c"]


def test_combine_formula(registry):
    strategy = registry.guidance.create("miro", {"scale": 7.0})
    v_pos, v_neg = np.array([1.0, 2.0]), np.array([0.5, -1.0])
    # (1 + w) v+ - w v- with w = 7
    np.testing.assert_allclose(strategy.combine(v_pos, v_neg, 7.0), [8 * 1.0 - 7 * 0.5, 8 * 2.0 - 7 * -1.0])


def test_miro_defaults_and_overrides(registry):
    strategy = registry.guidance.create("miro")
    assert strategy.negative_targets(KEYS, {k: 1.0 for k in KEYS}, {}) == {"a": 0.0, "b": 0.0, "c": 0.0}
    assert strategy.negative_targets(KEYS, {k: 1.0 for k in KEYS}, {"b": 0.25})["b"] == 0.25


def test_text_cfg_keeps_reward_targets(registry):
    strategy = registry.guidance.create("cfg")
    positive = {"a": 1.0, "b": 0.5, "c": 0.0}
    assert strategy.negative_targets(KEYS, positive, {}) == positive


def test_isolate_and_tradeoff(registry):
    isolate = registry.guidance.create("isolate", {"target": "b"})
    assert isolate.negative_targets(KEYS, {}, {}) == {"a": 1.0, "b": 0.0, "c": 1.0}
    tradeoff = registry.guidance.create("tradeoff", {"reward_a": "a", "reward_b": "c", "t": 0.3})
    assert tradeoff.negative_targets(KEYS, {}, {}) == {"a": 0.3, "b": 1.0, "c": pytest.approx(0.7)}
    with pytest.raises(ConfigError, match="not a reward"):
        registry.guidance.create("isolate", {"target": "zzz"}).negative_targets(KEYS, {}, {})


def test_schedules_and_interval(registry):
    constant = registry.guidance.create("miro", {"scale": 4.0})
    linear = registry.guidance.create("miro", {"scale": 4.0, "schedule": "linear"})
    interval = registry.guidance.create("miro", {"scale": 4.0, "interval_start": 0.2, "interval_end": 0.6})
    assert [constant.scale_at(s, 10) for s in (0, 5, 9)] == [4.0, 4.0, 4.0]
    assert [linear.scale_at(s, 10) for s in (0, 5, 9)] == pytest.approx([0.0, 4.0, 7.2])  # 2 w step / steps
    assert [interval.scale_at(s, 10) for s in (0, 1, 2, 5, 6, 9)] == [0.0, 0.0, 4.0, 4.0, 0.0, 0.0]
    assert registry.guidance.create("none").scale_at(3, 10) == 0.0


def test_an_interval_outside_the_run_or_empty_is_an_error(registry):
    """An interval that never applies would switch guidance off silently."""
    with pytest.raises(ConfigError, match="interval_start: Input should be less than or equal to 1"):
        registry.guidance.create("miro", {"interval_start": 2})
    with pytest.raises(ConfigError, match="must be below interval_end"):
        registry.guidance.create("miro", {"interval_start": 0.6, "interval_end": 0.4})
    with pytest.raises(ConfigError, match="interval_end: Input should be greater than or equal to 0"):
        registry.guidance.create("cfg", {"interval_end": -0.1})


def test_unknown_option_is_an_error(registry):
    with pytest.raises(ConfigError, match="scal"):
        registry.guidance.create("miro", {"scal": 3})


class FakeModel(torch.nn.Module):
    """v = x + 10 * text_mean + sum(levels); counts forward calls and batch sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def forward(self, x, t, tokens, mask, levels):
        self.calls.append(x.shape[0])
        shift = 10 * tokens.mean(dim=(1, 2)) + (levels.sum(dim=1) if levels is not None else 0)
        return x + shift.view(-1, 1, 1, 1)


def test_guided_sample_batches_branches_and_matches_hand_computation(registry):
    model = FakeModel()
    strategy = registry.guidance.create("miro", {"scale": 2.0})
    sampler = registry.samplers.create("euler")
    x1 = torch.ones(2, 1, 1, 1)
    pos = Branch(torch.ones(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 3))
    neg = Branch(torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), torch.zeros(2, 3))
    out = guided_sample(model, x1, pos, neg, strategy, sampler, num_steps=1)
    # one step t=1 -> 0: v+ = x + 10 + 3, v- = x + 0; v = 3 v+ - 2 v- = x + 39; x0 = x1 - v = -39
    assert torch.allclose(out, torch.full_like(out, -39.0))
    assert model.calls == [4], "positive and negative branches must share one batched forward pass"


def test_zero_weight_steps_skip_the_negative_branch(registry):
    model = FakeModel()
    strategy = registry.guidance.create("miro", {"scale": 2.0, "interval_start": 0.5})
    pos = Branch(torch.ones(1, 2, 2), torch.ones(1, 2, dtype=torch.bool), None)
    neg = Branch(torch.zeros(1, 2, 2), torch.ones(1, 2, dtype=torch.bool), None)
    guided_sample(model, torch.zeros(1, 1, 1, 1), pos, neg, strategy, registry.samplers.create("euler"), 4)
    assert model.calls == [1, 1, 2, 2]


@pytest.mark.parametrize(
    ("combine", "message"),
    [
        (lambda v_pos, v_neg, w: v_pos[:, :1], r"combine\(\) returned Tensor of shape \(2, 1, 1, 1\)"),
        (lambda v_pos, v_neg, w: v_pos * float("nan"), "NaN or infinite velocities"),
    ],
)
def test_a_combine_override_of_the_wrong_shape_or_non_finite_is_refused(registry, combine, message):
    """A wrong shape broadcast into the sampler's update (grey images, exit 0); NaN gave black images."""
    from miro_core.errors import PluginError
    from miro_core.guidance import GuidanceStrategy

    class Broken(GuidanceStrategy):
        name = "broken-combine"

    Broken.combine = staticmethod(combine)
    pos = Branch(torch.ones(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 3))
    neg = Branch(torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), torch.zeros(2, 3))
    with pytest.raises(PluginError, match=message):
        guided_sample(FakeModel(), torch.ones(2, 2, 1, 1), pos, neg, Broken({"scale": 2.0}),
                      registry.samplers.create("euler"), num_steps=2)
