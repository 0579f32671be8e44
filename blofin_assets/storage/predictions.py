"""model_predictions: what the served models say about each instrument's newest bar."""

from __future__ import annotations

import duckdb
import pandas as pd

from blofin_assets.storage.connection import insert_new_rows, transaction
from blofin_assets.storage.sql import scalar, table_columns

PREDICTIONS_DDL = """
CREATE TABLE IF NOT EXISTS model_predictions (
    inst_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    prediction DOUBLE NOT NULL,
    probability DOUBLE,
    class_probabilities VARCHAR,
    predicted_at TIMESTAMPTZ NOT NULL,
    horizon INTEGER,
    PRIMARY KEY (inst_id, ts, model_name, model_version)
)
"""
PREDICTION_COLUMNS = [
    "inst_id", "ts", "model_name", "model_version", "prediction", "probability",
    "class_probabilities", "predicted_at", "horizon",
]  # fmt: skip


def ensure_predictions_table(con: duckdb.DuckDBPyConnection) -> None:
    """Create it, or add the horizon column a file from before it lacks (rows kept; their
    horizon is unknown, so NULL)."""
    con.execute(PREDICTIONS_DDL)
    if "horizon" not in table_columns(con, "model_predictions"):
        con.execute("ALTER TABLE model_predictions ADD COLUMN horizon INTEGER")


def append_predictions(con: duckdb.DuckDBPyConnection, frame: pd.DataFrame) -> int:
    """Append-only and idempotent on (inst_id, ts, model_name, model_version)."""
    ensure_predictions_table(con)
    if frame.empty:
        return 0
    with transaction(con):
        return insert_new_rows(con, "model_predictions", frame, PREDICTION_COLUMNS)


def prediction_count(con: duckdb.DuckDBPyConnection) -> int:
    return int(scalar(con, "SELECT count(*) FROM model_predictions"))
