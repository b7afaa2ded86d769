"""The annotation folder on disk: finished tables, in-progress parts, resume state and leftovers.

Layout (every file written atomically)::

    OUT/config.json                       the resolved configuration, components and their provenance
    OUT/scores/<shard>.parquet            key, shard, caption, one float64 column per reward
    OUT/errors/<shard>.parquet            key, shard, stage, reason (see miro_core.data.tables)
    OUT/parts/<shard>/rows-N.parquet      in-progress rows of an unfinished shard ...
    OUT/parts/<shard>/errors-N.parquet    ... its error rows ...
    OUT/parts/<shard>/part-N.json         ... and the commit marker: {"upto": samples of the shard handled}
    OUT/parts/<shard>/column-R.parquet    sequential mode: one reward's scores of the shard (+ errors-R)
    OUT/runs/<start>-rank<r>-pid<p>-<token>.json  one record per process and run (see summary.py)
    OUT/summary.json                      totals of the folder across resumes and ranks
    OUT/.locks/                           the writers' locks (miro_core.data.lock)

A shard is finished when ``scores/<shard>.parquet`` exists. Parts are committed by their marker, written
last; a part without one (the run was killed while writing it) is ignored and overwritten. Parts written
by earlier versions (no markers) are read by key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from miro_core.data.atomic import TMP_MARKER, exists, filesystem, join, read_json, remove, write_json
from miro_core.data.shards import shard_name
from miro_core.data.tables import (
    ERROR_COLUMNS,
    STAGE_DUPLICATE,
    STAGE_INPUT,
    STAGE_SHARD,
    read_table,
    write_table,
)


@dataclass
class ShardProgress:
    """What is already done of one unfinished shard, and the rows collected since the last flush."""

    shard: str
    upto: int = 0
    kept: set[str] = field(default_factory=set)
    done_rows: list[dict[str, Any]] = field(default_factory=list)
    done_errors: list[dict[str, Any]] = field(default_factory=list)
    next_part: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    batches_since_flush: int = 0
    new_upto: int = 0


@dataclass
class ShardCounts:
    """The totals of one finished shard, as recorded in the run records and summed in summary.json."""

    samples: int
    scored: int
    errors: dict[str, int]
    fault: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"samples": self.samples, "scored": self.scored, "errors": self.errors, "fault": self.fault}

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]], errors: list[dict[str, Any]]) -> ShardCounts:
        by_stage: dict[str, int] = {}
        for error in errors:
            by_stage[error["stage"]] = by_stage.get(error["stage"], 0) + 1
        fault = next((e["reason"] for e in errors if e["stage"] == STAGE_SHARD), None)
        return cls(len(rows) + by_stage.get(STAGE_INPUT, 0), len(rows), by_stage, fault)


class AnnotationStore:
    """Paths and atomic reads/writes of one annotation folder."""

    def __init__(self, out: str, reward_names: list[str]) -> None:
        self.out = out
        self.names = list(reward_names)

    # -- layout ---------------------------------------------------------------------------------
    def url(self, *parts: str) -> str:
        return join(self.out, *parts)

    def scores_url(self, shard: str) -> str:
        return self.url("scores", f"{shard_name(shard)}.parquet")

    def errors_url(self, shard: str) -> str:
        return self.url("errors", f"{shard_name(shard)}.parquet")

    def parts_dir(self, shard: str) -> str:
        return self.url("parts", shard_name(shard))

    def columns(self) -> list[str]:
        return ["key", "shard", "caption", *self.names]

    def is_done(self, shard: str) -> bool:
        return exists(self.scores_url(shard))

    def read_config(self) -> dict[str, Any] | None:
        url = self.url("config.json")
        return read_json(url) if exists(url) else None

    def write_config(self, payload: dict[str, Any]) -> None:
        write_json(self.url("config.json"), payload)

    # -- leftovers ------------------------------------------------------------------------------
    def clean_leftovers(self, shards: list[str]) -> int:
        """Remove parts of finished shards and temporary files of killed writes; returns how many.

        Only this process's shards are touched (other ranks own the others).
        """
        removed = 0
        fs, _ = filesystem(self.out)
        for shard in shards:
            parts = self.parts_dir(shard)
            if self.is_done(shard):
                if exists(parts):
                    remove(parts, recursive=True)
                    removed += 1
            elif exists(parts):
                removed += self._remove_tmp(fs, parts, "*")
            for folder in ("scores", "errors"):
                removed += self._remove_tmp(fs, self.url(folder), f"{shard_name(shard)}.parquet{TMP_MARKER}*")
        return removed

    @staticmethod
    def _remove_tmp(fs: Any, folder: str, pattern: str) -> int:
        _, path = filesystem(folder)
        found = [p for p in fs.glob(f"{path.rstrip('/')}/{pattern}") if TMP_MARKER in p.rsplit("/", 1)[-1]]
        for leftover in found:
            fs.rm(leftover)
        return len(found)

    # -- parts ----------------------------------------------------------------------------------
    def load_progress(self, shard: str) -> ShardProgress:
        """The committed parts of an unfinished shard."""
        progress = ShardProgress(shard)
        parts = self.parts_dir(shard)
        fs, path = filesystem(parts)
        if not fs.exists(path):
            return progress
        names = {p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)}
        numbers = sorted(n.removeprefix("rows-").removesuffix(".parquet") for n in names if n.startswith("rows-"))
        for number in numbers:
            if f"errors-{number}.parquet" not in names:
                continue  # killed between the two writes: not committed
            marker = f"part-{number}.json"
            legacy = not any(n.startswith("part-") for n in names)
            if marker not in names and not legacy:
                continue  # killed before the commit marker
            rows = read_table(join(parts, f"rows-{number}.parquet")).to_pylist()
            errors = read_table(join(parts, f"errors-{number}.parquet")).to_pylist()
            progress.done_rows += rows
            progress.done_errors += errors
            if marker in names:
                committed = read_json(join(parts, marker))
                progress.upto = max(progress.upto, int(committed["upto"]))
                progress.kept |= set(committed.get("kept", []))
            else:  # parts of an earlier version: resume by key
                progress.kept |= {r["key"] for r in rows} | {e["key"] for e in errors if e["stage"] == STAGE_INPUT}
            progress.next_part = max(progress.next_part, int(number) + 1)
        progress.new_upto = progress.upto
        return progress

    def write_part(self, progress: ShardProgress) -> None:
        """Commit the rows collected since the last flush: rows, errors, then the marker."""
        parts = self.parts_dir(progress.shard)
        number = f"{progress.next_part:06d}"
        write_table(join(parts, f"rows-{number}.parquet"), progress.rows, self.columns())
        write_table(join(parts, f"errors-{number}.parquet"), progress.errors, ERROR_COLUMNS)
        write_json(join(parts, f"part-{number}.json"), {"upto": progress.new_upto, "kept": sorted(progress.kept)})
        progress.done_rows += progress.rows
        progress.done_errors += progress.errors
        progress.rows, progress.errors = [], []
        progress.upto = progress.new_upto
        progress.next_part += 1
        progress.batches_since_flush = 0

    def finish(self, shard: str, rows: list[dict[str, Any]], errors: list[dict[str, Any]]) -> ShardCounts:
        """Write the shard's tables (errors first: the scores table marks it finished), drop its parts."""
        unique: dict[str, dict[str, Any]] = {}
        for row in rows:
            unique.setdefault(row["key"], row)
        table_rows = list(unique.values())
        write_table(self.errors_url(shard), errors, ERROR_COLUMNS)
        write_table(self.scores_url(shard), table_rows, self.columns())
        remove(self.parts_dir(shard), recursive=True)
        return ShardCounts.from_rows(table_rows, errors)

    # -- sequential mode ------------------------------------------------------------------------
    def column_url(self, shard: str, reward: str) -> str:
        return join(self.parts_dir(shard), f"column-{reward}.parquet")

    def column_errors_url(self, shard: str, reward: str) -> str:
        return join(self.parts_dir(shard), f"errors-{reward}.parquet")

    def write_column(
        self, shard: str, reward: str, rows: list[dict[str, Any]], errors: list[dict[str, Any]], upto: int
    ) -> None:
        write_table(self.column_errors_url(shard, reward), errors, ERROR_COLUMNS)
        write_table(self.column_url(shard, reward), rows, ["key", "shard", "caption", reward])

    # -- --retry-errors -------------------------------------------------------------------------
    def counts(self, shard: str) -> ShardCounts:
        """Counts of a finished shard read from its tables (for shards no run record describes)."""
        from miro_core.data.tables import count_rows

        errors = read_table(self.errors_url(shard)).to_pylist() if exists(self.errors_url(shard)) else []
        scored = count_rows(self.scores_url(shard))
        by_stage: dict[str, int] = {}
        for error in errors:
            by_stage[error["stage"]] = by_stage.get(error["stage"], 0) + 1
        fault = next((e["reason"] for e in errors if e["stage"] == STAGE_SHARD), None)
        return ShardCounts(scored + by_stage.get(STAGE_INPUT, 0), scored, by_stage, fault)

    def needs_retry(self, shard: str) -> bool:
        """Whether a finished shard has errors worth another try (anything but duplicate keys)."""
        if not exists(self.errors_url(shard)):
            return False
        stages = read_table(self.errors_url(shard), columns=["stage"]).column("stage").to_pylist()
        return any(stage != STAGE_DUPLICATE for stage in stages)

    def rewind(self, shard: str) -> None:
        """Turn a finished shard with errors back into an unfinished one that keeps its good rows.

        Rows with no error of any kind are kept (committed as part 0, by key); everything else -- failed
        rewards, undecodable images, the part of the shard a read fault cut off -- is read and scored
        again. Kill-safe: the part is committed before the finished tables are removed.
        """
        rows = read_table(self.scores_url(shard)).to_pylist()
        errors = read_table(self.errors_url(shard)).to_pylist() if exists(self.errors_url(shard)) else []
        failed = {e["key"] for e in errors if e["stage"] not in (STAGE_DUPLICATE, STAGE_SHARD)}
        good = [r for r in rows if r["key"] not in failed]
        remove(self.parts_dir(shard), recursive=True)
        progress = ShardProgress(shard, rows=good, kept={r["key"] for r in good})
        self.write_part(progress)
        remove(self.scores_url(shard))
        remove(self.errors_url(shard))
