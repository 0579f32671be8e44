"""model_predictions: what the served models say about each instrument's newest bar."""

from __future__ import annotations

import duckdb
import pandas as pd

from blofin_assets.storage.connection import insert_new_rows, transaction
from blofin_assets.storage.results import apply_column_comments
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
    prediction_label VARCHAR,
    PRIMARY KEY (inst_id, ts, model_name, model_version)
)
"""
PREDICTION_COLUMNS = [
    "inst_id", "ts", "model_name", "model_version", "prediction", "probability",
    "class_probabilities", "predicted_at", "horizon", "prediction_label",
]  # fmt: skip
# Columns a file from an older release may lack, in the order they were appended. Their
# values are unknown for the rows stored before, which keep NULL.
APPENDED_COLUMNS = {"horizon": "INTEGER", "prediction_label": "VARCHAR"}
PREDICTION_DESCRIPTIONS: dict[str, str] = {
    "inst_id": "Instrument, e.g. BTC-USDT.",
    "ts": "Open time (UTC) of the bar scored: the instrument's newest closed bar then.",
    "model_name": "The model that answered (its Dagster asset).",
    "model_version": "The served version that answered; its files stay in "
    "models/model_<name>/history/<version>/, its metrics in ml_model_results.",
    "prediction": "In the target's unit: direction = probability of up (0-1); momentum = the "
    "class 0/1/2 (named in prediction_label); risk = score 0-100; volatility = realised "
    "volatility of the next H bars; price = the close predicted H bars ahead.",
    "probability": "Probability of the predicted class (momentum), of up (direction, so below "
    "0.5 the predicted side is down). NULL for regressors.",
    "class_probabilities": "JSON: class -> probability (class as in ml_model_results."
    "class_names, 0-based). NULL for regressors.",
    "predicted_at": "When it was scored (UTC).",
    "horizon": "H in bars: the prediction is about bars ts+1 .. ts+H. NULL for rows stored "
    "before it was recorded.",
    "prediction_label": "The predicted class's name: momentum decelerating / neutral / "
    "accelerating; direction up or down (the likelier side). NULL for regressors, and for rows "
    "stored before labels were (their prediction column holds the class).",
}


def ensure_predictions_table(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Create it, or add the columns a file from before them lacks (rows kept; their values
    are unknown, so NULL); every column's comment set. One transaction. Returns the columns
    added."""
    with transaction(con):
        con.execute(PREDICTIONS_DDL)
        existing = set(table_columns(con, "model_predictions"))
        added = [column for column in APPENDED_COLUMNS if column not in existing]
        for column in added:
            con.execute(
                f"ALTER TABLE model_predictions ADD COLUMN {column} {APPENDED_COLUMNS[column]}"
            )
        apply_column_comments(con, "model_predictions", PREDICTION_DESCRIPTIONS)
    return added


def append_predictions(con: duckdb.DuckDBPyConnection, frame: pd.DataFrame) -> int:
    """Append-only and idempotent on (inst_id, ts, model_name, model_version)."""
    ensure_predictions_table(con)
    if frame.empty:
        return 0
    missing = [column for column in PREDICTION_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"model_predictions rows lack columns {missing}")
    with transaction(con):
        return insert_new_rows(con, "model_predictions", frame, PREDICTION_COLUMNS)


def prediction_count(con: duckdb.DuckDBPyConnection) -> int:
    return int(scalar(con, "SELECT count(*) FROM model_predictions"))
