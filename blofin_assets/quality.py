"""Data-quality verdicts on the stored tables, as plain functions over a DuckDB connection."""

from __future__ import annotations

import duckdb
import pandas as pd

from blofin_assets.ml.features import FEATURE_COLUMNS
from blofin_assets.ml.gates import GateOutcome
from blofin_assets.ml.targets import NAIVE_COLUMNS, TARGET_COLUMNS
from blofin_assets.warehouse import quote_identifier, scalar, table_columns

GAP_ALERT_BARS = 5
FRESHNESS_BARS = 2


def candles_unique(con: duckdb.DuckDBPyConnection) -> GateOutcome:
    """Duplicate (inst_id, ts) rows.

    The product's candles table has that PRIMARY KEY, which DuckDB enforces on every insert, so
    there the catalog answers instead of a count over all history every hour (0.5 s at 5 M
    candles); a table without the key, created by other means, is counted row by row.
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
    return GateOutcome(
        "no_duplicate_bars",
        duplicates == 0,
        "ERROR",
        f"{duplicates} duplicate (inst_id, ts) rows among {rows} ({how})",
        {"rows": int(rows), "duplicates": duplicates, "primary_key": bool(keyed)},
    )


def candles_ohlc_valid(con: duckdb.DuckDBPyConnection) -> GateOutcome:
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
    return GateOutcome(
        "ohlc_consistent",
        bad == 0,
        "ERROR",
        "low <= open, close <= high; prices > 0; volume >= 0; all finite"
        if bad == 0
        else f"{bad} bad candle rows: {found}",
        found,
    )


def candles_gaps(con: duckdb.DuckDBPyConnection, bar: pd.Timedelta) -> GateOutcome:
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
    return GateOutcome(
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
    con: duckdb.DuckDBPyConnection, *, now: pd.Timestamp, bar: pd.Timedelta, live: bool
) -> GateOutcome:
    rows = con.execute("SELECT inst_id, max(ts) FROM candles GROUP BY inst_id").fetchall()
    lag_bars = {
        inst_id: float((now - (pd.Timestamp(ts).tz_convert("UTC") + bar)) / bar)
        for inst_id, ts in rows
    }
    if not live:
        return GateOutcome(
            "fresh",
            True,
            "WARN",
            "historical file source: freshness does not apply",
            {"lag_bars": lag_bars},
        )
    stale = {k: v for k, v in lag_bars.items() if v > FRESHNESS_BARS}
    return GateOutcome(
        "fresh",
        not stale and bool(lag_bars),
        "WARN",
        f"newest closed bar within {FRESHNESS_BARS} bars of now for every instrument"
        if not stale and lag_bars
        else f"stale instruments (bars behind): {stale or 'no candles'}",
        {"lag_bars": lag_bars, "threshold_bars": FRESHNESS_BARS},
    )


def finite_columns(con: duckdb.DuckDBPyConnection, table: str, columns: list[str]) -> GateOutcome:
    """Training rows must be finite: NaN/inf is an error here, never imputed downstream."""
    expressions = ", ".join(
        f"count(*) FILTER (WHERE {quote_identifier(c)} IS NULL "
        f"OR NOT isfinite({quote_identifier(c)}::DOUBLE))"
        for c in columns
    )
    counts = con.execute(
        f"SELECT count(*), {expressions} FROM {quote_identifier(table)}"
    ).fetchall()[0]
    rows, *bad_counts = counts
    bad = {column: int(n) for column, n in zip(columns, bad_counts, strict=True) if n}
    return GateOutcome(
        "finite_values",
        not bad,
        "ERROR",
        f"all {len(columns)} columns finite in {rows} rows" if not bad else f"NaN/inf: {bad}",
        {"rows": int(rows), "bad_by_column": bad},
    )


def labels_not_features(con: duckdb.DuckDBPyConnection) -> GateOutcome:
    stored = set(table_columns(con, "features"))
    leaked = sorted((stored | set(FEATURE_COLUMNS)) & set(TARGET_COLUMNS + NAIVE_COLUMNS))
    return GateOutcome(
        "labels_not_in_features",
        not leaked,
        "ERROR",
        "no label column among the features"
        if not leaked
        else f"label columns in features: {leaked}",
        {"leaked": leaked},
    )


def features_targets_aligned(con: duckdb.DuckDBPyConnection, horizon: int) -> GateOutcome:
    """Every label has its features; the only unlabelled feature rows are each instrument's
    last H bars (their future is not known yet) and the warm-up the labels need."""
    labels_without_features, unlabelled_inside, unlabelled_tail, feature_rows, target_rows = (
        con.execute(
            """
            WITH bounds AS (
                SELECT inst_id, min(ts) AS first_label, max(ts) AS last_label
                FROM targets GROUP BY inst_id
            )
            SELECT
                (SELECT count(*) FROM targets t ANTI JOIN features f USING (inst_id, ts)),
                (SELECT count(*) FROM features f JOIN bounds b USING (inst_id)
                   ANTI JOIN targets t USING (inst_id, ts)
                   WHERE f.ts BETWEEN b.first_label AND b.last_label),
                (SELECT coalesce(max(n), 0) FROM (
                    SELECT count(*) AS n FROM features f JOIN bounds b USING (inst_id)
                    WHERE f.ts > b.last_label GROUP BY inst_id)),
                (SELECT count(*) FROM features),
                (SELECT count(*) FROM targets)
            """
        ).fetchall()[0]
    )
    ok = labels_without_features == 0 and unlabelled_inside == 0 and unlabelled_tail <= horizon
    return GateOutcome(
        "rows_match_targets",
        ok,
        "ERROR",
        f"{target_rows} labelled rows all have features; {unlabelled_tail} unlabelled tail rows "
        f"(<= H={horizon})"
        if ok
        else f"misaligned: {labels_without_features} labels without features, "
        f"{unlabelled_inside} unlabelled rows inside the labelled span, "
        f"{unlabelled_tail} unlabelled tail rows (H={horizon})",
        {
            "feature_rows": int(feature_rows),
            "target_rows": int(target_rows),
            "labels_without_features": int(labels_without_features),
            "unlabelled_inside": int(unlabelled_inside),
            "unlabelled_tail_max": int(unlabelled_tail),
        },
    )
