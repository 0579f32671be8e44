"""Per-instrument candle fingerprints: count, first and last bar, XOR of the rows' hashes.

Every candle insert records them in its own transaction (``record``), so the hourly steps after
it read them instead of hashing all history again.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from blofin_assets.market.contract import CANDLE_COLUMNS
from blofin_assets.storage.sql import column_list, table_exists

# Written by every candle insert, in its transaction: what a full hashing scan of the candles
# gave then, so the hourly steps after it need not hash every stored candle again.
CANDLE_FINGERPRINTS_DDL = """
CREATE TABLE IF NOT EXISTS candle_fingerprints (
    inst_id VARCHAR PRIMARY KEY,
    candle_count BIGINT NOT NULL,
    first_ts TIMESTAMPTZ NOT NULL,
    last_ts TIMESTAMPTZ NOT NULL,
    content_hash UBIGINT NOT NULL
)
"""


def candle_content(alias: str = "") -> str:
    """SQL for the content hash of one candle row (DuckDB's hash: a DuckDB upgrade that changes
    it makes every fingerprint differ once, i.e. one rebuild of features and targets)."""
    return f"hash({column_list(CANDLE_COLUMNS, alias)})"


FINGERPRINT_COLUMNS = ["inst_id", "candle_count", "first_ts", "last_ts", "content_hash"]


HASH_EVERY_CANDLE = (
    "SELECT inst_id, count(*), min(ts), max(ts), "
    f"bit_xor({candle_content()}) FROM candles GROUP BY inst_id"
)


def record_fingerprints(con: duckdb.DuckDBPyConnection) -> None:
    """Hash every stored candle, per instrument, into candle_fingerprints; call it inside the
    transaction that changed the candles, so the record never describes other candles."""
    con.execute("DELETE FROM candle_fingerprints")
    con.execute(f"INSERT INTO candle_fingerprints {HASH_EVERY_CANDLE}")


RECORDED = "recorded by the last candle insert"


def per_instrument(con: duckdb.DuckDBPyConnection) -> tuple[pd.DataFrame, str]:
    """Per instrument (sorted): candle count, first and last bar, XOR of the candle hashes; and
    where they came from (RECORDED, or why every candle had to be hashed), for the metadata.

    From candle_fingerprints when it still describes the table: its counts and first and last
    bars match a scan of (inst_id, ts), which costs a fraction of hashing every candle. A row
    added or deleted outside ``insert_new_candles`` fails that match and the whole table is hashed
    here instead; an in-place edit of a stored candle's prices (candles are never updated) is
    seen by the next insert's record, not before.
    """
    shape = con.execute(
        "SELECT inst_id, count(*), min(ts), max(ts) FROM candles GROUP BY inst_id ORDER BY inst_id"
    ).fetchall()
    recorded = (
        con.execute(
            f"SELECT {', '.join(FINGERPRINT_COLUMNS)} FROM candle_fingerprints ORDER BY inst_id"
        ).fetchall()
        if table_exists(con, "candle_fingerprints")
        else []
    )
    source = RECORDED
    if [row[:4] for row in recorded] != shape:
        in_record, in_table = {row[:4] for row in recorded}, set(shape)
        disagreeing = sorted({row[0] for row in in_record ^ in_table})
        source = (
            f"hashed every candle: candle_fingerprints disagrees with the table for "
            f"{', '.join(disagreeing)} (candles added or deleted outside insert_new_candles, or a "
            "warehouse from before the record)"
        )
        recorded = con.execute(f"{HASH_EVERY_CANDLE} ORDER BY inst_id").fetchall()
    frame = pd.DataFrame(recorded, columns=FINGERPRINT_COLUMNS)
    frame["candle_count"] = frame["candle_count"].astype("int64")
    frame["content_hash"] = pd.array([int(h) for h in frame["content_hash"]], dtype="uint64")
    for column in ("first_ts", "last_ts"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame, source


def whole_table_fingerprint(con: duckdb.DuckDBPyConnection) -> dict[str, object]:
    """Row count, time span and an order-independent content hash of all stored candles, and
    where they came from (see per_instrument)."""
    by_instrument, source = per_instrument(con)
    content = 0
    for value in by_instrument["content_hash"]:
        content ^= int(value)
    empty = by_instrument.empty
    return {
        "rows": int(by_instrument["candle_count"].sum()),
        "first_ts": None if empty else by_instrument["first_ts"].min(),
        "last_ts": None if empty else by_instrument["last_ts"].max(),
        "instruments": len(by_instrument),
        "content_hash": f"{content:016x}",
        "source": source,
    }
