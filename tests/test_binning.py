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


def test_non_finite_scores_are_missing_levels(registry):
    binner = registry.binners.create("quantile", {"num_bins": 4}).fit(np.arange(10.0))
    levels = binner.transform(np.array([np.inf, -np.inf, np.nan, 0.0, 100.0]))
    assert np.isnan(levels[:3]).all() and levels[3] == 0.0 and levels[4] == 1.0
    for ties in ("released", "spread"):
        edges = np.array([0.0, 1.0, 2.0])
        assert np.isnan(levels_from_edges(np.array([np.inf, -np.inf]), edges, ties)).all()


class ShiftedBinner(__import__("miro_core.binning", fromlist=["Binner"]).Binner):
    """A third-party-style binner with an option of its own: uniform edges from ``low`` to the maximum."""

    name = "shifted"

    class Options(__import__("miro_core.binning", fromlist=["BinnerOptions"]).BinnerOptions):
        low: float = 0.0

    def fit_edges(self, values):
        return np.linspace(self.options.low, float(values.max()), self.num_bins)


class CustomRuleBinner(ShiftedBinner):
    """Replaces the level rule itself: its bins files need the plugin to be read."""

    name = "custom-rule"

    def transform(self, values):
        return np.clip(np.asarray(values, dtype=np.float64) / 10.0, 0.0, 1.0)


def _registry_with(*classes):
    from miro_core.plugins import build_registry

    reg = build_registry()
    for cls in classes:
        reg.binners.add(cls, "test-binners", "test-binners-dist", "0.3")
    return reg


def test_binner_option_provenance_and_a_self_contained_bins_file(tiny_annotations, tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    import miro_cli.bins_cmd as bins_cmd
    from miro_cli.main import app
    from miro_core.bins import BinsFile
    from miro_core.plugins import build_registry

    reg = _registry_with(ShiftedBinner)
    monkeypatch.setattr(bins_cmd, "registry", lambda warn=True: reg)
    out = tmp_path / "bins.json"
    result = CliRunner().invoke(
        app,
        ["bins", "fit", str(tiny_annotations), "--out", str(out), "--strategy", "shifted", "--bins", "8",
         "--binner-option", "low=-1.5"],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert payload["binner"]["distribution"] == "test-binners-dist"
    assert payload["binner"]["distribution_version"] == "0.3"
    assert payload["binner"]["options"]["low"] == -1.5 and payload["levels_rule"] == "edges"
    reward = next(iter(payload["rewards"]))
    assert payload["rewards"][reward]["edges"][0] == -1.5 and payload["rewards"][reward]["options"]["low"] == -1.5
    # The binner plugin is gone: the bins file still maps scores to the same levels.
    fitted = BinsFile.load(str(out), reg)
    alone = BinsFile.load(str(out), build_registry())
    values = np.linspace(-3, 3, 50)
    np.testing.assert_array_equal(fitted.levels(reward, values), alone.levels(reward, values))
    alone.save(str(tmp_path / "again.json"))
    assert json.loads((tmp_path / "again.json").read_text())["rewards"] == payload["rewards"]
    bad = CliRunner().invoke(
        app, ["bins", "fit", str(tiny_annotations), "--out", str(tmp_path / "x.json"), "--strategy", "shifted",
              "--binner-option", "nope=1"],
    )
    assert bad.exit_code == 1 and "nope" in bad.output and not (tmp_path / "x.json").exists()


def test_a_custom_level_rule_needs_its_plugin_and_says_so(tiny_annotations, tmp_path):
    from miro_core.bins import BinsFile, fit_bins
    from miro_core.errors import DataError
    from miro_core.plugins import build_registry

    reg = _registry_with(CustomRuleBinner)
    fitted = fit_bins(str(tiny_annotations), num_bins=4, strategy="custom-rule", registry=reg)
    path = tmp_path / "bins.json"
    fitted.save(str(path))
    assert BinsFile.load(str(path), reg).levels(fitted.reward_keys[0], np.array([5.0]))[0] == 0.5
    with pytest.raises(DataError, match=r"bins\.json.*custom-rule.*test-binners-dist"):
        BinsFile.load(str(path), build_registry())


def test_version_1_bins_files_still_load(tmp_path):
    import json

    from miro_core.bins import BinsFile

    legacy = {
        "format": "miro-bins", "version": 1, "strategy": "quantile", "num_bins": 3, "source": "a",
        "rewards": {"r": {"binner": "quantile", "num_bins": 3, "ties": "released", "edges": [0.0, 1.0, 2.0]}},
    }
    (tmp_path / "old.json").write_text(json.dumps(legacy))
    bins = BinsFile.load(str(tmp_path / "old.json"))
    np.testing.assert_array_equal(bins.levels("r", np.array([0.5, 1.5, 5.0])), [0.0, 0.5, 1.0])


def test_a_binner_whose_edges_hold_nan_is_refused():
    """NaN compares false both ways, so a NaN edge slipped past the non-decreasing check into bins.json."""
    from miro_core.binning import Binner

    class NanEdges(Binner):
        name = "nan-edges"

        def fit_edges(self, values):
            edges = np.linspace(0.0, 1.0, self.num_bins)
            edges[2] = np.nan
            return edges

    with pytest.raises(ValueError, match="nan-edges produced invalid edges: need 8 finite"):
        NanEdges({"num_bins": 8}).fit(np.arange(20.0))
