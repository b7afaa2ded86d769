"""Bins files: per-reward edges fitted on annotation tables, and the score -> level mapping.

``miro bins fit`` writes one JSON file holding, for every reward column, the binner's state and
summary statistics. Training and sampling read it back through :class:`BinsFile`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from miro_core.binning import Binner
from miro_core.data.atomic import read_json, write_json
from miro_core.errors import DataError

FORMAT = "miro-bins"
NON_REWARD_COLUMNS = {"key", "shard", "caption"}


def annotation_tables(url: str) -> list[str]:
    """The score tables of an annotation folder (or a single Parquet file)."""
    from miro_core.data.atomic import glob_urls

    if url.endswith(".parquet"):
        return [url]
    found = glob_urls(url, "scores/*.parquet")
    if not found:
        raise DataError(f"no annotation tables under {url}/scores; run `miro annotate ... --out {url}` first")
    return found


def read_annotations(url: str) -> dict[str, Any]:
    """Keys, shards, captions and reward name -> float array, from an annotation folder's score tables."""
    from miro_core.data.tables import read_tables

    rows = read_tables(annotation_tables(url)).to_pydict()
    scores = {
        name: np.asarray(values, dtype=np.float64) for name, values in rows.items() if name not in NON_REWARD_COLUMNS
    }
    return {
        "keys": [str(k) for k in rows["key"]],
        "shards": rows.get("shard", [""] * len(rows["key"])),
        "captions": rows.get("caption", [""] * len(rows["key"])),
        "scores": scores,
    }


def summary_stats(values: np.ndarray) -> dict[str, Any]:
    finite = values[np.isfinite(values)]
    stats: dict[str, Any] = {"count": int(values.size), "missing": int(values.size - finite.size)}
    if finite.size:
        stats.update(
            mean=float(finite.mean()),
            std=float(finite.std()),
            min=float(finite.min()),
            max=float(finite.max()),
            p05=float(np.quantile(finite, 0.05)),
            p50=float(np.quantile(finite, 0.5)),
            p95=float(np.quantile(finite, 0.95)),
        )
    return stats


@dataclass
class BinsFile:
    """Fitted binners for several rewards, as stored in a bins JSON file."""

    strategy: str
    num_bins: int
    binners: dict[str, Binner]
    stats: dict[str, dict[str, Any]]
    meta: dict[str, Any]

    @property
    def reward_keys(self) -> list[str]:
        return list(self.binners)

    def levels(self, name: str, values: np.ndarray) -> np.ndarray:
        if name not in self.binners:
            raise DataError(f"bins file has no reward {name!r}; it has: {', '.join(self.binners)}")
        return self.binners[name].transform(values)

    def grid(self) -> np.ndarray:
        """The ``num_bins`` possible levels (what sliders snap to)."""
        return np.linspace(0.0, 1.0, self.num_bins)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": 1,
            "strategy": self.strategy,
            "num_bins": self.num_bins,
            **self.meta,
            "rewards": {
                name: {**binner.state_dict(), "stats": self.stats.get(name, {})}
                for name, binner in self.binners.items()
            },
        }

    def save(self, url: str) -> None:
        write_json(url, self.to_json())

    @classmethod
    def from_json(cls, payload: dict[str, Any], registry: Any = None, source: str = "bins file") -> BinsFile:
        if payload.get("format") != FORMAT:
            raise DataError(f'{source} is not a miro bins file (no "format": "{FORMAT}")')
        if registry is None:
            from miro_core.plugins import get_registry

            registry = get_registry()
        binners: dict[str, Binner] = {}
        stats: dict[str, dict[str, Any]] = {}
        for name, state in payload["rewards"].items():
            options = {"num_bins": state["num_bins"], "ties": state.get("ties", "released")}
            binner = registry.binners.create(state["binner"], options)
            binner.load_state_dict(state)
            binners[name] = binner
            stats[name] = state.get("stats", {})
        meta = {k: v for k, v in payload.items() if k not in {"format", "version", "strategy", "num_bins", "rewards"}}
        return cls(payload["strategy"], int(payload["num_bins"]), binners, stats, meta)

    @classmethod
    def load(cls, url: str, registry: Any = None) -> BinsFile:
        try:
            payload = read_json(url)
        except FileNotFoundError:
            raise DataError(f"bins file {url} does not exist; create it with `miro bins fit`") from None
        except ValueError as err:
            raise DataError(f"bins file {url} is not valid JSON: {err}") from None
        return cls.from_json(payload, registry, source=url)


def fit_bins(
    annotations: str,
    *,
    num_bins: int = 64,
    strategy: str = "quantile",
    sample: int = 100_000,
    seed: int = 0,
    rewards: list[str] | None = None,
    ties: str = "released",
    registry: Any = None,
) -> BinsFile:
    """Fit one binner per reward column on up to ``sample`` random rows (MIRO fits on ~100k)."""
    if registry is None:
        from miro_core.plugins import get_registry

        registry = get_registry()
    if num_bins < 2:
        raise DataError(f"--bins {num_bins}: need at least 2 bins")
    columns = read_annotations(annotations)["scores"]
    names = rewards or list(columns)
    missing = [n for n in names if n not in columns]
    if missing:
        raise DataError(f"{annotations} has no reward column(s) {', '.join(missing)}; it has {', '.join(columns)}")
    rng = np.random.default_rng(seed)
    binners: dict[str, Binner] = {}
    stats: dict[str, dict[str, Any]] = {}
    for name in names:
        values = columns[name]
        chosen = values if values.size <= sample else values[rng.choice(values.size, size=sample, replace=False)]
        if not np.isfinite(chosen).any():
            raise DataError(f"reward {name!r} has no finite scores in {annotations}; cannot fit bins")
        binner = registry.binners.create(strategy, {"num_bins": num_bins, "ties": ties})
        binner.fit(chosen)
        binners[name] = binner
        stat = summary_stats(values)
        levels = binner.transform(values)
        finite_levels = levels[np.isfinite(levels)]
        stat["distinct_levels"] = int(np.unique(finite_levels).size)
        indices = np.rint(finite_levels * (num_bins - 1)).astype(np.int64)
        stat["level_counts"] = np.bincount(indices, minlength=num_bins).tolist()
        if stat["distinct_levels"] < num_bins // 4 and ties == "released":
            stat["warning"] = (
                f"only {stat['distinct_levels']} of {num_bins} levels used (tied scores); "
                "consider --ties spread so the best scores reach level 1"
            )
        if stat.get("min") == stat.get("max"):
            stat["warning"] = "constant column: every sample gets level 0, so this reward carries no information"
        stats[name] = stat
    meta = {"source": annotations, "sample": int(sample), "seed": int(seed), "ties": ties}
    return BinsFile(strategy, num_bins, binners, stats, meta)
