"""Parquet tables of annotation results: one row per sample, one float column per reward.

Error tables have the columns :data:`ERROR_COLUMNS`; the ``stage`` says what failed:

- ``input``: the sample could not be used (undecodable or oversized image, no image, empty caption);
  it has no score row;
- ``duplicate``: a later sample of the shard repeats a key; the first sample with that key is the one
  scored, the repeat is recorded here and not scored;
- ``shard``: the shard could not be read, or stopped being readable midway; ``key`` is null, the reason
  says where; samples read before the fault are scored;
- a reward's name: that reward raised, or returned a value that is not a finite float, for the sample;
  the score row keeps NaN in that reward's column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from miro_core.data.atomic import atomic_open, filesystem
from miro_core.errors import DataError

ERROR_COLUMNS = ("key", "shard", "stage", "reason")
TEXT_COLUMNS = frozenset({"key", "shard", "caption", "stage", "reason"})
STAGE_INPUT = "input"
STAGE_DUPLICATE = "duplicate"
STAGE_SHARD = "shard"
#: Stages that are not a reward's: everything else in ``stage`` is a reward name.
DATA_STAGES = frozenset({STAGE_INPUT, STAGE_DUPLICATE, STAGE_SHARD})


def column_type(name: str) -> Any:
    import pyarrow as pa

    return pa.string() if name in TEXT_COLUMNS else pa.float64()


def write_table(url: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Write rows (dicts) as a Parquet file atomically; missing values become nulls.

    Text columns are strings and every other column float64, whatever the rows hold, so tables of
    different shards (one of them empty, or all-null) always concatenate.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({name: pa.array([row.get(name) for row in rows], type=column_type(name)) for name in columns})
    with atomic_open(url, "wb") as handle:
        pq.write_table(table, handle)


def read_table(url: str, columns: Sequence[str] | None = None) -> Any:
    """Read one Parquet file into a pyarrow Table, with the file named in any error."""
    import pyarrow.parquet as pq

    try:
        fs, path = filesystem(url)
        with fs.open(path, "rb") as handle:
            return pq.read_table(handle, columns=list(columns) if columns else None)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - report which file is broken
        raise DataError(f"cannot read annotation table {url}: {err}{_redo(url)}") from err


def _redo(url: str) -> str:
    """What to do about a damaged score table: an annotation's is scored again, a records shard's re-encoded."""
    if url.endswith(".scores.parquet"):  # beside a records shard (records/layout.py)
        return (
            "; if it was damaged or edited, delete that records shard (its .tar, .json, .index.npy and "
            ".scores.parquet) and rerun `miro encode`, or fit the bins on the annotations it was encoded from"
        )
    return (
        "; if it was damaged or edited, delete it and rerun `miro annotate` with the same --out to score that shard "
        "again"
    )


def check_score_tables(urls: Sequence[str]) -> list[str]:
    """The reward columns of the score tables ``urls``, after checking every table's schema (footers only).

    Every table must have the text columns ``key``, ``shard`` and ``caption`` and the same float columns as
    most of the tables: a table edited by hand (a column dropped, renamed, added or turned into text) would
    otherwise become missing scores, a new "reward" or a crash far from its cause.
    """
    from collections import Counter

    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: list[tuple[str, list[str]]] = []
    for url in urls:
        try:
            fs, path = filesystem(url)
            with fs.open(path, "rb") as handle:
                metadata = pq.ParquetFile(handle).metadata
                schema, empty = metadata.schema.to_arrow_schema(), metadata.num_rows == 0
        except Exception as err:  # noqa: BLE001 - report which file is broken
            raise DataError(f"cannot read annotation table {url}: {err}{_redo(url)}") from err
        for name in ("key", "shard", "caption"):
            if name not in schema.names:
                raise DataError(f"annotation table {url} has no {name!r} column{_redo(url)}")
            kind = schema.field(name).type
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
                raise DataError(f"column {name!r} of annotation table {url} is {kind}, not text{_redo(url)}")
        rewards = [name for name in schema.names if name not in TEXT_COLUMNS]
        for name in rewards:
            kind = schema.field(name).type
            if not (pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_null(kind)):
                raise DataError(
                    f"reward column {name!r} of annotation table {url} is {kind}, not numbers{_redo(url)}"
                )
        if empty and not rewards:
            continue  # a table without rows (a shard with no usable sample) may carry no score column
        columns.append((url, rewards))
    if not columns:
        return []
    # the columns most tables have are the annotation's: the table that differs is the one named, even when it
    # comes first
    counts = Counter(tuple(sorted(rewards)) for _, rewards in columns)
    reference = next(c for c in columns if counts[tuple(sorted(c[1]))] == max(counts.values()))
    for url, rewards in columns:
        if sorted(rewards) != sorted(reference[1]):
            missing = sorted(set(reference[1]) - set(rewards))
            extra = sorted(set(rewards) - set(reference[1]))
            what = "; ".join(
                part for part in (f"lacks {', '.join(missing)}" if missing else "",
                                  f"has the extra column(s) {', '.join(extra)}" if extra else "") if part
            )
            raise DataError(
                f"annotation table {url} {what} (the reward columns of {reference[0]}: {', '.join(reference[1])})"
                f"{_redo(url)}"
            )
    return reference[1]


def count_rows(url: str) -> int:
    """Rows of a Parquet file, from its footer (no data read)."""
    import pyarrow.parquet as pq

    try:
        fs, path = filesystem(url)
        with fs.open(path, "rb") as handle:
            return int(pq.ParquetFile(handle).metadata.num_rows)
    except Exception as err:  # noqa: BLE001
        raise DataError(f"cannot read annotation table {url}: {err}") from err


def read_tables(urls: Sequence[str]) -> Any:
    import pyarrow as pa

    tables = [read_table(u) for u in urls]
    if not tables:
        raise DataError("no annotation tables to read")
    return pa.concat_tables(tables, promote_options="default")
