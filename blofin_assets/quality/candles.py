"""Verdicts on the candles table: duplicates, OHLC consistency, gaps, freshness."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pandas as pd

from blofin_assets.market.clock import as_utc
from blofin_assets.ml.verdict import Verdict
from blofin_assets.storage.sql import scalar

GAP_ALERT_BARS = 5


FRESHNESS_BARS = 2


def candles_unique(con: duckdb.DuckDBPyConnection) -> Verdict:
    """Duplicate (inst_id, ts) rows.

    The product's candles table has that PRIMARY KEY, which DuckDB enforces on every insert, so
    there the catalog answers instead of a count over all history every hour (a scan that grows
    with the history); a table without the key, created by other means, is counted row by row.
    """
    keyed = scalar(
        con,
        "SELECT count(*) FROM duckdb_constraints() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = 'candles' AND constraint_type = 'PRIMARY KEY' "
        "AND constraint_column_names = ['inst_id', 'ts']",
    )
    if keyed:
        rows, duplicates = scalar(con, "SELECT count(*) FROM candles"), 0
    else:
        rows, distinct = con.execute(
            "SELECT count(*), count(DISTINCT (inst_id, ts)) FROM candles"
        ).fetchall()[0]
        duplicates = int(rows - distinct)
    how = "PRIMARY KEY (inst_id, ts) enforced by DuckDB" if keyed else "counted"
    return Verdict(
        "no_duplicate_bars",
        duplicates == 0,
        "ERROR",
        f"{duplicates} duplicate (inst_id, ts) rows among {rows} ({how})",
        {"rows": int(rows), "duplicates": duplicates, "primary_key": bool(keyed)},
    )


def candles_ohlc_valid(con: duckdb.DuckDBPyConnection) -> Verdict:
    counts = con.execute(
        """
        SELECT
            count(*) FILTER (WHERE least(open, high, low, close) <= 0),
            count(*) FILTER (WHERE low > least(open, close) OR high < greatest(open, close)
                             OR high < low),
            count(*) FILTER (WHERE volume < 0),
            count(*) FILTER (WHERE NOT (isfinite(open) AND isfinite(high) AND isfinite(low)
                             AND isfinite(close) AND isfinite(volume)))
        FROM candles
        """
    ).fetchall()[0]
    labels = ("non_positive_price", "ohlc_inconsistent", "negative_volume", "non_finite")
    found = {label: int(count) for label, count in zip(labels, counts, strict=True)}
    bad = sum(found.values())
    return Verdict(
        "ohlc_consistent",
        bad == 0,
        "ERROR",
        "low <= open, close <= high; prices > 0; volume >= 0; all finite"
        if bad == 0
        else f"{bad} bad candle rows: {found}",
        found,
    )


def candles_gaps(con: duckdb.DuckDBPyConnection, bar: pd.Timedelta) -> Verdict:
    """Gaps are allowed (exchanges pause) but counted, so a broken feed shows."""
    seconds = bar.total_seconds()
    per_instrument = con.execute(
        f"""
        WITH steps AS (
            SELECT inst_id,
                   epoch(ts - lag(ts) OVER (PARTITION BY inst_id ORDER BY ts)) / {seconds}
                       AS bars
            FROM candles
        )
        SELECT inst_id, count(*) FILTER (WHERE bars > {GAP_ALERT_BARS}) AS gaps,
               coalesce(max(bars), 1) AS largest
        FROM steps GROUP BY inst_id ORDER BY inst_id
        """
    ).df()
    gaps = int(per_instrument["gaps"].sum()) if not per_instrument.empty else 0
    largest = float(per_instrument["largest"].max()) if not per_instrument.empty else 0.0
    return Verdict(
        "gaps",
        gaps == 0,
        "WARN",
        f"{gaps} gaps longer than {GAP_ALERT_BARS} bars; largest {largest:.0f} bars",
        {
            "gaps": gaps,
            "largest_gap_bars": largest,
            "per_instrument": {
                row.inst_id: int(row.gaps) for row in per_instrument.itertuples(index=False)
            },
        },
    )


def candles_fresh(
    con: duckdb.DuckDBPyConnection,
    *,
    now: pd.Timestamp,
    bar: pd.Timedelta,
    live: bool,
    instruments: Sequence[str] | None = None,
) -> Verdict:
    """The newest bar of each configured instrument (all stored, if None): one removed from
    BLOFIN_INSTRUMENTS is no longer fetched, so its stored candles are old by design."""
    rows = [
        (inst_id, ts)
        for inst_id, ts in con.execute(
            "SELECT inst_id, max(ts) FROM candles GROUP BY inst_id ORDER BY inst_id"
        ).fetchall()
        if instruments is None or inst_id in instruments
    ]
    lag_bars = {inst_id: float((now - (as_utc(ts) + bar)) / bar) for inst_id, ts in rows}
    if not live:
        return Verdict(
            "fresh",
            True,
            "WARN",
            "historical file source: freshness does not apply",
            {"lag_bars": lag_bars},
        )
    stale = {k: v for k, v in lag_bars.items() if v > FRESHNESS_BARS}
    return Verdict(
        "fresh",
        not stale and bool(lag_bars),
        "WARN",
        f"newest closed bar within {FRESHNESS_BARS} bars of now for every instrument"
        if not stale and lag_bars
        else f"stale instruments (bars behind): {stale or 'no candles'}",
        {"lag_bars": lag_bars, "threshold_bars": FRESHNESS_BARS},
    )
