"""How a run ended: the exit status and the lines that explain it, from the folder's state.

The status describes the shards of this process as they are on disk, not only what this run did: a rerun
with nothing left to do still says that a shard could not be read, or that a reward failed everywhere,
until ``--retry-errors`` (or a fixed plugin) changes that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from miro_core.annotation.config import EXIT_DATA_SKIPPED, EXIT_ERROR, EXIT_OK
from miro_core.annotation.store import AnnotationStore
from miro_core.annotation.summary import RunStats, run_records, shard_counts, totals
from miro_core.data.atomic import exists, join
from miro_core.data.tables import read_table


@dataclass
class RunReport:
    """This process's run record, the folder's totals, and the exit status they imply."""

    stats: RunStats
    summary: dict[str, Any]
    status: int = EXIT_OK
    #: One line per reason for a non-zero status, and hints (how to retry).
    messages: list[str] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return int(self.summary.get("samples", 0))

    @property
    def errors(self) -> int:
        return int(self.summary.get("errors", 0))

    def as_json(self) -> dict[str, Any]:
        return self.stats.as_json()


def exit_report(
    store: AnnotationStore, scorers: Sequence[Any], shards: list[str], summary: dict[str, Any], stats: RunStats
) -> RunReport:
    """Failed rewards first (exit 1), then skipped data (exit 3), then hints."""
    mine = totals(shard_counts(store, shards, run_records(store)), store.names, shards)
    report = RunReport(stats, summary)
    labels = {s.name: s.label for s in scorers}
    for name in mine["failed_rewards"]:
        report.status = EXIT_ERROR
        report.messages.append(
            f"{labels.get(name, name)} failed on every one of its {mine['scored']} samples (first error: "
            f"{first_reason(store, shards, name)}); fix it, then rerun with --retry-errors to score those rows again"
        )
    skipped = mine["skipped_shards"]
    if skipped:
        if report.status == EXIT_OK:
            report.status = EXIT_DATA_SKIPPED
        names = ", ".join(s["shard"] for s in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        report.messages.append(
            f"{len(skipped)} shard(s) could not be read to the end ({names}): their samples before the fault "
            "were scored and the reasons are in the error tables (stage 'shard'); rerun with --retry-errors "
            "to read them again"
        )
    errors = sum(mine["reward_errors"].values())
    if errors and not mine["failed_rewards"]:
        report.messages.append(
            f"{errors} reward error rows (see {join(store.out, 'errors')}); --retry-errors scores them again"
        )
    return report


def first_reason(store: AnnotationStore, shards: list[str], stage: str) -> str:
    """The first error reason of ``stage`` in the shards' error tables."""
    for shard in shards:
        if exists(store.errors_url(shard)):
            for error in read_table(store.errors_url(shard)).to_pylist():
                if error["stage"] == stage:
                    return str(error["reason"])
    return "?"
