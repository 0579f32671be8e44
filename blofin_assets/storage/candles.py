"""The candles table and its quarantine: schema, inserts of new bars, reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from blofin_assets.market.clock import as_utc
from blofin_assets.market.contract import CANDLE_COLUMNS, OPTIONAL_CANDLE_COLUMNS
from blofin_assets.storage.candle_conflicts import (
    compare_with_stored,
    conflict_error,
    conflicts_as_rejected,
)
from blofin_assets.storage.connection import registered, transaction
from blofin_assets.storage.fingerprints import CANDLE_FINGERPRINTS_DDL, record_fingerprints
from blofin_assets.storage.results import migrate_results
from blofin_assets.storage.sql import column_list, scalar, table_exists
from blofin_assets.storage.warehouse import IDENTITY_DDL, check_identity, record_identity

CANDLES_DDL = """
CREATE TABLE IF NOT EXISTS candles (
    inst_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    open DOUBLE NOT NULL,
    high DOUBLE NOT NULL,
    low DOUBLE NOT NULL,
    close DOUBLE NOT NULL,
    volume DOUBLE NOT NULL,
    volume_currency DOUBLE,
    volume_quote DOUBLE,
    source VARCHAR NOT NULL,
    ingested_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (inst_id, ts)
)
"""


CANDLES_REJECTED_DDL = """
CREATE TABLE IF NOT EXISTS candles_rejected (
    inst_id VARCHAR,
    ts TIMESTAMPTZ,
    raw VARCHAR,
    origin VARCHAR,
    reason VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    rejected_at TIMESTAMPTZ NOT NULL
)
"""


# Column order of the stored table: the contract's, then where and when each bar came in.
STORED_CANDLE_COLUMNS = [*CANDLE_COLUMNS, *OPTIONAL_CANDLE_COLUMNS, "source", "ingested_at"]


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(CANDLES_DDL)
    con.execute(CANDLE_FINGERPRINTS_DDL)
    con.execute(CANDLES_REJECTED_DDL)
    con.execute(IDENTITY_DDL)
    migrate_results(con)


@dataclass(frozen=True)
class CandleInsert:
    """What an insert did with each incoming candle."""

    new_rows: int
    unchanged_rows: int  # already stored with the same values: the overlap re-fetch, a no-op
    conflicting_rows: int  # stored with other values: quarantined (reject mode raises instead)


def insert_new_candles(
    con: duckdb.DuckDBPyConnection,
    frame: pd.DataFrame,
    *,
    source: str,
    bar: str,
    on_bad_rows: str = "reject",
    rejected: pd.DataFrame | None = None,
) -> CandleInsert:
    """Insert candles not yet stored (and quarantined rows) in one transaction.

    Refused, with nothing written, when the file holds another bar size or market
    (storage.warehouse) or, unless ``on_bad_rows="quarantine"``, when an incoming candle is
    stored with other values (storage.candle_conflicts).
    """
    if on_bad_rows not in ("reject", "quarantine"):
        raise ValueError(f"on_bad_rows={on_bad_rows!r}: expected 'reject' or 'quarantine'")
    check_identity(con, bar=bar, source=source)  # before any DDL: a refused run changes nothing
    ensure_schema(con)
    if frame.empty and (rejected is None or rejected.empty):
        return CandleInsert(0, 0, 0)
    ingested_at = pd.Timestamp.now(tz="UTC")
    with transaction(con):
        record_identity(con, bar=bar, source=source)
        # A first backfill shares no key with stored candles: nothing to compare or skip.
        overlapping = stored_in_span(con, frame)
        unchanged, conflicts = (
            stored_overlap(con, frame, source=source, on_bad_rows=on_bad_rows)
            if overlapping
            else (0, None)
        )
        new_rows = insert_in_chunks(
            con, frame, source=source, ingested_at=ingested_at, skip_stored=overlapping
        )
        for rows in (rejected, conflicts):
            if rows is not None:
                insert_rejected(con, rows, source=source)
        record_fingerprints(con)
    return CandleInsert(new_rows, unchanged, 0 if conflicts is None else len(conflicts))


# Rows handed to DuckDB per INSERT: a first backfill of the whole market is millions of rows,
# and one INSERT of them all holds an Arrow copy of the batch beside DuckDB's own buffers.
INSERT_CHUNK_ROWS = 500_000


def incoming_select(frame: pd.DataFrame, name: str) -> str:
    """SELECT of a registered batch in the stored layout's value columns: an optional volume
    the batch lacks is NULL (as a NaN in the frame would be)."""
    columns = [*CANDLE_COLUMNS, *OPTIONAL_CANDLE_COLUMNS]
    select = [c if c in frame.columns else f"NULL::DOUBLE AS {c}" for c in columns]
    return f"SELECT {', '.join(select)} FROM {name}"


def insert_in_chunks(
    con: duckdb.DuckDBPyConnection,
    frame: pd.DataFrame,
    *,
    source: str,
    ingested_at: pd.Timestamp,
    skip_stored: bool = True,
) -> int:
    """Insert the rows whose (inst_id, ts) is not stored yet, INSERT_CHUNK_ROWS at a time,
    inside the caller's transaction; returns how many were new.

    Stored keys, conflicting or not, are skipped: a stored candle is never rewritten. Without
    ``skip_stored`` (no stored candle in the batch's span) a plain INSERT, about 40 % cheaper
    than ON CONFLICT on a backfill; a repeated key in the batch then fails the whole insert
    instead of being skipped. Each chunk goes through Arrow (DuckDB scans it several times
    faster than pandas' object columns); the source and ingestion time are constants of the
    INSERT, not frame columns.
    """
    if frame.empty:
        return 0
    on_conflict = " ON CONFLICT DO NOTHING" if skip_stored else ""
    present = [c for c in (*CANDLE_COLUMNS, *OPTIONAL_CANDLE_COLUMNS) if c in frame.columns]
    columns = column_list(STORED_CANDLE_COLUMNS)
    before = scalar(con, "SELECT count(*) FROM candles")
    for offset in range(0, len(frame), INSERT_CHUNK_ROWS):
        part = frame.iloc[offset : offset + INSERT_CHUNK_ROWS][present]
        chunk = pa.Table.from_pandas(part, preserve_index=False)  # NaN -> NULL, as pandas'
        with registered(con, "incoming_chunk", chunk):
            con.execute(
                f"INSERT INTO candles ({columns}) SELECT *, ?::VARCHAR, ?::TIMESTAMPTZ FROM "
                f"({incoming_select(part, 'incoming_chunk')}){on_conflict}",
                [source, ingested_at.to_pydatetime()],
            )
        del chunk
    return int(scalar(con, "SELECT count(*) FROM candles") - before)


def stored_in_span(con: duckdb.DuckDBPyConnection, batch: pd.DataFrame) -> bool:
    """Whether any stored candle lies in the batch's time span (of any instrument): if none
    does, no incoming candle can share a key with a stored one."""
    if batch.empty:
        return False
    span = [batch["ts"].min().to_pydatetime(), batch["ts"].max().to_pydatetime()]
    row = con.execute("SELECT 1 FROM candles WHERE ts >= ? AND ts <= ? LIMIT 1", span)
    return bool(row.fetchall())


def stored_overlap(
    con: duckdb.DuckDBPyConnection, batch: pd.DataFrame, *, source: str, on_bad_rows: str
) -> tuple[int, pd.DataFrame | None]:
    """Incoming candles already stored: how many with the same values, and the conflicting
    ones as rows to quarantine; raises on a conflict unless quarantining.

    The whole batch is compared at once, so an error counts every conflict of the batch.
    """
    if batch.empty:
        return 0, None
    span = (batch["ts"].min(), batch["ts"].max())
    quarantine = on_bad_rows == "quarantine"
    with registered(con, "incoming_frame", batch):
        # Inside the caller's transaction: a failure rolls the view back with everything else.
        view = "incoming_candles"
        con.execute(f"CREATE TEMP VIEW {view} AS {incoming_select(batch, 'incoming_frame')}")
        overlap = compare_with_stored(con, view, span, all_conflicts=quarantine)
        con.execute(f"DROP VIEW {view}")
    if overlap.conflict_count and not quarantine:
        raise conflict_error(overlap, source=source, incoming_rows=len(batch))
    conflicts = conflicts_as_rejected(overlap, source=source) if overlap.conflict_count else None
    return overlap.unchanged_rows, conflicts


def insert_rejected(con: duckdb.DuckDBPyConnection, rejected: pd.DataFrame, *, source: str) -> int:
    """Quarantine rows with their reason; called inside insert_new_candles' transaction."""
    if rejected.empty:
        return 0
    batch = rejected[["inst_id", "ts", "raw", "origin", "reason"]].copy()
    batch["source"] = source
    batch["rejected_at"] = pd.Timestamp.now(tz="UTC")
    with registered(con, "incoming_rejected", batch):
        # A bad bar re-fetched in the next run's overlap is quarantined once, not every hour.
        before = scalar(con, "SELECT count(*) FROM candles_rejected")
        con.execute(
            "INSERT INTO candles_rejected SELECT * FROM incoming_rejected AS i WHERE NOT EXISTS ("
            "SELECT 1 FROM candles_rejected AS r WHERE r.inst_id IS NOT DISTINCT FROM i.inst_id "
            "AND r.ts IS NOT DISTINCT FROM i.ts AND r.origin IS NOT DISTINCT FROM i.origin "
            "AND r.reason = i.reason AND r.raw IS NOT DISTINCT FROM i.raw)"
        )
        return int(scalar(con, "SELECT count(*) FROM candles_rejected") - before)


def latest_candle_ts(con: duckdb.DuckDBPyConnection) -> dict[str, pd.Timestamp]:
    if not table_exists(con, "candles"):
        return {}
    rows = con.execute("SELECT inst_id, max(ts) FROM candles GROUP BY inst_id").fetchall()
    return {inst_id: as_utc(ts) for inst_id, ts in rows}


def newest_candle_ts(
    con: duckdb.DuckDBPyConnection, instruments: Sequence[str] | None = None
) -> pd.Timestamp:
    """The newest stored bar (of ``instruments``, if given): where the training window ends."""
    where, params = instrument_filter(instruments)
    row = (
        con.execute(f"SELECT max(ts) FROM candles WHERE {where}", params).fetchall()[0]
        if table_exists(con, "candles")
        else None
    )
    if row is None or row[0] is None:
        of = "" if instruments is None else f" of {', '.join(instruments)}"
        raise ValueError(f"the candles table holds no candles{of}: materialize candles first")
    return as_utc(row[0])


def instrument_filter(instruments: Sequence[str] | None) -> tuple[str, list[object]]:
    """SQL condition (and its parameter) keeping only ``instruments``; all when None."""
    if instruments is None:
        return "true", []
    return "list_contains(?::VARCHAR[], inst_id)", [list(instruments)]


def read_candles(
    con: duckdb.DuckDBPyConnection,
    *,
    start: pd.Timestamp | None = None,
    instruments: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Candles from ``start`` on (the training window plus warm-up) of ``instruments`` (all
    when None), contract layout."""
    where, params = instrument_filter(instruments)
    if instruments:
        # Constant bounds let DuckDB skip the row groups of other instruments (the table is
        # stored in insertion order, each backfill instrument by instrument).
        where += " AND inst_id >= ? AND inst_id <= ?"
        params += [min(instruments), max(instruments)]
    query = f"SELECT {column_list(CANDLE_COLUMNS)} FROM candles WHERE {where}"
    if start is not None:
        query += " AND ts >= ?"
        params.append(start.to_pydatetime())
    return candle_frame(con.sql(query + " ORDER BY inst_id, ts", params=params).to_arrow_table())


def candle_frame(table: pa.Table) -> pd.DataFrame:
    """Contract frame from Arrow, ``inst_id`` through its dictionary: a few shared str objects
    instead of one per row, which is most of the cost of converting millions of candles."""
    ids = table.column("inst_id").combine_chunks().dictionary_encode()
    names = np.asarray(ids.dictionary.to_pylist(), dtype=object)
    frame = table.drop_columns(["inst_id"]).to_pandas()
    frame.insert(0, "inst_id", names[ids.indices.to_numpy()] if len(names) else names[:0])
    ts = frame["ts"]
    # TIMESTAMPTZ arrives tz-aware: converting the zone is free, re-parsing it is not.
    frame["ts"] = (
        ts.dt.tz_convert("UTC")
        if isinstance(ts.dtype, pd.DatetimeTZDtype)
        else pd.to_datetime(ts, utc=True)
    )
    return frame[CANDLE_COLUMNS]


def candle_sources(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Where the stored candles came from, so every downstream asset can say so."""
    if not table_exists(con, "candles"):
        return []
    return [
        row[0] for row in con.execute("SELECT DISTINCT source FROM candles ORDER BY 1").fetchall()
    ]
