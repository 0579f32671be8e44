"""Keep a derived (inst_id, ts) table such as features or targets current in DuckDB.

Why append instead of recomputing: a row of features or targets is a function of the candles
around it only (the warm-up bars before it, and for targets the H bars after it), and stored
candles are immutable (``upsert_candles`` inserts, it never updates).  So an hourly run has
only rows to add (bars that closed, or got their label, since the last build) and rows to drop
(bars that left the training window); recomputing and rewriting the whole window cost
O(window) for O(new bars) of change.  Each appended row is computed from its full warm-up (the
``warmup_bars`` bars before it, read by position, so gaps in the feed are handled the same
way as in a full build).

The table is rebuilt from scratch whenever that reasoning might not hold, and the reason is
returned so the asset can show it: the first build, a different code version or setting, a
table whose columns or newest rows are not what the last build left, or candles at or before
the last build's newest candle that changed (a back-filled gap shifts every trailing window
after it).  The last check is a per-instrument count and content hash over all stored candles
up to that point, computed inside DuckDB.

Appended rows equal a full rebuild's to rounding (1e-12 relative: long trailing sums are
running sums, whose rounding depends on where the read starts); the tests pin that.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from blofin_assets import warehouse as wh

STATE_TABLE = "derived_table_state"
STATE_DDL = f"""
CREATE TABLE IF NOT EXISTS {STATE_TABLE} (
    table_name VARCHAR NOT NULL,
    inst_id VARCHAR NOT NULL,
    code_version VARCHAR NOT NULL,
    settings VARCHAR NOT NULL,
    candles_through TIMESTAMPTZ NOT NULL,
    candle_count BIGINT NOT NULL,
    candle_hash UBIGINT NOT NULL,
    last_row_ts TIMESTAMPTZ,
    built_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (table_name, inst_id)
)
"""


def candle_content(alias: str = "") -> str:
    """Content hash of one candle row (DuckDB's hash; a DuckDB upgrade may force one rebuild)."""
    prefix = f"{alias}." if alias else ""
    columns = ", ".join(prefix + c for c in ("ts", "open", "high", "low", "close", "volume"))
    return f"hash({columns})"


Compute = Callable[[pd.DataFrame, pd.Timestamp], pd.DataFrame]


@dataclass(frozen=True)
class DerivedTable:
    """What a derived table is computed from, and how."""

    name: str
    code_version: str
    settings: dict[str, Any]  # every setting its rows depend on; a change forces a rebuild
    columns: list[str]
    warmup_bars: int  # bars a row needs before it (positional)
    compute: Compute  # (candles sorted by inst_id, ts; first ts to emit) -> rows

    def settings_json(self) -> str:
        return json.dumps(self.settings, sort_keys=True, default=str)


@dataclass(frozen=True)
class Refresh:
    """What a refresh did, and what the table holds afterwards."""

    mode: str  # "rebuild" or "append"
    reason: str
    candles_read: int
    rows_added: int
    rows_dropped: int
    rows: int
    first_ts: pd.Timestamp | None
    last_ts: pd.Timestamp | None
    content_hash: str
    schema: list[tuple[str, str]]
    window_start: pd.Timestamp

    @property
    def data_version(self) -> str:
        """Same rows, same version, whichever way they were written."""
        return f"{self.rows}-{self.content_hash}"


def refresh_table(
    con: duckdb.DuckDBPyConnection,
    table: DerivedTable,
    *,
    training_days: int,
    bar: pd.Timedelta,
) -> Refresh:
    """Bring ``table`` up to date with the stored candles; one transaction, on a write connection.

    The write connection holds DuckDB's file lock, so no candle can arrive between the
    fingerprint, the read and the write.
    """
    con.execute(STATE_DDL)
    newest = wh.newest_candle_ts(con)
    window_start = newest - pd.Timedelta(days=training_days)
    read_start = window_start - table.warmup_bars * bar
    fingerprints = candle_fingerprints(con)
    reason = rebuild_reason(con, table)

    if reason is None:
        marks = stored_marks(con, table.name)
        candles = read_candles_after(con, marks, read_start, table.warmup_bars)
        rows = table.compute(candles, window_start)
        rows = drop_stored_rows(rows, marks)
    else:
        candles = wh.read_candles(con, start=read_start)
        rows = table.compute(candles, window_start)
        if rows.empty:
            raise ValueError(
                f"no {table.name} rows: the {len(candles)} candles from {read_start} on are "
                f"fewer than the {table.warmup_bars}-bar warm-up needs (per instrument)"
            )
    missing = [c for c in table.columns if c not in rows.columns]
    if missing or list(rows.columns) != table.columns:
        raise ValueError(
            f"{table.name} rows have columns {list(rows.columns)}, not {table.columns}"
        )

    with wh.transaction(con):
        if reason is None:
            dropped = delete_before(con, table.name, window_start)
            append_rows(con, table.name, rows)
        else:
            dropped = 0
            create_table(con, table.name, rows)
        save_state(con, table, fingerprints)
    summary = table_summary(con, table.name)
    return Refresh(
        mode="append" if reason is None else "rebuild",
        reason=reason or "appended the rows after the last build",
        candles_read=len(candles),
        rows_added=len(rows),
        rows_dropped=dropped,
        window_start=window_start,
        **summary,
    )


def candle_fingerprints(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Per instrument: newest candle, candle count and content hash over all its candles."""
    return query(
        con,
        f"SELECT inst_id, max(ts) AS candles_through, count(*) AS candle_count, "
        f"bit_xor({candle_content()}) AS candle_hash FROM candles GROUP BY inst_id",
    )


def rebuild_reason(con: duckdb.DuckDBPyConnection, table: DerivedTable) -> str | None:
    """Why the stored rows cannot be appended to, or None when they can."""
    if not wh.table_exists(con, table.name):
        return "first build: the table does not exist yet"
    stored_columns = [
        row[0]
        for row in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' "
            "AND table_name = ? ORDER BY ordinal_position",
            [table.name],
        ).fetchall()
    ]
    if stored_columns != table.columns:
        return "the stored table's columns differ from this code's"
    state = query(
        con,
        f"SELECT inst_id, code_version, settings, last_row_ts FROM {STATE_TABLE} "
        "WHERE table_name = ?",
        [table.name],
    )
    if state.empty:
        return "no record of how the stored rows were built"
    versions = sorted(set(state["code_version"]))
    if versions != [table.code_version]:
        return f"code version changed: {', '.join(versions)} -> {table.code_version}"
    if set(state["settings"]) != {table.settings_json()}:
        return f"settings changed: {state['settings'].iloc[0]} -> {table.settings_json()}"

    changed = con.execute(
        f"SELECT s.inst_id, s.candle_count, count(c.ts) FROM {STATE_TABLE} s "
        "LEFT JOIN candles c ON c.inst_id = s.inst_id AND c.ts <= s.candles_through "
        "WHERE s.table_name = ? GROUP BY s.inst_id, s.candle_count, s.candle_hash "
        f"HAVING s.candle_count <> count(c.ts) OR s.candle_hash <> "
        f"coalesce(bit_xor({candle_content('c')}), 0)"
        " ORDER BY s.inst_id",
        [table.name],
    ).fetchall()
    if changed:
        detail = ", ".join(f"{inst} ({now - then:+d} rows)" for inst, then, now in changed[:5])
        more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        return f"candles at or before the last build changed for {detail}{more}"

    stored = dict(
        con.execute(f'SELECT inst_id, max(ts) FROM "{table.name}" GROUP BY inst_id').fetchall()
    )
    expected = {
        inst: ts for inst, ts in zip(state["inst_id"], state["last_row_ts"], strict=True)
        if not pd.isna(ts)
    }  # fmt: skip
    if {k: pd.Timestamp(v) for k, v in stored.items()} != {
        k: pd.Timestamp(v) for k, v in expected.items()
    }:
        return "the stored rows are not the ones the last build left (edited outside the asset)"
    return None


def stored_marks(con: duckdb.DuckDBPyConnection, table_name: str) -> pd.DataFrame:
    """Per instrument, the newest stored row: appending starts right after it."""
    return query(
        con,
        f"SELECT inst_id, last_row_ts AS mark FROM {STATE_TABLE} "
        "WHERE table_name = ? AND last_row_ts IS NOT NULL",
        [table_name],
    )


def read_candles_after(
    con: duckdb.DuckDBPyConnection, marks: pd.DataFrame, read_start: pd.Timestamp, warmup: int
) -> pd.DataFrame:
    """Candles after each instrument's mark plus the `warmup` bars up to and including it.

    The warm-up is counted in bars, not time, so a gap before the mark still leaves every new
    row its full history (within read_start, as in a rebuild).  Instruments without a mark
    (new ones) are read from read_start.
    """
    start = read_start.to_pydatetime()
    with wh.registered(con, "marks", marks):
        read_from = query(
            con,
            "SELECT inst_id, min(ts) AS read_from FROM (SELECT c.inst_id, c.ts, row_number() "
            "OVER (PARTITION BY c.inst_id ORDER BY c.ts DESC) AS back FROM candles c "
            "JOIN marks m ON m.inst_id = c.inst_id AND c.ts <= m.mark AND c.ts >= ?) "
            "WHERE back <= ? GROUP BY inst_id",
            [start, warmup],
        )
    with wh.registered(con, "read_from", read_from):
        return wh.query_frame(
            con,
            "SELECT c.inst_id, c.ts, c.open, c.high, c.low, c.close, c.volume FROM candles c "
            "LEFT JOIN read_from r ON r.inst_id = c.inst_id WHERE c.ts >= coalesce(r.read_from, ?)"
            " ORDER BY c.inst_id, c.ts",
            [start],
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


def create_table(con: duckdb.DuckDBPyConnection, name: str, rows: pd.DataFrame) -> None:
    columns = ", ".join(
        f"{wh.quote_identifier(c)} {duckdb_type(t)}" for c, t in rows.dtypes.items()
    )
    con.execute(f"CREATE OR REPLACE TABLE {wh.quote_identifier(name)} ({columns})")
    append_rows(con, name, rows)


def append_rows(con: duckdb.DuckDBPyConnection, name: str, rows: pd.DataFrame) -> None:
    if rows.empty:
        return
    with wh.registered(con, "derived_rows", as_arrow(rows)):
        con.execute(f"INSERT INTO {wh.quote_identifier(name)} SELECT * FROM derived_rows")


def delete_before(con: duckdb.DuckDBPyConnection, name: str, start: pd.Timestamp) -> int:
    """Rows that left the training window."""
    table = wh.quote_identifier(name)
    stale = wh.scalar(con, f"SELECT count(*) FROM {table} WHERE ts < ?", [start.to_pydatetime()])
    if stale:
        con.execute(f"DELETE FROM {table} WHERE ts < ?", [start.to_pydatetime()])
    return int(stale)


def save_state(
    con: duckdb.DuckDBPyConnection, table: DerivedTable, fingerprints: pd.DataFrame
) -> None:
    """Record what the rows were built from, for the next run's rebuild_reason."""
    con.execute(f"DELETE FROM {STATE_TABLE} WHERE table_name = ?", [table.name])
    with wh.registered(con, "fingerprints", fingerprints):
        con.execute(
            f"INSERT INTO {STATE_TABLE} SELECT ?, f.inst_id, ?, ?, f.candles_through, "
            "f.candle_count, f.candle_hash, r.last_row_ts, now() FROM fingerprints f "
            f"LEFT JOIN (SELECT inst_id, max(ts) AS last_row_ts FROM "
            f"{wh.quote_identifier(table.name)} GROUP BY inst_id) r USING (inst_id)",
            [table.name, table.code_version, table.settings_json()],
        )


def table_summary(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, Any]:
    """Row count, time span, an order-independent content hash and the stored column types."""
    table = wh.quote_identifier(name)
    schema = [(row[0], row[1]) for row in con.execute(f"DESCRIBE {table}").fetchall()]
    everything = ", ".join(wh.quote_identifier(column) for column, _ in schema)
    rows, first, last, content = con.execute(
        f"SELECT count(*), min(ts), max(ts), bit_xor(hash({everything})) FROM {table}"
    ).fetchall()[0]

    def utc(value: Any) -> pd.Timestamp | None:
        return None if value is None else pd.Timestamp(value).tz_convert("UTC")

    return {
        "rows": int(rows),
        "first_ts": utc(first),
        "last_ts": utc(last),
        "content_hash": f"{int(content or 0):016x}",
        "schema": schema,
    }


def query(con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None):
    """A small bookkeeping query as a DataFrame (timestamps left as DuckDB returns them)."""
    return con.execute(sql, params or []).df()
