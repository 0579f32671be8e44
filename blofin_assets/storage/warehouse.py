"""What one warehouse file holds: one bar size, and either the synthetic demo market or real
data, recorded in warehouse_identity by the candle insert that first wrote each source.

A file never mixes bar sizes (every window, warm-up and label is counted in bars) nor the demo
market with real data (a model trained on both is trained on neither). The two real sources,
``blofin`` and ``file``, may share a file: loading a file export of BloFin candles and then
polling BloFin live is a normal workflow; where their bars overlap they must agree
(``candles.insert_new_candles``). A file written before the record is adopted: its bar size
is read off the stored candles' spacing and its sources off their ``source`` column.

The checks only read, so a run refused here has changed nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pandas as pd

from blofin_assets.market.bars import BAR_DURATIONS, bar_name
from blofin_assets.market.clock import as_utc
from blofin_assets.storage.connection import database_path
from blofin_assets.storage.sql import scalar, table_exists

IDENTITY_TABLE = "warehouse_identity"

IDENTITY_DDL = f"""
CREATE TABLE IF NOT EXISTS {IDENTITY_TABLE} (
    source VARCHAR PRIMARY KEY,
    bar VARCHAR NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    recorded_by VARCHAR NOT NULL
)
"""

SYNTHETIC_SOURCES = frozenset({"demo"})

WAY_OUT = (
    "use another BLOFIN_DUCKDB_PATH (and BLOFIN_MODELS_DIR) for this run, or start over by "
    "deleting {path} and the models directory (README, Configuration: one file, one bar size, "
    "one market). Nothing was changed."
)


class WarehouseMismatchError(ValueError):
    """The run's bar size or source does not fit what the DuckDB file already holds."""


@dataclass(frozen=True)
class Identity:
    """The bar size and sources a file holds (bar None: nothing stored yet)."""

    bar: str | None
    sources: tuple[str, ...]
    adopted: bool  # read off candles stored before the record existed, not recorded yet


def market_of(source: str) -> str:
    return "the synthetic demo market" if source in SYNTHETIC_SOURCES else "real market data"


def stored_identity(con: duckdb.DuckDBPyConnection) -> Identity:
    """The recorded identity, or the one the stored candles imply when there is no record."""
    rows = (
        con.execute(f"SELECT source, bar FROM {IDENTITY_TABLE} ORDER BY source").fetchall()
        if table_exists(con, IDENTITY_TABLE)
        else []
    )
    if not rows:
        return adopted_identity(con)
    bars = sorted({bar for _, bar in rows})
    if len(bars) > 1:
        raise WarehouseMismatchError(
            f"DuckDB file {database_path(con)}: {IDENTITY_TABLE} records {len(bars)} bar sizes "
            f"{bars} (edited by hand?); " + WAY_OUT.format(path=database_path(con))
        )
    return Identity(bars[0], tuple(source for source, _ in rows), adopted=False)


def adopted_identity(con: duckdb.DuckDBPyConnection) -> Identity:
    """A file from before the record: the bar is the smallest step between two bars of one
    instrument, if that is a bar size; otherwise the stored candles cannot tell, and fail."""
    if not table_exists(con, "candles"):
        return Identity(None, (), adopted=False)
    sources = tuple(
        row[0] for row in con.execute("SELECT DISTINCT source FROM candles ORDER BY 1").fetchall()
    )
    if not sources:
        return Identity(None, (), adopted=False)
    step = scalar(
        con,
        "SELECT min(step) FROM (SELECT ts - lag(ts) OVER (PARTITION BY inst_id ORDER BY ts) "
        "AS step FROM candles)",
    )
    bar = None if step is None else bar_name(pd.Timedelta(step).value)
    if bar not in BAR_DURATIONS:
        rows = scalar(con, "SELECT count(*) FROM candles")
        spacing = "no instrument has two bars" if step is None else f"smallest step {bar}"
        path = database_path(con)
        raise WarehouseMismatchError(
            f"DuckDB file {path} holds {rows} candles from before it recorded its bar "
            f"size, and their spacing ({spacing}) is no bar size of {sorted(BAR_DURATIONS)}; "
            + WAY_OUT.format(path=path)
        )
    return Identity(bar, sources, adopted=True)


def check_identity(
    con: duckdb.DuckDBPyConnection, *, bar: str, source: str | None = None
) -> Identity:
    """Refuse a run whose bar size (or, when it writes candles, source) the file does not
    hold; reads only. Returns what the file holds."""
    held = stored_identity(con)
    path = database_path(con)
    if held.bar is not None and held.bar != bar:
        raise WarehouseMismatchError(
            f"DuckDB file {path} holds {held.bar} candles, but BLOFIN_BAR={bar}: one file holds "
            f"one bar size. Set BLOFIN_BAR={held.bar} to keep using it, or "
            + WAY_OUT.format(path=path)
        )
    markets = sorted({market_of(s) for s in held.sources})
    if len(markets) > 1:
        raise WarehouseMismatchError(
            f"DuckDB file {path} already mixes the synthetic demo market with real market data "
            f"(sources {', '.join(held.sources)}), from before this check; "
            + WAY_OUT.format(path=path)
        )
    if source is not None and markets and markets != [market_of(source)]:
        raise WarehouseMismatchError(
            f"DuckDB file {path} holds {markets[0]} (sources {', '.join(held.sources)}), but "
            f"BLOFIN_SOURCE={source} is {market_of(source)}: one file never mixes the two; "
            + WAY_OUT.format(path=path)
        )
    return held


def record_identity(con: duckdb.DuckDBPyConnection, *, bar: str, source: str) -> None:
    """Check, then record this source (and an adopted file's own identity); call it inside
    the transaction that writes the candles, so the record and the candles go together."""
    held = check_identity(con, bar=bar, source=source)
    con.execute(IDENTITY_DDL)
    missing = [(s, "adopted from the stored candles") for s in held.sources if held.adopted]
    if source not in held.sources:
        missing.append((source, "candle insert"))
    for name, how in missing:
        con.execute(
            f"INSERT INTO {IDENTITY_TABLE} VALUES (?, ?, now(), ?) ON CONFLICT DO NOTHING",
            [name, bar, how],
        )


def check_clock(
    con: duckdb.DuckDBPyConnection, *, now: pd.Timestamp, bar: pd.Timedelta, as_of: str
) -> None:
    """Refuse a "now" before the newest stored bar closed: a run as of then would see, and
    train on, bars after its own now. Reads only."""
    if not table_exists(con, "candles"):
        return
    newest = con.execute("SELECT inst_id, ts FROM candles ORDER BY ts DESC LIMIT 1").fetchall()
    if not newest:
        return
    inst_id, ts = newest[0][0], as_utc(newest[0][1])
    if ts + bar <= now:
        return
    clock = f"BLOFIN_AS_OF={as_of}" if as_of else "the real clock"
    path = database_path(con)
    raise WarehouseMismatchError(
        f"{clock} (now {now.isoformat()}) is earlier than the newest stored bar: {inst_id} "
        f"{ts.isoformat()}, closed at {(ts + bar).isoformat()}, in DuckDB file {path}. "
        f"Set BLOFIN_AS_OF to {(ts + bar).isoformat()} or later (or empty, for the real clock), "
        "or replay that past in another BLOFIN_DUCKDB_PATH. Nothing was changed."
    )
