"""Binning math: the released level rule, strategies, ties, NaNs, and property tests."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from miro_core.binning import levels_from_edges


def test_released_rule_hand_computed():
    edges = np.array([0.0, 1.0, 2.0, 3.0])  # B = 4 -> levels in steps of 1/3
    values = np.array([-5.0, 0.0, 0.5, 1.0, 1.5, 2.5, 3.0, 9.0])
    # bucketize(right=False): index i with edges[i-1] < v <= edges[i]; level = max(0, i - 1) / 3
    expected = np.array([0, 0, 0, 0, 1, 2, 2, 3]) / 3
    np.testing.assert_allclose(levels_from_edges(values, edges), expected)


def test_nan_stays_nan():
    levels = levels_from_edges(np.array([np.nan, 1.0]), np.array([0.0, 1.0, 2.0]))
    assert np.isnan(levels[0]) and levels[1] == 0.0


def test_spread_ties_reach_both_ends():
    edges = np.array([0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0])  # heavy ties at the top, some at 0
    released = levels_from_edges(np.array([0.0, 1.0]), edges, "released")
    spread = levels_from_edges(np.array([0.0, 1.0, 0.5, 0.75]), edges, "spread")
    assert released[1] < 0.5  # the released rule puts the best tied score low
    assert spread[0] == 0.0 and spread[1] == 1.0
    assert spread[2] == pytest.approx(2 / 7) and spread[3] == pytest.approx(2 / 7)


@pytest.mark.parametrize("strategy", ["quantile", "uniform"])
def test_binners_through_registry(registry, strategy):
    rng = np.random.default_rng(0)
    values = rng.normal(size=5000)
    binner = registry.binners.create(strategy, {"num_bins": 8}).fit(values)
    levels = binner.transform(values)
    np.testing.assert_allclose(levels * 7, np.rint(levels * 7), atol=1e-9)
    if strategy == "quantile":
        counts = np.bincount(np.rint(levels * 7).astype(int), minlength=8)
        assert counts[1:-1].min() > 0.8 * len(values) / 8  # roughly equal frequency
    else:
        np.testing.assert_allclose(binner.edges, np.linspace(values.min(), values.max(), 8))


def test_constant_column_and_nans(registry):
    binner = registry.binners.create("quantile", {"num_bins": 4}).fit(np.array([2.0, 2.0, np.nan, 2.0]))
    assert np.all(binner.transform(np.array([2.0, 1.0, 3.0])) == np.array([0.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="no finite"):
        registry.binners.create("quantile").fit(np.array([np.nan, np.nan]))


def test_state_round_trip(registry):
    binner = registry.binners.create("quantile", {"num_bins": 5, "ties": "spread"}).fit(np.arange(100.0))
    clone = registry.binners.create("quantile", {"num_bins": 5, "ties": "spread"})
    clone.load_state_dict(binner.state_dict())
    np.testing.assert_array_equal(clone.transform(np.arange(100.0)), binner.transform(np.arange(100.0)))


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(finite, min_size=2, max_size=200),
    probes=st.lists(finite, min_size=2, max_size=50),
    bins=st.integers(min_value=2, max_value=64),
    strategy=st.sampled_from(["quantile", "uniform"]),
    ties=st.sampled_from(["released", "spread"]),
)
def test_levels_monotone_and_on_grid(registry, data, probes, bins, strategy, ties):
    binner = registry.binners.create(strategy, {"num_bins": bins, "ties": ties}).fit(np.array(data))
    probes = np.sort(np.array(probes))
    levels = binner.transform(probes)
    assert np.all(np.diff(levels) >= 0), "levels must not decrease as the score grows"
    grid_index = levels * (bins - 1)
    np.testing.assert_allclose(grid_index, np.rint(grid_index), atol=1e-9)
    assert levels.min() >= 0 and levels.max() <= 1
