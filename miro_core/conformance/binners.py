"""Contract checks of binners."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from miro_core.conformance.runner import CheckRun, Report, check_common, require


# -- binners ----------------------------------------------------------------------------------------------------
def check_binner(
    cls: type[Any],
    options: Mapping[str, Any] | None = None,
    *,
    light_import: bool = True,
    raise_on_failure: bool = True,
) -> Report:
    """Check a :class:`~miro_core.binning.Binner` subclass: edges, levels, non-finite scores, state round trip."""
    from miro_core.binning import Binner

    options = {"num_bins": 8, **dict(options or {})}
    run = CheckRun(cls)
    if not check_common(run, cls, Binner, options, light_import):
        return run.finish(raise_on_failure)
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.3, 0.1, 500), rng.uniform(0, 1, 200), [np.nan, np.nan]])
    state: dict[str, Any] = {}

    def fit() -> None:
        original = values.copy()
        binner = cls(options).fit(values)
        require(np.array_equal(values, original, equal_nan=True), "fit() modified the scores it was given")
        edges = np.asarray(binner.edges, dtype=np.float64)
        bins = binner.num_bins
        require(edges.shape == (bins,), f"{edges.shape[0]} edges for num_bins={bins}")
        require(np.all(np.isfinite(edges)) and np.all(np.diff(edges) >= 0), "edges must be finite, non-decreasing")
        state["binner"] = binner

    if not run("fit gives num_bins non-decreasing edges", fit):
        run.skip(["levels lie on the grid", "levels are monotone", "non-finite scores give NaN", "deterministic",
                  "state survives a JSON round trip"], "fit() failed")
        return run.finish(raise_on_failure)
    binner = state["binner"]
    grid_size = binner.num_bins - 1

    def on_grid() -> None:
        levels = np.asarray(binner.transform(values[:-2]), dtype=np.float64)
        require(levels.shape == values[:-2].shape, "transform() changed the number of values")
        require(np.all((levels >= 0) & (levels <= 1)), "levels must lie in [0, 1]")
        require(np.allclose(levels * grid_size, np.round(levels * grid_size)), "levels must be i / (num_bins - 1)")

    def monotone() -> None:
        ordered = np.sort(values[:-2])
        require(np.all(np.diff(np.asarray(binner.transform(ordered))) >= 0), "a higher score got a lower level")

    def non_finite() -> None:
        bad = np.array([np.nan, np.inf, -np.inf, 0.3])
        levels = np.asarray(binner.transform(bad), dtype=np.float64)
        require(np.all(np.isnan(levels[:3])), f"NaN, +inf and -inf must give NaN (missing), got {levels[:3]}")
        require(np.isfinite(levels[3]), "a finite score got a non-finite level")

    def deterministic() -> None:
        again = cls(options).fit(values)
        require(np.array_equal(again.edges, binner.edges), "fitting the same scores twice gave different edges")

    def round_trip() -> None:
        saved = json.loads(json.dumps(binner.state_dict()))
        fresh = cls({**options, "num_bins": saved.get("num_bins", binner.num_bins)})
        fresh.load_state_dict(saved)
        probe = np.linspace(-0.5, 1.5, 41)
        require(
            np.array_equal(fresh.transform(probe), binner.transform(probe), equal_nan=True),
            "a binner loaded from state_dict() maps scores to other levels",
        )

    def degenerate() -> None:
        constant = cls(options).fit(np.full(50, 0.5))
        require(np.all(np.isfinite(constant.transform(np.array([0.4, 0.5, 0.6])))), "constant scores: bad levels")
        few = cls(options).fit(np.array([0.1, 0.2, 0.9]))
        require(np.all(np.isfinite(few.transform(np.array([0.0, 0.5, 1.0])))), "three scores: bad levels")

    run("levels lie on the grid", on_grid)
    run("levels are monotone", monotone)
    run("non-finite scores give NaN", non_finite)
    run("deterministic", deterministic)
    run("state survives a JSON round trip", round_trip)
    run("constant and tiny samples fit", degenerate)
    return run.finish(raise_on_failure)
