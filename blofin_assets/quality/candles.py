"""Verdicts on the candles table: duplicates, OHLC consistency, gaps, freshness, price jumps."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np
import pandas as pd

from blofin_assets.market.clock import as_utc
from blofin_assets.ml.verdict import Verdict
from blofin_assets.storage.sql import scalar, table_exists

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


# price_jumps: a 1-bar move is "far outside" the instrument's history when its |log return|
# exceeds both JUMP_FLOOR (0.2: +22 % / -18 % in one bar) and JUMP_SCALES robust standard
# deviations (1.4826 x MAD) of the instrument's own 1-bar log returns. Measured on the demo
# market: the largest 1m move in 14 days is 0.022 (38 sigma: fat tails and volatility bursts,
# so at 1m the floor decides); on 1D bars SOL moves up to 0.25, over the floor but 7.5 sigma,
# so on coarse bars of a volatile coin the instrument's own scale decides.
JUMP_FLOOR = 0.2
JUMP_SCALES = 10.0
# The bars looked at: each instrument's bars from the earliest one stored by the ingests of the
# last day on (counted back from the newest ingest, so it needs no clock, covers a first
# backfill whole and a back-filled gap from where it starts), with the JUMP_SCALE_BARS bars
# before them for the scale: O(a day of bars) per hourly check, not O(history). Measured: 9 ms
# an hour on 1.3 M stored bars, 20-30 ms for a first backfill of 3 instruments x 14 days.
JUMP_WINDOW = pd.Timedelta(days=1)
JUMP_SCALE_BARS = 1440
JUMPS_LISTED = 20


def candles_price_jumps(con: duckdb.DuckDBPyConnection, bar: pd.Timedelta) -> Verdict:
    """Bars whose close moved far outside the instrument's history since the previous stored
    bar: a bad tick, a unit change or a real crash, each worth a person's look. The return
    and scale come from DuckDB window functions over recently stored bars only."""
    rule = (
        f"|1-bar log return| > max({JUMP_SCALES:g} x robust sigma (1.4826 MAD of the "
        f"instrument's 1-bar log returns), {JUMP_FLOOR})"
    )
    if not table_exists(con, "candles"):
        return Verdict("price_jumps", True, "WARN", "no candles stored", {"rule": rule})
    rows = con.execute(
        """
        WITH recent AS (
            SELECT inst_id, min(ts) AS first_new FROM candles
            WHERE ingested_at >= (SELECT max(ingested_at) FROM candles) - to_microseconds(?)
            GROUP BY inst_id
        ),
        returns AS (
            SELECT c.inst_id, c.ts, c.close, r.first_new,
                   lag(c.ts) OVER w AS prev_ts, lag(c.close) OVER w AS prev_close,
                   ln(c.close / lag(c.close) OVER w) AS log_return
            FROM candles c JOIN recent r USING (inst_id)
            WHERE c.ts >= r.first_new - to_microseconds(?)
            WINDOW w AS (PARTITION BY c.inst_id ORDER BY c.ts)
        ),
        scale AS (
            SELECT inst_id, 1.4826 * mad(log_return) AS sigma FROM returns GROUP BY inst_id
        ),
        judged AS (
            SELECT inst_id, ts, prev_ts, prev_close, close, log_return, sigma,
                   greatest(? * sigma, ?) AS threshold
            FROM returns JOIN scale USING (inst_id)
            WHERE ts >= first_new AND log_return IS NOT NULL
        )
        SELECT inst_id, count(*) AS bars, any_value(sigma) AS sigma,
               any_value(threshold) AS threshold,
               arg_max(log_return, abs(log_return)) AS largest,
               arg_max(ts, abs(log_return)) AS largest_ts,
               list({'ts': ts, 'prev_ts': prev_ts, 'prev_close': prev_close, 'close': close,
                     'log_return': log_return} ORDER BY abs(log_return) DESC)
                   FILTER (WHERE abs(log_return) > threshold) AS jumps
        FROM judged GROUP BY inst_id ORDER BY inst_id
        """,
        [
            int(JUMP_WINDOW / pd.Timedelta(microseconds=1)),
            int(JUMP_SCALE_BARS * bar / pd.Timedelta(microseconds=1)),
            JUMP_SCALES,
            JUMP_FLOOR,
        ],
    ).fetchall()
    return price_jumps_verdict(rows, rule)


def jump_text(inst_id: str, jump: dict, sigma: float) -> str:
    move = float(np.expm1(jump["log_return"]))
    scales = f", {abs(jump['log_return']) / sigma:.0f} x its robust sigma" if sigma > 0 else ""
    return (
        f"{inst_id} bar {as_utc(jump['ts']).isoformat()}: {move:+.1%} (close "
        f"{jump['prev_close']:.6g} at {as_utc(jump['prev_ts']).isoformat()} -> "
        f"{jump['close']:.6g}{scales})"
    )


def price_jumps_verdict(rows: list[tuple], rule: str) -> Verdict:
    """One line per jump, the largest first; figures per instrument either way."""
    jumps = [
        (abs(j["log_return"]), inst_id, j, sigma)
        for inst_id, _, sigma, _, _, _, found in rows
        for j in (found or [])
    ]
    jumps.sort(key=lambda item: item[0], reverse=True)
    lines = [jump_text(inst_id, j, sigma) for _, inst_id, j, sigma in jumps]
    bars = sum(int(row[1]) for row in rows)
    per_instrument = {
        inst_id: {
            "bars_checked": int(n),
            "robust_sigma": round(float(sigma or 0.0), 6),
            "threshold_log_return": round(float(threshold), 6),
            "largest_log_return": round(float(largest), 6),
            "largest_at": as_utc(largest_ts).isoformat(),
            "jumps": len(found or []),
        }
        for inst_id, n, sigma, threshold, largest, largest_ts, found in rows
    }
    largest = max(rows, key=lambda row: abs(row[4]), default=None)
    if lines:
        more = f"; and {len(lines) - JUMPS_LISTED} more" if len(lines) > JUMPS_LISTED else ""
        description = (
            f"{len(lines)} bar(s) moved far outside their instrument's history ({rule}): "
            + "; ".join(lines[:JUMPS_LISTED])
            + more
        )
    elif largest is not None:
        description = (
            f"no 1-bar move far outside its instrument's history among {bars} recently stored "
            f"bars ({rule}); largest {float(np.expm1(largest[4])):+.2%} ({largest[0]} at "
            f"{as_utc(largest[5]).isoformat()}, threshold {largest[3]:.3f})"
        )
    else:
        description = f"no recently stored bar has a previous bar to compare with ({rule})"
    return Verdict(
        "price_jumps",
        not lines,
        "WARN",
        description,
        {
            "rule": rule,
            "bars_checked": bars,
            "jumps": len(lines),
            "largest_abs_log_return": round(abs(float(largest[4])), 6) if largest else 0.0,
            "listed": lines[:JUMPS_LISTED],
            "per_instrument": per_instrument,
        },
    )
