"""The binner contract: turn raw reward scores into the discrete levels MIRO conditions on.

MIRO-NOTES section 3: for a score ``v`` and ``B`` edges, the level is
``max(0, bucketize(v, edges) - 1) / (B - 1)``, a value in [0, 1] on a grid of ``B`` levels.
A missing score (NaN, or any non-finite value) gives NaN; the model turns it into a zero (or learned null)
embedding.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar, Literal

import numpy as np

from miro_core.component import Component, ComponentOptions


class BinnerOptions(ComponentOptions):
    num_bins: int = 64
    #: How scores equal to repeated edges (ties) are mapped: ``released`` applies the released code's
    #: rule as is (a tied value lands on the first of its equal edges, so a reward whose best score is
    #: shared by many samples never reaches the top levels); ``spread`` maps a tied run of edges to its
    #: middle, and a run touching either end to that end, so the best and worst scores get levels 1 and 0.
    ties: Literal["released", "spread"] = "released"


def levels_from_edges(values: np.ndarray, edges: np.ndarray, ties: str = "released") -> np.ndarray:
    """Map scores to levels with the released code's rule; a non-finite score (NaN, +-inf) is missing: NaN out.

    Missing means one thing everywhere: annotation stores NaN for every score that is not a finite float,
    and a level of NaN becomes the model's "no reward" embedding. (An infinite score must not become level
    0 or 1: that would teach the model that a broken score is the best or the worst.)

    ``np.searchsorted(edges, v, side="left")`` is ``torch.bucketize(v, edges, right=False)``.
    """
    values = np.asarray(values, dtype=np.float64)
    values = np.where(np.isfinite(values), values, np.nan)
    edges = np.asarray(edges, dtype=np.float64)
    num_bins = len(edges)
    if num_bins < 2:
        raise ValueError("a binner needs at least 2 edges")
    safe = np.nan_to_num(values, nan=edges[0])
    left = np.searchsorted(edges, safe, side="left")
    index = np.clip(left - 1, 0, num_bins - 1)
    if ties == "spread":
        right = np.searchsorted(edges, safe, side="right")
        tied = right - left >= 1  # the value equals at least one edge
        middle = np.clip((left + right - 1) // 2, 0, num_bins - 1)
        index = np.where(tied, middle, index)
        index = np.where(safe <= edges[0], 0, index)
        index = np.where(safe >= edges[-1], num_bins - 1, index)
    elif ties != "released":
        raise ValueError(f"unknown tie rule {ties!r}; use released or spread")
    levels = index / (num_bins - 1)
    return np.where(np.isfinite(values), levels, np.nan)


class Binner(Component):
    """Fits per-reward edges on a sample of scores and maps scores to levels in [0, 1]."""

    Options: ClassVar[type[ComponentOptions]] = BinnerOptions

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.edges: np.ndarray | None = None

    @classmethod
    def kind(cls) -> str:
        return "binner"

    @property
    def num_bins(self) -> int:
        return int(self.options.num_bins)

    @abstractmethod
    def fit_edges(self, values: np.ndarray) -> np.ndarray:
        """Return ``num_bins`` non-decreasing edges for finite ``values`` (NaNs already removed)."""

    def fit(self, values: np.ndarray) -> Binner:
        finite = np.asarray(values, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        if finite.size == 0:
            raise ValueError("no finite scores to fit bins on")
        edges = np.asarray(self.fit_edges(finite), dtype=np.float64)
        if edges.shape != (self.num_bins,) or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) < 0):
            raise ValueError(f"{self.name} produced invalid edges: need {self.num_bins} finite, non-decreasing")
        self.edges = edges
        return self

    def transform(self, values: np.ndarray) -> np.ndarray:
        if self.edges is None:
            raise RuntimeError("call fit() or load a bins file before transform()")
        return levels_from_edges(values, self.edges, self.options.ties)

    def state_dict(self) -> dict[str, Any]:
        if self.edges is None:
            raise RuntimeError("nothing to save: the binner is not fitted")
        return {
            "binner": self.name,
            "num_bins": self.num_bins,
            "ties": self.options.ties,
            "edges": self.edges.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        edges = np.asarray(state["edges"], dtype=np.float64)
        if len(edges) != self.num_bins:
            raise ValueError(f"bins state has {len(edges)} edges, binner expects {self.num_bins}")
        self.edges = edges
