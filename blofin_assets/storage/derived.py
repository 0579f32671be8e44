"""Keep a derived (inst_id, ts) table such as features or targets current in DuckDB.

Why append instead of recomputing: a row of features or targets is a function of the candles
around it only (the warm-up bars before it, and for targets the H bars after it), and stored
candles are immutable (``insert_new_candles`` inserts, it never updates).  So an hourly run has
only rows to add (bars that closed, or got their label, since the last build) and rows to drop
(bars that left the training window); recomputing and rewriting the whole window cost
O(window) for O(new bars) of change.  Each appended row is computed from its full warm-up (the
``warmup_bars`` bars before it, read by position, so gaps in the feed are handled the same
way as in a full build).

Only the table's own instruments (BLOFIN_INSTRUMENTS) are read: one removed from the list
leaves the table at its next build (its candles stay stored), as a changed setting.

The table is rebuilt from scratch whenever that reasoning might not hold, and the reason is
returned so the asset can show it: the first build, a different code version or setting, a
table whose columns or newest rows are not what the last build left, or candles at or before
the last build's newest candle that changed (a back-filled gap shifts every trailing window
after it).  The last check is a per-instrument count and content hash of the stored candles up
to that point: the insert that stored them recorded the hash of all of them
(``fingerprints.per_instrument``), so only the candles that came after are hashed here and
an hourly check costs O(new bars), not O(history).

A rebuild reads, computes and writes a group of instruments at a time (about
REBUILD_CHUNK_CANDLES candles) inside its one transaction, so a first build of the whole
market holds one group's candles and rows in memory, not all of them.

Appended rows equal a full rebuild's to rounding only, not bit for bit: long trailing sums are
running sums, whose rounding depends on where the read starts. test_derived pins the tolerance.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd

from blofin_assets.storage.candles import newest_candle_ts, read_candles
from blofin_assets.storage.connection import transaction
from blofin_assets.storage.derived_rows import (
    RowStats,
    append_rows,
    combine,
    create_table,
    delete_before,
    drop_stored_rows,
    read_candles_after,
    row_stats,
    table_summary,
)
from blofin_assets.storage.derived_state import (
    candles_against_last_build,
    ensure_state_table,
    rebuild_reason,
    save_state,
    stored_marks,
    stored_row_stats,
)

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
    instruments: tuple[str, ...]  # the only ones read; a setting too (a change rebuilds)

    def settings_json(self) -> str:
        every = {**self.settings, "instruments": sorted(self.instruments)}
        return json.dumps(every, sort_keys=True, default=str)


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
    # "compute" (table.compute), "write" (inserts and bookkeeping, commit included); a
    # rebuild's chunks add up into each.
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
    window_start = newest_candle_ts(con, table.instruments) - pd.Timedelta(days=training_days)
    fingerprints, fingerprint_source = candles_against_last_build(
        con, table.name, table.instruments
    )
    reason = rebuild_reason(con, table, fingerprints)
    clock.lap("check")
    with transaction(con):
        if reason is None:
            candles, rows = compute_rows(con, table, fingerprints, window_start, bar, clock)
            clock.lap("compute")
            stats, dropped = append_new_rows(con, table, rows, window_start)
            candles_read, rows_added = len(candles), len(rows)
        else:
            stats, candles_read = rebuild_in_chunks(con, table, window_start, bar, clock)
            dropped, rows_added = {}, sum(count for count, _ in stats.values())
        summary = table_summary(con, table.name, stats)
        save_state(con, table, fingerprints, stats, summary.pop("last_row_ts"))
    clock.lap("write")
    return Refresh(
        mode="append" if reason is None else "rebuild",
        reason=reason or "appended the rows after the last build",
        candles_read=candles_read,
        rows_added=rows_added,
        rows_dropped=sum(count for count, _ in dropped.values()),
        candle_fingerprint_source=fingerprint_source,
        window_start=window_start,
        seconds=clock.laps,
        **summary,
    )


# Candles read, computed and written at once by a rebuild: a first build of the whole market
# holds one group of instruments' candles, rows and Arrow copy at a time, not all of them.
# Above the size at which computing runs on every core (ml.blocks.PARALLEL_MIN_CANDLES).
REBUILD_CHUNK_CANDLES = 500_000


def instrument_chunks(
    con: duckdb.DuckDBPyConnection, instruments: tuple[str, ...], read_start: pd.Timestamp
) -> list[list[str]]:
    """Consecutive groups of the stored instruments (sorted), each of about
    REBUILD_CHUNK_CANDLES candles from ``read_start`` on (one instrument may exceed it)."""
    counts = con.execute(
        "SELECT inst_id, count(*) FROM candles WHERE list_contains(?::VARCHAR[], inst_id) "
        "AND ts >= ? GROUP BY inst_id ORDER BY inst_id",
        [list(instruments), read_start.to_pydatetime()],
    ).fetchall()
    chunks: list[list[str]] = []
    size = 0
    for inst, count in counts:
        if not chunks or size + count > REBUILD_CHUNK_CANDLES:
            chunks.append([])
            size = 0
        chunks[-1].append(inst)
        size += count
    return chunks


def rebuild_in_chunks(
    con: duckdb.DuckDBPyConnection,
    table: DerivedTable,
    window_start: pd.Timestamp,
    bar: pd.Timedelta,
    clock: Stopwatch,
) -> tuple[RowStats, int]:
    """Recreate the table from every stored candle of the window, instruments a chunk at a
    time, inside the caller's transaction; the rows equal one read of everything (each row
    depends on its own instrument's candles only). Returns the row stats and candles read."""
    read_start = window_start - table.warmup_bars * bar
    stats: RowStats = {}
    candles_read = 0
    chunks = instrument_chunks(con, table.instruments, read_start) or [list(table.instruments)]
    created = False
    for chunk in chunks:
        candles = read_candles(con, start=read_start, instruments=chunk)
        candles_read += len(candles)
        clock.lap("read")
        rows = table.compute(candles, window_start)
        del candles
        check_columns(table, rows)
        clock.lap("compute")
        if not rows.empty:  # the first chunk with rows creates the table, from its types
            write = append_rows if created else create_table
            stats.update(write(con, table.name, rows))
            created = True
        del rows
        clock.lap("write")
    if not stats:
        raise ValueError(
            f"no {table.name} rows: the {candles_read} candles from {read_start} on are "
            f"fewer than the {table.warmup_bars}-bar warm-up needs (per instrument)"
        )
    return stats, candles_read


def check_columns(table: DerivedTable, rows: pd.DataFrame) -> None:
    if list(rows.columns) != table.columns:
        raise ValueError(
            f"{table.name} rows have columns {list(rows.columns)}, not {table.columns}"
        )


def compute_rows(
    con: duckdb.DuckDBPyConnection,
    table: DerivedTable,
    fingerprints: pd.DataFrame,
    window_start: pd.Timestamp,
    bar: pd.Timedelta,
    clock: Stopwatch,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """An append's candles and rows: each instrument's candles after its stored rows, with
    their warm-up, and the rows after its mark."""
    read_start = window_start - table.warmup_bars * bar
    marks = stored_marks(con, table.name)
    instruments = list(fingerprints["inst_id"])
    candles = read_candles_after(con, instruments, marks, read_start, table.warmup_bars, bar)
    clock.lap("read")
    rows = drop_stored_rows(table.compute(candles, window_start), marks)
    check_columns(table, rows)
    return candles, rows


def append_new_rows(
    con: duckdb.DuckDBPyConnection,
    table: DerivedTable,
    rows: pd.DataFrame,
    window_start: pd.Timestamp,
) -> tuple[RowStats, RowStats]:
    """Drop the rows that left the window and append the new ones, inside the caller's
    transaction; returns the per-instrument stats after the write and those of dropped rows."""
    # Content hashes are XORs of row hashes: update them by what left and came.
    stored = stored_row_stats(con, table.name)
    dropped = row_stats(con, table.name, "WHERE t.ts < ?", [window_start.to_pydatetime()])
    delete_before(con, table.name, window_start)
    added = append_rows(con, table.name, rows)
    return combine(stored, dropped, added), dropped


class Stopwatch:
    """Wall seconds per named phase, so a slow refresh says which part was slow."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        """The time since the last lap, added to ``name`` (a chunked phase sums its chunks)."""
        now = time.perf_counter()
        self.laps[name] = round(self.laps.get(name, 0.0) + now - self._last, 4)
        self._last = now
