"""Built-in binners: quantile (equal frequency, the paper's default) and uniform (equal width)."""

from __future__ import annotations

import numpy as np

from miro_core.binning import Binner
from miro_core.hookspecs import Register, hookimpl


class QuantileBinner(Binner):
    """Edges at the ``B`` evenly spaced quantiles, so every level holds about the same number of samples.

    Heavy ties (many equal scores) give repeated edges; the level rule still maps each score to one
    level and stays monotone.
    """

    name = "quantile"
    description = "equal-frequency edges (MIRO default, 64 bins)"

    def fit_edges(self, values: np.ndarray) -> np.ndarray:
        return np.quantile(values, np.linspace(0.0, 1.0, self.num_bins))


class UniformBinner(Binner):
    """Edges evenly spaced between the smallest and largest score."""

    name = "uniform"
    description = "equal-width edges between min and max"

    def fit_edges(self, values: np.ndarray) -> np.ndarray:
        return np.linspace(float(values.min()), float(values.max()), self.num_bins)


@hookimpl
def register_binners(register: Register) -> None:
    register(QuantileBinner)
    register(UniformBinner)
