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
        raise DataError(f"cannot read annotation table {url}: {err}") from err


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
