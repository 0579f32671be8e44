"""The candles table and its quarantine: schema, inserts of new bars, reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import pandas as pd

from blofin_assets.market.clock import as_utc
from blofin_assets.market.contract import CANDLE_COLUMNS, OPTIONAL_CANDLE_COLUMNS
from blofin_assets.storage.candle_conflicts import (
    compare_with_stored,
    conflict_error,
    conflicts_as_rejected,
)
from blofin_assets.storage.connection import insert_new_rows, query_frame, registered, transaction
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
    batch = frame.copy()
    for column in OPTIONAL_CANDLE_COLUMNS:
        if column not in batch.columns:
            batch[column] = float("nan")
    batch["source"] = source
    batch["ingested_at"] = pd.Timestamp.now(tz="UTC")
    with transaction(con):
        record_identity(con, bar=bar, source=source)
        unchanged, conflicts = stored_overlap(con, batch, source=source, on_bad_rows=on_bad_rows)
        # Stored keys, conflicting or not, are skipped: a stored candle is never rewritten.
        new_rows = insert_new_rows(con, "candles", batch, STORED_CANDLE_COLUMNS)
        for rows in (rejected, conflicts):
            if rows is not None:
                insert_rejected(con, rows, source=source)
        record_fingerprints(con)
    return CandleInsert(new_rows, unchanged, 0 if conflicts is None else len(conflicts))


def stored_overlap(
    con: duckdb.DuckDBPyConnection, batch: pd.DataFrame, *, source: str, on_bad_rows: str
) -> tuple[int, pd.DataFrame | None]:
    """Incoming candles already stored: how many with the same values, and the conflicting
    ones as rows to quarantine; raises on a conflict unless quarantining."""
    if batch.empty:
        return 0, None
    quarantine = on_bad_rows == "quarantine"
    with registered(con, "incoming_candles", batch[STORED_CANDLE_COLUMNS]):
        span = (batch["ts"].min(), batch["ts"].max())
        overlap = compare_with_stored(con, "incoming_candles", span, all_conflicts=quarantine)
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
    query = f"SELECT {column_list(CANDLE_COLUMNS)} FROM candles WHERE {where}"
    if start is not None:
        query += " AND ts >= ?"
        params.append(start.to_pydatetime())
    return query_frame(con, query + " ORDER BY inst_id, ts", params)


def candle_sources(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Where the stored candles came from, so every downstream asset can say so."""
    if not table_exists(con, "candles"):
        return []
    return [
        row[0] for row in con.execute("SELECT DISTINCT source FROM candles ORDER BY 1").fetchall()
    ]
