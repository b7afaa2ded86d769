"""Bins files: per-reward edges fitted on annotation tables, and the score -> level mapping.

``miro bins fit`` writes one JSON file holding, for every reward column, the fitted edges, the level
rule, the binner's resolved options and summary statistics, plus which installed code fitted them
(the binner's provenance). Training and sampling read it back through :class:`BinsFile`.

A bins file is self-contained: the level of a score is ``max(0, bucketize(v, edges) - 1) / (B - 1)``
(:func:`miro_core.binning.levels_from_edges`) with the recorded tie rule, so reading one never needs the
binner plugin that fitted it (a run can be trained, resumed and sampled after the plugin is
uninstalled). Only a binner that replaces the level rule itself (overrides ``transform``) is recorded as
``"levels_rule": "plugin"``; loading that file needs the plugin, and the error names the file and the
distribution to install.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from miro_core.binning import Binner, BinnerOptions
from miro_core.data.atomic import read_json, write_json
from miro_core.errors import DataError, MiroError, PluginError

FORMAT = "miro-bins"
FORMAT_VERSION = 2
NON_REWARD_COLUMNS = {"key", "shard", "caption"}
#: Level rules a bins file can record.
RULE_EDGES = "edges"
RULE_PLUGIN = "plugin"


class FittedBins(Binner):
    """Edges read from a bins file: maps scores to levels with the standard rule, needs no plugin.

    Keeps the name and options of the binner that fitted the edges, so saving the file again writes
    what was read.
    """

    name = "fitted-edges"
    description = "edges read from a bins file (not registered; cannot fit)"

    def __init__(self, binner_name: str, options: BinnerOptions, edges: np.ndarray, extra: dict[str, Any]) -> None:
        super().__init__(options)
        self.binner_name = binner_name
        self.edges = np.asarray(edges, dtype=np.float64)
        self.extra_options = extra

    def fit_edges(self, values: np.ndarray) -> np.ndarray:
        raise DataError(
            f"these edges were read from a bins file (fitted by binner {self.binner_name!r}); "
            "fit new ones with `miro bins fit`"
        )

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["binner"] = self.binner_name
        return state


def checked_levels(binner: Binner, values: np.ndarray, levels: Any, who: str | None = None) -> np.ndarray:
    """A binner's ``transform`` result, checked at the boundary: one level in [0, 1] per finite score.

    A binner that overrides ``transform`` is a plugin's code; levels outside [0, 1], NaN for a real score or
    a result of another length would reach the model as conditioning it never saw in training, so they stop
    the command with a message naming the binner (``who``: its name and distribution).
    """
    values = np.asarray(values, dtype=np.float64)
    who = who or f"binner {binner.name!r} ({type(binner).__module__}.{type(binner).__qualname__})"
    problem = None
    try:
        array = np.asarray(levels, dtype=np.float64)
    except (TypeError, ValueError):
        array, problem = None, f"transform() returned {type(levels).__name__}, not an array of numbers"
    if array is not None and array.shape != values.shape:
        problem = f"transform() returned levels shaped {array.shape} for scores shaped {values.shape}"
    elif array is not None:
        finite = np.isfinite(values)
        bad = finite & ~(np.isfinite(array) & (array >= 0.0) & (array <= 1.0))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            problem = (
                f"transform() returned level {float(array[first]):g} for score {float(values[first]):g} "
                f"({int(bad.sum())} of {int(finite.sum())} levels outside [0, 1])"
            )
    if problem is not None:
        raise PluginError(
            f"{who} broke the binner contract: {problem}; transform() must return one level in [0, 1] per score "
            "(NaN for a missing score). Check it with miro_core.conformance.check_binner"
        )
    return array  # type: ignore[return-value]


def _probe_values(edges: np.ndarray) -> np.ndarray:
    """Scores that exercise every bin of ``edges``: the edges, their midpoints, beyond both ends, non-finite."""
    edges = np.asarray(edges, dtype=np.float64)
    span = float(edges[-1] - edges[0]) or 1.0
    middles = (edges[:-1] + edges[1:]) / 2
    return np.concatenate([edges, middles, [edges[0] - span, edges[-1] + span, np.nan, np.inf, -np.inf]])


def describe_binner(binner: Binner, provenance: dict[str, Any] | None = None) -> str:
    """``binner 'x' (distribution 1.2)``, or with the class when the distribution is unknown."""
    if provenance and provenance.get("distribution") not in (None, "?"):
        return f"binner {binner.name!r} ({provenance['distribution']} {provenance.get('distribution_version', '?')})"
    return f"binner {binner.name!r} ({type(binner).__module__}.{type(binner).__qualname__})"


def uses_standard_rule(binner: Binner) -> bool:
    """Whether the binner's levels are the standard edges rule (it does not override ``transform``)."""
    return type(binner).transform is Binner.transform


def annotation_tables(url: str) -> list[str]:
    """The score tables of an annotation folder, of a records folder (``miro encode`` keeps the raw scores
    of every record, so bins are refitted without the annotations or encoding again), or a Parquet file."""
    from miro_core.data.atomic import glob_urls

    if url.endswith(".parquet"):
        return [url]
    from miro_core.records.layout import is_records

    if is_records(url):
        return _records_score_tables(url)
    found = glob_urls(url, "scores/*.parquet")
    if not found:
        raise DataError(f"no annotation tables under {url}/scores; run `miro annotate ... --out {url}` first")
    return found


def _records_score_tables(url: str) -> list[str]:
    from miro_core.data.atomic import exists
    from miro_core.records.layout import read_records, score_table_url

    info = read_records(url)
    if not info.score_keys:
        raise DataError(f"the records at {url} hold no reward scores (encoded from bare shards); nothing to fit")
    tables = [score_table_url(shard["url"]) for shard in info.shards]
    missing = next((t for t in tables if not exists(t)), None)
    if missing is not None:
        raise DataError(
            f"the records at {url} have no score table {missing} (records written before miro encode kept them); "
            f"fit the bins on the annotations they were encoded from: `miro bins fit {info.source or 'ANNOTATIONS'}`"
        )
    return tables


def read_annotations(url: str) -> dict[str, Any]:
    """Keys, shards, captions and reward name -> float array, from an annotation folder's score tables.

    Every non-finite score (NaN, +-inf) is NaN here: a missing reward, whatever wrote the table.
    """
    from miro_core.data.tables import check_score_tables, read_tables

    tables = annotation_tables(url)
    check_score_tables(tables)
    rows = read_tables(tables).to_pydict()
    scores = {}
    for name, values in rows.items():
        if name in NON_REWARD_COLUMNS:
            continue
        try:
            array = np.asarray(values, dtype=np.float64)  # nulls become NaN
        except (TypeError, ValueError):
            raise DataError(f"column {name!r} of the annotation tables in {url} is not numeric") from None
        scores[name] = np.where(np.isfinite(array), array, np.nan)
    return {
        "keys": [str(k) for k in rows["key"]],
        "shards": rows.get("shard", [""] * len(rows["key"])),
        "captions": rows.get("caption", [""] * len(rows["key"])),
        "scores": scores,
    }


def _stable_std(values: np.ndarray) -> float:
    """The standard deviation without overflow: scores near 1e300 are finite, their squares are not."""
    scale = float(np.abs(values).max()) or 1.0
    return float((values / scale).std() * scale)


def summary_stats(values: np.ndarray) -> dict[str, Any]:
    finite = values[np.isfinite(values)]
    stats: dict[str, Any] = {"count": int(values.size), "missing": int(values.size - finite.size)}
    if finite.size:
        stats.update(
            mean=float(finite.mean()),
            std=float(_stable_std(finite)),
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
        """Levels in [0, 1] of ``values`` for reward ``name``; NaN for every non-finite (missing) score."""
        if name not in self.binners:
            raise DataError(f"bins file has no reward {name!r}; it has: {', '.join(self.binners)}")
        values = np.asarray(values, dtype=np.float64)
        binner = self.binners[name]
        if uses_standard_rule(binner):
            levels = np.asarray(binner.transform(values), dtype=np.float64)
        else:  # a plugin's own level rule: checked on every call
            provenance = self.meta.get("binner") if isinstance(self.meta.get("binner"), dict) else None
            levels = checked_levels(binner, values, binner.transform(values), describe_binner(binner, provenance))
        return np.where(np.isfinite(values), levels, np.nan)

    def grid(self) -> np.ndarray:
        """The ``num_bins`` possible levels (what sliders snap to)."""
        return np.linspace(0.0, 1.0, self.num_bins)

    def to_json(self) -> dict[str, Any]:
        rewards = {}
        for name, binner in self.binners.items():
            standard = uses_standard_rule(binner)
            options = binner.options.model_dump(mode="json")
            if isinstance(binner, FittedBins):
                options.update(binner.extra_options)
            rewards[name] = {
                **binner.state_dict(),
                "levels_rule": RULE_EDGES if standard else RULE_PLUGIN,
                "options": options,
                "stats": self.stats.get(name, {}),
            }
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "strategy": self.strategy,
            "num_bins": self.num_bins,
            **self.meta,
            "rewards": rewards,
        }

    def save(self, url: str) -> None:
        write_json(url, self.to_json())

    @classmethod
    def from_json(cls, payload: dict[str, Any], registry: Any = None, source: str = "bins file") -> BinsFile:
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise DataError(f'{source} is not a miro bins file (no "format": "{FORMAT}")')
        binners: dict[str, Binner] = {}
        stats: dict[str, dict[str, Any]] = {}
        try:
            if not payload["rewards"]:
                raise DataError(f"{source} holds no reward; refit it with `miro bins fit`")
            for name, state in payload["rewards"].items():
                binners[name] = _binner_from_state(state, payload, registry, source)
                if isinstance(binners[name], FittedBins):
                    _check_edges(binners[name], name, source)
                stats[name] = state.get("stats", {})
            num_bins = int(payload["num_bins"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(
                f"{source} is damaged or from an unknown version: {err!r}; refit it with `miro bins fit`"
            ) from None
        meta = {k: v for k, v in payload.items() if k not in {"format", "version", "strategy", "num_bins", "rewards"}}
        return cls(payload.get("strategy", "?"), num_bins, binners, stats, meta)

    @classmethod
    def load(cls, url: str, registry: Any = None) -> BinsFile:
        try:
            payload = read_json(url)
        except FileNotFoundError:
            raise DataError(f"bins file {url} does not exist; create it with `miro bins fit`") from None
        except (IsADirectoryError, UnicodeDecodeError) as err:
            raise DataError(f"bins file {url} cannot be read: {err}") from None
        except ValueError as err:
            raise DataError(f"bins file {url} is not valid JSON: {err}") from None
        return cls.from_json(payload, registry, source=url)


def _check_edges(binner: FittedBins, reward: str, source: str) -> None:
    """Edges read from a file: ``num_bins`` (at least 2) finite, non-decreasing numbers, or a DataError.

    A hand-edited or damaged file would otherwise map scores to levels outside the grid the model was trained
    on (NaN edges put every score in level 0, descending ones scramble the levels), silently.
    """
    edges = binner.edges
    problem = None
    if binner.num_bins < 2:
        problem = f"num_bins is {binner.num_bins}; it must be 2 or more"
    elif edges.ndim != 1 or len(edges) != binner.num_bins:
        problem = f"it has {edges.size} edges for {binner.num_bins} bins"
    elif not np.isfinite(edges).all():
        problem = f"its edges hold a non-finite value ({edges[~np.isfinite(edges)][0]})"
    elif (np.diff(edges) < 0).any():
        problem = "its edges are not in increasing order"
    if problem is not None:
        raise DataError(f"{source}: reward {reward!r} cannot be used: {problem}; refit it with `miro bins fit`")


def _binner_from_state(state: dict[str, Any], payload: dict[str, Any], registry: Any, source: str) -> Binner:
    """A binner for one reward's state: self-contained edges, or the plugin for a plugin level rule."""
    name = state["binner"]
    rule = state.get("levels_rule", RULE_EDGES)
    recorded = dict(state.get("options") or {})
    base = {"num_bins": int(state["num_bins"]), "ties": state.get("ties", "released")}
    if rule == RULE_EDGES:
        extra = {k: v for k, v in recorded.items() if k not in base}
        return FittedBins(name, BinnerOptions(**base), np.asarray(state["edges"], dtype=np.float64), extra)
    if rule != RULE_PLUGIN:
        raise DataError(f"{source}: unknown levels_rule {rule!r} for binner {name!r}; refit with `miro bins fit`")
    provenance = payload.get("binner", {}) if isinstance(payload.get("binner"), dict) else {}
    distribution = provenance.get("distribution") or "the plugin that provides it"
    if registry is None:
        from miro_core.plugins import get_registry

        registry = get_registry()
    try:
        binner = registry.binners.create(name, {**recorded, **base})
    except MiroError as err:
        raise DataError(
            f"bins file {source} was fitted by binner {name!r} ({distribution}), whose own level rule is needed to "
            f"read it, and it cannot be used here: {err}. Install {distribution}, or refit the bins with a binner "
            "that uses the standard edges rule"
        ) from None
    binner.load_state_dict(state)
    if binner.edges is not None:  # fail when the file is read, not in a training worker
        probe = _probe_values(binner.edges)
        checked_levels(binner, probe, binner.transform(probe), describe_binner(binner, provenance))
    return binner


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
    binner_options: dict[str, Any] | None = None,
) -> BinsFile:
    """Fit one binner per reward column on up to ``sample`` random rows (MIRO fits on ~100k).

    ``binner_options`` are the binner's own options (``--binner-option KEY=VALUE``); ``num_bins`` and
    ``ties`` have their own arguments. Non-finite scores are missing: counted, never fitted on.
    """
    if registry is None:
        from miro_core.plugins import get_registry

        registry = get_registry()
    if num_bins < 2:
        raise DataError(f"--bins {num_bins}: need at least 2 bins")
    if sample < 1:
        raise DataError(f"--sample {sample}: need at least 1 row")
    extra = dict(binner_options or {})
    clash = sorted({"num_bins", "ties"} & set(extra))
    if clash:
        raise DataError(f"--binner-option {clash[0]}: set it with --{'bins' if clash[0] == 'num_bins' else 'ties'}")
    options = {**extra, "num_bins": num_bins, "ties": ties}
    registry.binners.create(strategy, options)  # unknown binner or invalid options: fail before reading data
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
            others = [n for n in columns if n != name]
            leave_out = f"leave it out (--rewards {','.join(others)}) or " if others else ""
            raise DataError(
                f"reward {name!r} has no finite scores in {annotations}; cannot fit bins: {leave_out}annotate it "
                "again (`miro annotate --retry-errors`)"
            )
        binner = registry.binners.create(strategy, options)
        try:
            with np.errstate(all="ignore"):  # an overflow is reported below with the scores' range, not as a warning
                binner.fit(chosen)
        except ValueError as err:
            finite = chosen[np.isfinite(chosen)]
            raise DataError(
                f"binner {strategy!r} failed on reward {name!r} (scores from {finite.min():.6g} to "
                f"{finite.max():.6g}): {err}"
            ) from None
        binners[name] = binner
    provenance: dict[str, Any] = {"name": strategy}
    with contextlib.suppress(MiroError, AttributeError, KeyError):
        provenance = dict(registry.provenance("binners", strategy))
    for name, binner in binners.items():
        stats[name] = level_stats(columns[name], binner, num_bins, ties, describe_binner(binner, provenance))
    provenance["options"] = next(iter(binners.values())).options.model_dump(mode="json")
    meta = {
        "source": annotations,
        "sample": int(sample),
        "seed": int(seed),
        "ties": ties,
        "binner": provenance,
        "levels_rule": RULE_EDGES if all(uses_standard_rule(b) for b in binners.values()) else RULE_PLUGIN,
    }
    return BinsFile(strategy, num_bins, binners, stats, meta)


def level_stats(values: np.ndarray, binner: Binner, num_bins: int, ties: str, who: str | None = None) -> dict[str, Any]:
    """Summary statistics of one reward's scores and how its levels are used (the levels checked: see
    :func:`checked_levels`)."""
    stat = summary_stats(values)
    levels = checked_levels(binner, values, binner.transform(values), who)
    finite_levels = levels[np.isfinite(values) & np.isfinite(levels)]
    stat["distinct_levels"] = int(np.unique(finite_levels).size)
    indices = np.clip(np.rint(finite_levels * (num_bins - 1)).astype(np.int64), 0, num_bins - 1)
    stat["level_counts"] = np.bincount(indices, minlength=num_bins).tolist()
    if stat["distinct_levels"] < num_bins // 4 and ties == "released":
        stat["warning"] = (
            f"only {stat['distinct_levels']} of {num_bins} levels used (tied scores); "
            "consider --ties spread so the best scores reach level 1"
        )
    if stat.get("min") == stat.get("max"):
        stat["warning"] = "constant column: every sample gets level 0, so this reward carries no information"
    return stat
