"""The candles table and its quarantine: schema, inserts of new bars, reads."""

from __future__ import annotations

import duckdb
import pandas as pd

from blofin_assets.market.clock import as_utc
from blofin_assets.market.contract import CANDLE_COLUMNS, OPTIONAL_CANDLE_COLUMNS
from blofin_assets.storage.connection import insert_new_rows, query_frame, registered, transaction
from blofin_assets.storage.fingerprints import CANDLE_FINGERPRINTS_DDL, record_fingerprints
from blofin_assets.storage.results import migrate_results
from blofin_assets.storage.sql import column_list, scalar, table_exists

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
    migrate_results(con)


def insert_new_candles(
    con: duckdb.DuckDBPyConnection,
    frame: pd.DataFrame,
    *,
    source: str,
    rejected: pd.DataFrame | None = None,
) -> int:
    """Insert candles not yet stored (and quarantined rows) in one transaction; count new ones."""
    ensure_schema(con)
    if frame.empty and (rejected is None or rejected.empty):
        return 0
    batch = frame.copy()
    for column in OPTIONAL_CANDLE_COLUMNS:
        if column not in batch.columns:
            batch[column] = float("nan")
    batch["source"] = source
    batch["ingested_at"] = pd.Timestamp.now(tz="UTC")
    with transaction(con):
        new_rows = insert_new_rows(con, "candles", batch, STORED_CANDLE_COLUMNS)
        if rejected is not None:
            insert_rejected(con, rejected, source=source)
        record_fingerprints(con)
    return new_rows


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


def newest_candle_ts(con: duckdb.DuckDBPyConnection) -> pd.Timestamp:
    row = (
        con.execute("SELECT max(ts) FROM candles").fetchall()[0]
        if table_exists(con, "candles")
        else None
    )
    if row is None or row[0] is None:
        raise ValueError("the candles table is empty: materialize candles first")
    return as_utc(row[0])


def read_candles(
    con: duckdb.DuckDBPyConnection, *, start: pd.Timestamp | None = None
) -> pd.DataFrame:
    """Candles from ``start`` on (the training window plus warm-up), contract layout."""
    query = f"SELECT {column_list(CANDLE_COLUMNS)} FROM candles"
    params: list[object] = []
    if start is not None:
        query += " WHERE ts >= ?"
        params.append(start.to_pydatetime())
    return query_frame(con, query + " ORDER BY inst_id, ts", params)


def candle_sources(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Where the stored candles came from, so every downstream asset can say so."""
    if not table_exists(con, "candles"):
        return []
    return [
        row[0] for row in con.execute("SELECT DISTINCT source FROM candles ORDER BY 1").fetchall()
    ]
