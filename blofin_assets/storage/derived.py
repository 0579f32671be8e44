"""Keep a derived (inst_id, ts) table such as features or targets current in DuckDB.

Why append instead of recomputing: a row of features or targets is a function of the candles
around it only (the warm-up bars before it, and for targets the H bars after it), and stored
candles are immutable (``insert_new_candles`` inserts, it never updates).  So an hourly run has
only rows to add (bars that closed, or got their label, since the last build) and rows to drop
(bars that left the training window); recomputing and rewriting the whole window cost
O(window) for O(new bars) of change.  Each appended row is computed from its full warm-up (the
``warmup_bars`` bars before it, read by position, so gaps in the feed are handled the same
way as in a full build).

The table is rebuilt from scratch whenever that reasoning might not hold, and the reason is
returned so the asset can show it: the first build, a different code version or setting, a
table whose columns or newest rows are not what the last build left, or candles at or before
the last build's newest candle that changed (a back-filled gap shifts every trailing window
after it).  The last check is a per-instrument count and content hash of the stored candles up
to that point: the insert that stored them recorded the hash of all of them
(``fingerprints.per_instrument``), so only the candles that came after are hashed here and
an hourly check costs O(new bars), not O(history).

Appended rows equal a full rebuild's to rounding (1e-12 relative: long trailing sums are
running sums, whose rounding depends on where the read starts); the tests pin that.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from blofin_assets.storage import connection, fingerprints, sql
from blofin_assets.storage.candles import newest_candle_ts, read_candles

STATE_TABLE = "derived_table_state"
STATE_DDL = f"""
CREATE TABLE IF NOT EXISTS {STATE_TABLE} (
    table_name VARCHAR NOT NULL,
    inst_id VARCHAR NOT NULL,
    code_version VARCHAR NOT NULL,
    settings VARCHAR NOT NULL,
    candles_through TIMESTAMPTZ NOT NULL,
    candle_count BIGINT NOT NULL,
    candle_content_hash UBIGINT NOT NULL,
    row_count BIGINT NOT NULL,
    row_hash UBIGINT NOT NULL,
    last_row_ts TIMESTAMPTZ,
    built_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (table_name, inst_id)
)
"""


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
    candle_fingerprint_source: str  # RECORDED, or why every candle had to be hashed
    # Wall seconds of each phase: "check" (fingerprints, rebuild reason), "read" (candles),
    # "compute" (table.compute), "write" (the transaction, commit included).
    seconds: dict[str, float]

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
    clock = Stopwatch()
    ensure_state_table(con)
    newest = newest_candle_ts(con)
    window_start = newest - pd.Timedelta(days=training_days)
    read_start = window_start - table.warmup_bars * bar
    fingerprints, fingerprint_source = candles_against_last_build(con, table.name)
    reason = rebuild_reason(con, table, fingerprints)
    clock.lap("check")

    if reason is None:
        marks = stored_marks(con, table.name)
        instruments = list(fingerprints["inst_id"])
        candles = read_candles_after(con, instruments, marks, read_start, table.warmup_bars, bar)
        clock.lap("read")
        rows = drop_stored_rows(table.compute(candles, window_start), marks)
    else:
        candles = read_candles(con, start=read_start)
        clock.lap("read")
        rows = table.compute(candles, window_start)
        if rows.empty:
            raise ValueError(
                f"no {table.name} rows: the {len(candles)} candles from {read_start} on are "
                f"fewer than the {table.warmup_bars}-bar warm-up needs (per instrument)"
            )
    if list(rows.columns) != table.columns:
        raise ValueError(
            f"{table.name} rows have columns {list(rows.columns)}, not {table.columns}"
        )
    clock.lap("compute")

    with connection.transaction(con):
        if reason is None:
            # Content hashes are XORs of row hashes: update them by what left and came.
            stats = stored_row_stats(con, table.name)
            dropped = row_stats(con, table.name, "WHERE t.ts < ?", [window_start.to_pydatetime()])
            delete_before(con, table.name, window_start)
            added = append_rows(con, table.name, rows)
            stats = combine(stats, dropped, added)
        else:
            dropped = {}
            stats = create_table(con, table.name, rows)
        summary = table_summary(con, table.name, stats)
        save_state(con, table, fingerprints, stats, summary.pop("last_row_ts"))
    clock.lap("write")
    return Refresh(
        mode="append" if reason is None else "rebuild",
        reason=reason or "appended the rows after the last build",
        candles_read=len(candles),
        rows_added=len(rows),
        rows_dropped=sum(count for count, _ in dropped.values()),
        candle_fingerprint_source=fingerprint_source,
        window_start=window_start,
        seconds=clock.laps,
        **summary,
    )


class Stopwatch:
    """Wall seconds per named phase, so a slow refresh says which part was slow."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 4)
        self._last = now


def ensure_state_table(con: duckdb.DuckDBPyConnection) -> None:
    """Create the bookkeeping table; one from an older layout is replaced (forcing a rebuild)."""
    expected = ["table_name", "inst_id", "code_version", "settings", "candles_through",
                "candle_count", "candle_content_hash", "row_count", "row_hash", "last_row_ts",
                "built_at"]  # fmt: skip
    stored = sql.table_columns(con, STATE_TABLE)  # [] when it does not exist
    if stored == expected:
        return
    if stored:
        con.execute(f"DROP TABLE {STATE_TABLE}")
    con.execute(STATE_DDL)


RowStats = dict[str, tuple[int, int]]  # inst_id -> (row count, XOR of row hashes)


def row_stats(
    con: duckdb.DuckDBPyConnection, name: str, where: str = "", params: list[object] | None = None
) -> RowStats:
    """Per instrument: rows and the XOR of DuckDB row hashes of table ``t`` (filtered)."""
    table = sql.quote_identifier(name)
    everything = ", ".join(f"t.{sql.quote_identifier(c)}" for c in sql.table_columns(con, name))
    found = con.execute(
        f"SELECT t.inst_id, count(*), bit_xor(hash({everything})) FROM {table} t {where} "
        "GROUP BY t.inst_id",
        params or [],
    ).fetchall()
    return {inst: (int(count), int(content)) for inst, count, content in found}


def stored_row_stats(con: duckdb.DuckDBPyConnection, name: str) -> RowStats:
    found = con.execute(
        f"SELECT inst_id, row_count, row_hash FROM {STATE_TABLE} WHERE table_name = ?", [name]
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


def candles_against_last_build(
    con: duckdb.DuckDBPyConnection, table_name: str
) -> tuple[pd.DataFrame, str]:
    """Per instrument: newest candle, count and content hash of all stored candles (to record),
    and whether the candles up to the last build's newest one still match what was recorded
    then (``changed``; ``count_then``/``stored_count`` say by how many rows).

    The totals come from ``fingerprints.per_instrument`` (kept by every insert); the part up
    to the last build's newest candle is the total less the candles after it, so only the
    candles that arrived since are hashed here, not the whole history.  The string says where
    the totals came from (``fingerprints.per_instrument``).
    """
    current, source = fingerprints.per_instrument(con)
    stored = {
        inst: (pd.Timestamp(through), int(count), int(content))
        for inst, through, count, content in con.execute(
            f"SELECT inst_id, candles_through, candle_count, candle_content_hash FROM "
            f"{STATE_TABLE} WHERE table_name = ?",
            [table_name],
        ).fetchall()
    }
    since: dict[str, tuple[int, int]] = {}
    if stored:
        # A constant lower bound lets DuckDB skip row groups by their min/max ts.
        earliest = min(through for through, _, _ in stored.values())
        since = {
            inst: (int(count), int(content))
            for inst, count, content in con.execute(
                f"SELECT c.inst_id, count(*), bit_xor({fingerprints.candle_content('c')}) FROM candles c "
                f"JOIN {STATE_TABLE} s ON s.table_name = ? AND s.inst_id = c.inst_id "
                "WHERE c.ts > s.candles_through AND c.ts > ? GROUP BY c.inst_id",
                [table_name, earliest.to_pydatetime()],
            ).fetchall()
        }
    count_then, stored_count, changed = [], [], []
    for inst, count, content in zip(
        current["inst_id"], current["candle_count"], current["content_hash"], strict=True
    ):
        later_count, later_content = since.get(inst, (0, 0))
        then = (int(count) - later_count, int(content) ^ later_content)
        record = stored.get(inst)
        count_then.append(then[0])
        stored_count.append(None if record is None else record[1])
        changed.append(record is not None and record[1:] != then)
    return pd.DataFrame(
        {
            "inst_id": current["inst_id"],
            "candles_through": current["last_ts"],
            "candle_count": current["candle_count"],
            "candle_content_hash": current["content_hash"],
            "count_then": count_then,
            "stored_count": pd.array(stored_count, dtype="Int64"),
            "changed": changed,
        }
    ), source


def rebuild_reason(
    con: duckdb.DuckDBPyConnection, table: DerivedTable, fingerprints: pd.DataFrame
) -> str | None:
    """Why the stored rows cannot be appended to, or None when they can."""
    stored = sql.table_columns(con, table.name)  # [] when it does not exist
    if not stored:
        return "first build: the table does not exist yet"
    if stored != table.columns:
        return "the stored table's columns differ from this code's"
    state = query(
        con,
        f"SELECT inst_id, code_version, settings, row_count, last_row_ts FROM {STATE_TABLE} "
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

    changed = fingerprints.loc[fingerprints["changed"]]
    vanished = sorted(set(state["inst_id"]) - set(fingerprints["inst_id"]))
    if len(changed) or vanished:
        details = [
            f"{inst} ({int(now) - int(then):+d} rows)"
            for inst, then, now in zip(
                changed["inst_id"], changed["stored_count"], changed["count_then"], strict=True
            )
        ] + [f"{inst} (all candles gone)" for inst in vanished]
        more = f" and {len(details) - 5} more" if len(details) > 5 else ""
        return f"candles at or before the last build changed for {', '.join(details[:5])}{more}"

    # Rows per instrument and the newest of each must be what the last build recorded; the
    # content hash is kept up to date from those rows, not re-read (that would cost a scan).
    actual = {
        inst: (int(count), pd.Timestamp(last))
        for inst, count, last in con.execute(
            f"SELECT inst_id, count(*), max(ts) FROM {sql.quote_identifier(table.name)} "
            "GROUP BY inst_id"
        ).fetchall()
    }
    recorded = {
        inst: (int(count), pd.Timestamp(last))
        for inst, count, last in zip(
            state["inst_id"], state["row_count"], state["last_row_ts"], strict=True
        )
        if count
    }
    if actual != recorded:
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
    left too few bars there.  Instruments without a mark (new ones) are read from read_start.
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
    lower = read_start if earliest is None else max(earliest.tz_convert("UTC"), read_start)
    with connection.registered(con, "read_from", read_from[["inst_id", "read_from"]]):
        return connection.query_frame(
            con,
            "SELECT c.inst_id, c.ts, c.open, c.high, c.low, c.close, c.volume FROM candles c "
            "LEFT JOIN read_from r ON r.inst_id = c.inst_id WHERE c.ts >= ? "
            "AND c.ts >= coalesce(r.read_from, ?) ORDER BY c.inst_id, c.ts",
            [lower.to_pydatetime(), read_start.to_pydatetime()],
        )


def warmup_starts(
    con: duckdb.DuckDBPyConnection, lookback: pd.DataFrame, warmup: int
) -> pd.DataFrame:
    """Per instrument, the `warmup`-th bar back from its mark (within `lower`) and how many
    bars were found there (fewer than `warmup` near the start of the stored history)."""
    with connection.registered(con, "lookback", lookback):
        return query(
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
    columns = ", ".join(
        f"{sql.quote_identifier(c)} {duckdb_type(t)}" for c, t in rows.dtypes.items()
    )
    con.execute(f"CREATE OR REPLACE TABLE {sql.quote_identifier(name)} ({columns})")
    return append_rows(con, name, rows)


def append_rows(con: duckdb.DuckDBPyConnection, name: str, rows: pd.DataFrame) -> RowStats:
    """Insert the rows; return their per-instrument stats, hashed as the table stores them."""
    if rows.empty:
        return {}
    table = sql.quote_identifier(name)
    with connection.registered(con, "derived_rows", as_arrow(rows)):
        con.execute(f"INSERT INTO {table} SELECT * FROM derived_rows")
        # Cast to the table's column types first, so each hash equals the stored row's.
        types = [(row[0], row[1]) for row in con.execute(f"DESCRIBE {table}").fetchall()]
        stored_as = ", ".join(f"CAST({sql.quote_identifier(c)} AS {k})" for c, k in types)
        found = con.execute(
            f"SELECT inst_id, count(*), bit_xor(hash({stored_as})) FROM derived_rows "
            "GROUP BY inst_id"
        ).fetchall()
    return {inst: (int(count), int(content)) for inst, count, content in found}


def delete_before(con: duckdb.DuckDBPyConnection, name: str, start: pd.Timestamp) -> None:
    """Rows that left the training window."""
    con.execute(f"DELETE FROM {sql.quote_identifier(name)} WHERE ts < ?", [start.to_pydatetime()])


def save_state(
    con: duckdb.DuckDBPyConnection,
    table: DerivedTable,
    fingerprints: pd.DataFrame,
    stats: RowStats,
    last_row_ts: dict[str, pd.Timestamp],
) -> None:
    """Record what the rows were built from, for the next run's rebuild_reason."""
    con.execute(f"DELETE FROM {STATE_TABLE} WHERE table_name = ?", [table.name])
    recorded = fingerprints[
        ["inst_id", "candles_through", "candle_count", "candle_content_hash"]
    ].assign(
        row_count=[stats.get(inst, (0, 0))[0] for inst in fingerprints["inst_id"]],
        row_hash=pd.array(
            [stats.get(inst, (0, 0))[1] for inst in fingerprints["inst_id"]], dtype="uint64"
        ),
        last_row_ts=[last_row_ts.get(inst) for inst in fingerprints["inst_id"]],
    )
    recorded["last_row_ts"] = pd.to_datetime(recorded["last_row_ts"], utc=True)
    with connection.registered(con, "recorded", recorded):
        con.execute(
            f"INSERT INTO {STATE_TABLE} SELECT ?, inst_id, ?, ?, candles_through, candle_count, "
            "candle_content_hash, row_count, row_hash, last_row_ts, now() FROM recorded",
            [table.name, table.code_version, table.settings_json()],
        )


def table_summary(con: duckdb.DuckDBPyConnection, name: str, stats: RowStats) -> dict[str, Any]:
    """Row count, time span, content hash and stored column types, checked against `stats`.

    The content hash is the XOR of every row's DuckDB hash (order-free, so the same rows give
    the same data version however they were written); it comes from the bookkeeping, whose
    per-instrument row counts must match the table or the write is rolled back.
    """
    table = sql.quote_identifier(name)
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

    def utc(value: Any) -> pd.Timestamp:
        return pd.Timestamp(value).tz_convert("UTC")

    return {
        "rows": sum(counts.values()),
        "first_ts": min((utc(first) for _, _, first, _ in per_instrument), default=None),
        "last_ts": max((utc(last) for _, _, _, last in per_instrument), default=None),
        "content_hash": f"{content:016x}",
        "schema": schema,
        "last_row_ts": {inst: utc(last) for inst, _, _, last in per_instrument},
    }


def query(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None
) -> pd.DataFrame:
    """A small bookkeeping query as a DataFrame (timestamps left as DuckDB returns them)."""
    return con.execute(sql, params or []).df()
