"""prediction_outcomes: every served (or backtested) prediction, scored once its horizon closed.

``mode`` says whose prediction a row is: 'live', a served version on the bars it answered for;
'backtest', a walk-forward retrain; 'shadow', a version that was NOT served (rejected at its
gates) scored on the bars it would have answered for, kept apart so it is never mistaken for
what was served. A file from before 'shadow' existed is rebuilt once with the wider CHECK.

One row per (inst_id, ts, model_name, model_version, mode): the bar a version predicted, what
it predicted, what happened (``realized``, the label exactly as ``targets`` computes it) and
what the naive rule it was judged against said (``baseline``). Append-only and idempotent: an
hour replayed adds nothing twice, and a stored outcome is never rewritten.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from blofin_assets.storage.connection import insert_new_rows, query_frame, transaction
from blofin_assets.storage.sql import table_columns, table_exists

OUTCOMES_TABLE = "prediction_outcomes"
MODES = ("live", "backtest", "shadow")
MODE_CHECK = "CHECK (mode IN (" + ", ".join(f"'{mode}'" for mode in MODES) + "))"
OUTCOMES_SCHEMA = """
CREATE TABLE IF NOT EXISTS {table} (
    inst_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,            -- the bar predicted (its features are of bars <= ts)
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,     -- backtest versions: 'backtest-<retrain time>'
    mode VARCHAR NOT NULL,              -- 'live': a served version's prediction; 'backtest':
                                        -- a walk-forward retrain's; 'shadow': a version NOT
                                        -- served (rejected), scored on the bars it would have
                                        -- answered for; never what was served
    horizon INTEGER NOT NULL,
    prediction DOUBLE NOT NULL,         -- in target units (direction: the class 0/1)
    probability DOUBLE,                 -- direction: the predicted probability of up
    realized DOUBLE NOT NULL,           -- the label, as targets computes it
    baseline DOUBLE NOT NULL,           -- the strongest naive rule's forecast, target units
    baseline_name VARCHAR NOT NULL,
    close DOUBLE NOT NULL,              -- close at ts: prices are judged as log returns from it
    realized_return DOUBLE NOT NULL,    -- ln(close[t+H] / close[t]), for the trading rule
    data_until TIMESTAMPTZ NOT NULL,    -- the newest bar the version saw; always < ts
    scored_at TIMESTAMPTZ NOT NULL,
    outlier BOOLEAN,                    -- features outside the version's training rows; NULL:
                                        -- unknown (no reference, or stored before the flag)
    outlier_score DOUBLE,               -- distance to its training rows (ml/reference.py)
    PRIMARY KEY (inst_id, ts, model_name, model_version, mode),
    {mode_check},
    CHECK (ts > data_until)
)
"""
OUTCOMES_DDL = OUTCOMES_SCHEMA.format(table=OUTCOMES_TABLE, mode_check=MODE_CHECK)
OUTCOME_COLUMNS = [
    "inst_id", "ts", "model_name", "model_version", "mode", "horizon", "prediction",
    "probability", "realized", "baseline", "baseline_name", "close", "realized_return",
    "data_until", "scored_at", "outlier", "outlier_score",
]  # fmt: skip
# Columns a file from an older release lacks, in the order they were appended; the outcomes
# stored before keep NULL (unknown).
APPENDED_COLUMNS = {"outlier": "BOOLEAN", "outlier_score": "DOUBLE"}
UNKNOWN = {"BOOLEAN": "boolean", "DOUBLE": "Float64"}  # pandas dtypes that hold NULL


def ensure_outcomes_table(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Create it, or add the columns an older file lacks (rows kept, NULL), in one
    transaction; returns the columns added."""
    with transaction(con):
        con.execute(OUTCOMES_DDL)
        existing = set(table_columns(con, OUTCOMES_TABLE))
        added = [column for column in APPENDED_COLUMNS if column not in existing]
        for column in added:
            con.execute(
                f"ALTER TABLE {OUTCOMES_TABLE} ADD COLUMN {column} {APPENDED_COLUMNS[column]}"
            )
        if narrower_mode_check(con):
            widen_mode_check(con)
    return added


def narrower_mode_check(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the stored table's CHECK on mode predates a mode of MODES (e.g. 'shadow')."""
    checks = [
        row[0]
        for row in con.execute(
            "SELECT expression FROM duckdb_constraints() WHERE database_name = current_database()"
            " AND schema_name = 'main' AND table_name = ? AND constraint_type = 'CHECK'",
            [OUTCOMES_TABLE],
        ).fetchall()
    ]
    on_mode = [text for text in checks if text and "mode" in text]
    return any(f"'{mode}'" not in text for text in on_mode for mode in MODES)


def widen_mode_check(con: duckdb.DuckDBPyConnection) -> None:
    """Rebuild the table under the current DDL, every row kept (DuckDB cannot alter a CHECK);
    inside the caller's transaction, so a failure leaves the old table as it was."""
    staging = f"{OUTCOMES_TABLE}_rebuilt"
    columns = ", ".join(OUTCOME_COLUMNS)
    con.execute(OUTCOMES_SCHEMA.format(table=staging, mode_check=MODE_CHECK))
    con.execute(f"INSERT INTO {staging} ({columns}) SELECT {columns} FROM {OUTCOMES_TABLE}")
    con.execute(f"DROP TABLE {OUTCOMES_TABLE}")
    con.execute(f"ALTER TABLE {staging} RENAME TO {OUTCOMES_TABLE}")


def append_outcomes(con: duckdb.DuckDBPyConnection, frame: pd.DataFrame) -> int:
    """Insert the outcomes not stored yet, in one transaction; returns how many were new.

    The table's CHECK refuses an outcome for a bar at or before its version's ``data_until``
    (an in-sample "prediction"), so the out-of-sample rule holds whatever the caller did.
    Rows without the appended columns (outlier, outlier_score) say nothing about them: stored
    NULL, unknown.
    """
    ensure_outcomes_table(con)
    if frame.empty:
        return 0
    missing = [c for c in OUTCOME_COLUMNS if c not in frame.columns and c not in APPENDED_COLUMNS]
    if missing:
        raise ValueError(f"{OUTCOMES_TABLE} rows lack columns {missing}")
    unstated = {c: UNKNOWN[kind] for c, kind in APPENDED_COLUMNS.items() if c not in frame.columns}
    frame = frame.assign(
        **{c: pd.Series(pd.NA, index=frame.index, dtype=dtype) for c, dtype in unstated.items()}
    )
    unknown = sorted(set(frame["mode"]) - set(MODES))
    if unknown:
        raise ValueError(f"{OUTCOMES_TABLE}: mode must be one of {MODES}, got {unknown}")
    with transaction(con):
        return insert_new_rows(con, OUTCOMES_TABLE, frame, OUTCOME_COLUMNS)


def read_outcomes(
    con: duckdb.DuckDBPyConnection,
    *,
    model_name: str | None = None,
    mode: str | None = None,
    since: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Stored outcomes in time order (ts, inst_id), optionally of one model, mode or span."""
    if not table_exists(con, OUTCOMES_TABLE):
        return pd.DataFrame(columns=OUTCOME_COLUMNS)
    where, params = ["TRUE"], []
    for column, value in (("model_name", model_name), ("mode", mode)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        where.append("ts >= ?")
        params.append(since.to_pydatetime())
    return query_frame(
        con,
        f"SELECT * FROM {OUTCOMES_TABLE} WHERE {' AND '.join(where)} ORDER BY ts, inst_id",
        params,
    )


def outcomes_size(con: duckdb.DuckDBPyConnection) -> tuple[int, pd.Timestamp | None]:
    """(stored outcomes, newest ts scored): the table's data version."""
    if not table_exists(con, OUTCOMES_TABLE):
        return 0, None
    count, newest = con.execute(f"SELECT count(*), max(ts) FROM {OUTCOMES_TABLE}").fetchall()[0]
    return int(count), pd.Timestamp(newest).tz_convert("UTC") if newest is not None else None
