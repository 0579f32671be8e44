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
    window_start = newest_candle_ts(con, table.instruments) - pd.Timedelta(days=training_days)
    fingerprints, fingerprint_source = candles_against_last_build(
        con, table.name, table.instruments
    )
    reason = rebuild_reason(con, table, fingerprints)
    clock.lap("check")
    candles, rows = compute_rows(con, table, reason, fingerprints, window_start, bar, clock)
    clock.lap("compute")
    with transaction(con):
        stats, dropped = write_rows(con, table, reason, rows, window_start)
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


def compute_rows(
    con: duckdb.DuckDBPyConnection,
    table: DerivedTable,
    reason: str | None,
    fingerprints: pd.DataFrame,
    window_start: pd.Timestamp,
    bar: pd.Timedelta,
    clock: Stopwatch,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The candles read and the rows to write: only those after the stored rows when appending
    (``reason`` is None), every row of the window when rebuilding."""
    read_start = window_start - table.warmup_bars * bar
    if reason is None:
        marks = stored_marks(con, table.name)
        instruments = list(fingerprints["inst_id"])
        candles = read_candles_after(con, instruments, marks, read_start, table.warmup_bars, bar)
        clock.lap("read")
        rows = drop_stored_rows(table.compute(candles, window_start), marks)
    else:
        candles = read_candles(con, start=read_start, instruments=table.instruments)
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
    return candles, rows


def write_rows(
    con: duckdb.DuckDBPyConnection,
    table: DerivedTable,
    reason: str | None,
    rows: pd.DataFrame,
    window_start: pd.Timestamp,
) -> tuple[RowStats, RowStats]:
    """Append (dropping rows that left the window) or recreate the table, inside the caller's
    transaction; returns the per-instrument stats after the write and those of dropped rows."""
    if reason is not None:
        return create_table(con, table.name, rows), {}
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
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 4)
        self._last = now
