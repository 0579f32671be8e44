"""Rows of a derived table: the candles an append needs, and writes that keep a content hash.

A table's content hash is the XOR of its rows' DuckDB hashes, kept per instrument, so an
append updates it by what left and what came instead of hashing the whole table again.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from blofin_assets.market.clock import as_utc
from blofin_assets.market.contract import CANDLE_COLUMNS
from blofin_assets.storage.connection import query_frame, registered
from blofin_assets.storage.sql import column_list, quote_identifier, table_columns

RowStats = dict[str, tuple[int, int]]  # inst_id -> (row count, XOR of row hashes)


def row_stats(
    con: duckdb.DuckDBPyConnection, name: str, where: str = "", params: list[object] | None = None
) -> RowStats:
    """Per instrument: rows and the XOR of DuckDB row hashes of table ``t`` (filtered)."""
    table = quote_identifier(name)
    everything = ", ".join(f"t.{quote_identifier(c)}" for c in table_columns(con, name))
    found = con.execute(
        f"SELECT t.inst_id, count(*), bit_xor(hash({everything})) FROM {table} t {where} "
        "GROUP BY t.inst_id",
        params or [],
    ).fetchall()
    return {inst: (int(count), int(content)) for inst, count, content in found}


def combine(stored: RowStats, dropped: RowStats, added: RowStats) -> RowStats:
    result = {}
    for inst in stored.keys() | added.keys():
        count, content = stored.get(inst, (0, 0))
        for other_count, other_content, sign in (
            (*dropped.get(inst, (0, 0)), -1),
            (*added.get(inst, (0, 0)), 1),
        ):
            count += sign * other_count
            content ^= other_content
        result[inst] = (count, content)
    return result


def read_candles_after(
    con: duckdb.DuckDBPyConnection,
    instruments: list[str],
    marks: pd.DataFrame,
    read_start: pd.Timestamp,
    warmup: int,
    bar: pd.Timedelta,
) -> pd.DataFrame:
    """Candles after each instrument's mark plus the `warmup` bars up to and including it.

    The warm-up is counted in bars, not time, so a gap before the mark still leaves every new
    row its full history (within read_start, as in a rebuild).  The search looks back twice
    the warm-up's duration first and to read_start only for an instrument with gaps that
    left too few bars there.  Instruments without a mark (new ones) are read from read_start;
    candles of instruments not in ``instruments`` are not read.
    """
    lookback = marks.assign(
        lower=(marks["mark"] - 2 * warmup * bar).where(
            marks["mark"] - 2 * warmup * bar > read_start, read_start
        )
    )
    read_from = warmup_starts(con, lookback, warmup)
    short = read_from.loc[(read_from["found"] < warmup), "inst_id"]
    if len(short):
        widened = lookback.assign(
            lower=lookback["lower"].where(~lookback["inst_id"].isin(short), read_start)
        )
        read_from = warmup_starts(con, widened, warmup)
    # A constant lower bound lets DuckDB skip row groups by their min/max ts before the join;
    # it is read_start itself as soon as one instrument (a new one) has no read_from.
    covered = set(read_from["inst_id"]) >= set(instruments)
    earliest = pd.Timestamp(read_from["read_from"].min()) if covered and len(read_from) else None
    lower = read_start if earliest is None else max(as_utc(earliest), read_start)
    with registered(con, "read_from", read_from[["inst_id", "read_from"]]):
        return query_frame(
            con,
            f"SELECT {column_list(CANDLE_COLUMNS, 'c')} FROM candles c "
            "LEFT JOIN read_from r ON r.inst_id = c.inst_id WHERE c.ts >= ? "
            "AND c.ts >= coalesce(r.read_from, ?) AND list_contains(?::VARCHAR[], c.inst_id) "
            "ORDER BY c.inst_id, c.ts",
            [lower.to_pydatetime(), read_start.to_pydatetime(), list(instruments)],
        )


def warmup_starts(
    con: duckdb.DuckDBPyConnection, lookback: pd.DataFrame, warmup: int
) -> pd.DataFrame:
    """Per instrument, the `warmup`-th bar back from its mark (within `lower`) and how many
    bars were found there (fewer than `warmup` near the start of the stored history)."""
    with registered(con, "lookback", lookback):
        return query_frame(
            con,
            "SELECT inst_id, min(ts) AS read_from, count(*) AS found FROM (SELECT c.inst_id, "
            "c.ts, row_number() OVER (PARTITION BY c.inst_id ORDER BY c.ts DESC) AS back "
            "FROM candles c JOIN lookback m ON m.inst_id = c.inst_id AND c.ts <= m.mark "
            "AND c.ts >= m.lower) WHERE back <= ? GROUP BY inst_id",
            [warmup],
        )


def drop_stored_rows(rows: pd.DataFrame, marks: pd.DataFrame) -> pd.DataFrame:
    """Keep rows after their instrument's mark (a guard: the read already starts there)."""
    if rows.empty or marks.empty:
        return rows
    mark = rows["inst_id"].map(dict(zip(marks["inst_id"], marks["mark"], strict=True)))
    keep = mark.isna() | (rows["ts"] > mark)
    return rows if bool(keep.all()) else rows.loc[keep].reset_index(drop=True)


def duckdb_type(dtype: Any) -> str:
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "TIMESTAMPTZ"
    if pd.api.types.is_integer_dtype(dtype):
        return "BIGINT"
    if pd.api.types.is_float_dtype(dtype):
        return "DOUBLE"
    return "VARCHAR"


def as_arrow(rows: pd.DataFrame) -> pa.Table:
    """Arrow hands DuckDB contiguous columns: about twice as fast as scanning pandas."""
    return pa.Table.from_pandas(rows, preserve_index=False)


def create_table(con: duckdb.DuckDBPyConnection, name: str, rows: pd.DataFrame) -> RowStats:
    columns = ", ".join(f"{quote_identifier(c)} {duckdb_type(t)}" for c, t in rows.dtypes.items())
    con.execute(f"CREATE OR REPLACE TABLE {quote_identifier(name)} ({columns})")
    return append_rows(con, name, rows)


def append_rows(con: duckdb.DuckDBPyConnection, name: str, rows: pd.DataFrame) -> RowStats:
    """Insert the rows; return their per-instrument stats, hashed as the table stores them."""
    if rows.empty:
        return {}
    table = quote_identifier(name)
    with registered(con, "derived_rows", as_arrow(rows)):
        con.execute(f"INSERT INTO {table} SELECT * FROM derived_rows")
        # Cast to the table's column types first, so each hash equals the stored row's.
        types = [(row[0], row[1]) for row in con.execute(f"DESCRIBE {table}").fetchall()]
        stored_as = ", ".join(f"CAST({quote_identifier(c)} AS {k})" for c, k in types)
        found = con.execute(
            f"SELECT inst_id, count(*), bit_xor(hash({stored_as})) FROM derived_rows "
            "GROUP BY inst_id"
        ).fetchall()
    return {inst: (int(count), int(content)) for inst, count, content in found}


def delete_before(con: duckdb.DuckDBPyConnection, name: str, start: pd.Timestamp) -> None:
    """Rows that left the training window."""
    con.execute(f"DELETE FROM {quote_identifier(name)} WHERE ts < ?", [start.to_pydatetime()])


def table_summary(con: duckdb.DuckDBPyConnection, name: str, stats: RowStats) -> dict[str, Any]:
    """Row count, time span, content hash and stored column types, checked against `stats`.

    The content hash is the XOR of every row's DuckDB hash (order-free, so the same rows give
    the same data version however they were written); it comes from the bookkeeping, whose
    per-instrument row counts must match the table or the write is rolled back.
    """
    table = quote_identifier(name)
    schema = [(row[0], row[1]) for row in con.execute(f"DESCRIBE {table}").fetchall()]
    per_instrument = con.execute(
        f"SELECT inst_id, count(*), min(ts), max(ts) FROM {table} GROUP BY inst_id"
    ).fetchall()
    counts = {inst: int(count) for inst, count, _, _ in per_instrument}
    expected = {inst: count for inst, (count, _) in stats.items() if count}
    if counts != expected:
        raise RuntimeError(f"{name}: row bookkeeping {expected} != table {counts}")
    content = 0
    for _, row_hash in stats.values():
        content ^= row_hash

    return {
        "rows": sum(counts.values()),
        "first_ts": min((as_utc(first) for _, _, first, _ in per_instrument), default=None),
        "last_ts": max((as_utc(last) for _, _, _, last in per_instrument), default=None),
        "content_hash": f"{content:016x}",
        "schema": schema,
        "last_row_ts": {inst: as_utc(last) for inst, _, _, last in per_instrument},
    }
