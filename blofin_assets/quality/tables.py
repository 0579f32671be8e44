"""Verdicts on the features and targets tables: finite values, no label among the features,
rows aligned with the labels, a training window the stored history covers."""

from __future__ import annotations

import duckdb
import pandas as pd

from blofin_assets.market.clock import as_utc
from blofin_assets.ml.features import FEATURE_COLUMNS
from blofin_assets.ml.targets import NAIVE_COLUMNS, TARGET_COLUMNS
from blofin_assets.ml.verdict import Verdict
from blofin_assets.storage.sql import quote_identifier, table_columns


def finite_columns(con: duckdb.DuckDBPyConnection, table: str, columns: list[str]) -> Verdict:
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
    return Verdict(
        "finite_values",
        not bad,
        "ERROR",
        f"all {len(columns)} columns finite in {rows} rows" if not bad else f"NaN/inf: {bad}",
        {"rows": int(rows), "bad_by_column": bad},
    )


def labels_not_features(con: duckdb.DuckDBPyConnection) -> Verdict:
    stored = set(table_columns(con, "features"))
    leaked = sorted((stored | set(FEATURE_COLUMNS)) & set(TARGET_COLUMNS + NAIVE_COLUMNS))
    return Verdict(
        "labels_not_in_features",
        not leaked,
        "ERROR",
        "no label column among the features"
        if not leaked
        else f"label columns in features: {leaked}",
        {"leaked": leaked},
    )


def features_targets_aligned(con: duckdb.DuckDBPyConnection, horizon: int) -> Verdict:
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
    return Verdict(
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


def training_window_covered(
    con: duckdb.DuckDBPyConnection,
    table: str,
    *,
    training_days: int,
    bar: pd.Timedelta,
    warmup_bars: int,
) -> Verdict:
    """Whether the rows span the window asked for (BLOFIN_TRAINING_DAYS), per instrument.

    A window longer than the stored history trains on what exists; this says how much that is.
    The rows start one warm-up after the first stored candle, so history exactly as long as the
    window (the default: lookback = training days) covers it less that warm-up, and passes.
    """
    day = pd.Timedelta(days=1)
    spans = con.execute(
        f"SELECT inst_id, min(ts), max(ts) FROM {quote_identifier(table)} "
        "GROUP BY inst_id ORDER BY inst_id"
    ).fetchall()
    covered = {
        inst: round((as_utc(last) - as_utc(first) + bar) / day, 3) for inst, first, last in spans
    }
    shortest = min(covered, key=covered.__getitem__, default=None)
    days = covered[shortest] if shortest is not None else 0.0
    warmup_days = warmup_bars * bar / day
    passed = shortest is not None and round(days + warmup_days, 1) >= training_days
    told = f"trained on {days:.1f} of the {training_days} days asked"
    if passed and round(days, 1) < training_days:
        told += (
            f": the history covers the window, its first {warmup_days:.1f} days being the "
            f"{warmup_bars}-bar warm-up"
        )
    elif not passed:
        told += (
            f" ({shortest or 'no rows'}): less history is stored than the window and its "
            f"{warmup_days:.1f}-day warm-up; the window fills as runs add bars "
            "(BLOFIN_LOOKBACK_DAYS applies to an instrument's first backfill only)"
        )
    return Verdict(
        "training_window_covered",
        passed,
        "WARN",
        told,
        {
            "window_days_asked": training_days,
            "window_days_covered": days,
            "warmup_days": round(warmup_days, 3),
            "covered_days_per_instrument": covered,
        },
    )
