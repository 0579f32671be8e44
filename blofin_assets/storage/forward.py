"""forward_performance: the forward record's figures, one row per model, mode, variant and
window of every computation.

Append-only, keyed by ``computed_at``: each run adds its rows and keeps the earlier ones, so
the table is the history of live skill (how it moved, not only where it is), and a run that
stops half-way adds nothing (one transaction). Readers that want the current figures take
the newest ``computed_at``.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from blofin_assets.storage.connection import (
    insert_new_rows,
    query_frame,
    transaction,
)
from blofin_assets.storage.sql import quote_identifier, scalar, table_exists

FORWARD_TABLE = "forward_performance"
STRATEGY_PREFIXES = ("rule", "long", "flat")
STRATEGY_FIGURES = {
    "net_return": "DOUBLE",
    "gross_return": "DOUBLE",
    "fees": "DOUBLE",
    "hit_rate": "DOUBLE",
    "turnover": "DOUBLE",
    "trades": "BIGINT",
    "sharpe": "DOUBLE",
    "max_drawdown": "DOUBLE",
}
FORWARD_COLUMNS: dict[str, str] = {
    "computed_at": "TIMESTAMPTZ NOT NULL",
    "model_name": "VARCHAR NOT NULL",
    # 'live' (served versions), 'backtest', or 'shadow': versions NOT served (rejected),
    # scored on the bars they would have answered for; never what was served
    "mode": "VARCHAR NOT NULL",
    # 'served' (live), the backtest's 'train-block' / 'refit', 'rejected' (shadow)
    "variant": "VARCHAR NOT NULL",
    "window": "VARCHAR NOT NULL",  # '24h', '7d', 'all'
    "window_start": "TIMESTAMPTZ",  # exclusive; NULL for 'all'
    "window_end": "TIMESTAMPTZ",  # the newest outcome of the mode and variant
    "first_ts": "TIMESTAMPTZ",  # the oldest scored bar in the window
    "n": "BIGINT NOT NULL",
    "instruments": "INTEGER",
    "versions": "INTEGER",
    "horizon": "INTEGER",
    "hac_lag": "INTEGER",
    "primary_metric": "VARCHAR",
    "model_value": "DOUBLE",
    "baseline_value": "DOUBLE",
    "baseline_names": "VARCHAR",
    "skill": "DOUBLE",
    "mean_loss_difference": "DOUBLE",
    "dm_statistic": "DOUBLE",
    "p_value": "DOUBLE",
    "p_value_worse": "DOUBLE",
    "beats_baseline_beyond_noise": "BOOLEAN",
    "promotion_skill": "DOUBLE",
    # direction_predictor's probability against the coin flip and the base rate
    "probability_rows": "BIGINT",
    "log_loss": "DOUBLE",
    "brier": "DOUBLE",
    "coin_flip_log_loss": "DOUBLE",
    "coin_flip_brier": "DOUBLE",
    "base_rate_log_loss": "DOUBLE",
    "base_rate_brier": "DOUBLE",
    "base_rate_source": "VARCHAR",
    "calibration_error": "DOUBLE",
    "calibration": "VARCHAR",  # JSON: bins of lower, upper, rows, mean_probability, frequency
    # direction_predictor's trading rule beside always-long and always-flat
    "margin": "DOUBLE",
    "fee_bps": "DOUBLE",
    **{
        f"{prefix}_{name}": kind
        for prefix in STRATEGY_PREFIXES
        for name, kind in STRATEGY_FIGURES.items()
    },
}
KEY = ("computed_at", "model_name", "mode", "variant", "window")


def ensure_forward_table(con: duckdb.DuckDBPyConnection) -> None:
    columns = ", ".join(f"{quote_identifier(c)} {kind}" for c, kind in FORWARD_COLUMNS.items())
    key = ", ".join(quote_identifier(c) for c in KEY)
    con.execute(f"CREATE TABLE IF NOT EXISTS {FORWARD_TABLE} ({columns}, PRIMARY KEY ({key}))")


def append_forward_performance(con: duckdb.DuckDBPyConnection, frame: pd.DataFrame) -> int:
    """Add one computation's rows in one transaction; returns how many were new (a replayed
    ``computed_at`` adds nothing)."""
    ensure_forward_table(con)
    if frame.empty:
        return 0
    missing = [c for c in ("computed_at", "model_name", "mode", "variant", "window", "n")
               if c not in frame.columns]  # fmt: skip
    if missing:
        raise ValueError(f"{FORWARD_TABLE} rows lack columns {missing}")
    frame = frame.reindex(columns=list(FORWARD_COLUMNS))
    with transaction(con):
        return insert_new_rows(con, FORWARD_TABLE, frame, list(FORWARD_COLUMNS))


def read_forward_performance(
    con: duckdb.DuckDBPyConnection, *, latest: bool = True
) -> pd.DataFrame:
    """The newest computation's rows (or every row), ordered by model, mode, variant, window."""
    if not table_exists(con, FORWARD_TABLE):
        return pd.DataFrame(columns=list(FORWARD_COLUMNS))
    where = f"WHERE computed_at = (SELECT max(computed_at) FROM {FORWARD_TABLE})" if latest else ""
    return query_frame(
        con,
        f"SELECT * FROM {FORWARD_TABLE} {where} "
        'ORDER BY computed_at, model_name, mode, variant, "window"',
    )


def forward_size(con: duckdb.DuckDBPyConnection) -> tuple[int, str | None]:
    """Rows stored and the newest computed_at: together, the table's data version."""
    if not table_exists(con, FORWARD_TABLE):
        return 0, None
    total = int(scalar(con, f"SELECT count(*) FROM {FORWARD_TABLE}"))
    newest = scalar(con, f"SELECT max(computed_at) FROM {FORWARD_TABLE}")
    return total, None if newest is None else pd.Timestamp(newest).isoformat()
