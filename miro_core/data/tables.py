"""Parquet tables of annotation results: one row per sample, one float column per reward."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import fsspec

from miro_core.data.atomic import atomic_open
from miro_core.errors import DataError

ERROR_COLUMNS = ("key", "shard", "stage", "reason")


def write_table(url: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Write rows (dicts) as a Parquet file atomically; missing values become nulls."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = {name: [row.get(name) for row in rows] for name in columns}
    table = pa.table(data) if rows else pa.table({name: pa.array([], type=_empty_type(name)) for name in columns})
    with atomic_open(url, "wb") as handle:
        pq.write_table(table, handle)


def _empty_type(name: str) -> Any:
    import pyarrow as pa

    return pa.string() if name in ("key", "shard", "caption", "stage", "reason") else pa.float64()


def read_table(url: str) -> Any:
    """Read one Parquet file into a pyarrow Table, with the file named in any error."""
    import pyarrow.parquet as pq

    try:
        with fsspec.open(url, "rb") as handle:
            return pq.read_table(handle)
    except Exception as err:  # noqa: BLE001 - report which file is broken
        raise DataError(f"cannot read annotation table {url}: {err}") from err


def read_tables(urls: Sequence[str]) -> Any:
    import pyarrow as pa

    tables = [read_table(u) for u in urls]
    if not tables:
        raise DataError("no annotation tables to read")
    return pa.concat_tables(tables, promote_options="default")
