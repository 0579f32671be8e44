"""model_predictions: what the served models say about each instrument's newest bar."""

from __future__ import annotations

import duckdb
import pandas as pd

from blofin_assets.storage.connection import insert_new_rows, transaction
from blofin_assets.storage.sql import apply_column_comments, scalar, table_columns

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
    outlier BOOLEAN,
    outlier_score DOUBLE,
    expired BOOLEAN,
    model_age_hours DOUBLE,
    PRIMARY KEY (inst_id, ts, model_name, model_version)
)
"""
PREDICTION_COLUMNS = [
    "inst_id", "ts", "model_name", "model_version", "prediction", "probability",
    "class_probabilities", "predicted_at", "horizon", "prediction_label", "outlier",
    "outlier_score", "expired", "model_age_hours",
]  # fmt: skip
# Columns a file from an older release may lack, in the order they were appended. Their
# values are unknown for the rows stored before, which keep NULL.
APPENDED_COLUMNS = {
    "horizon": "INTEGER",
    "prediction_label": "VARCHAR",
    "outlier": "BOOLEAN",
    "outlier_score": "DOUBLE",
    "expired": "BOOLEAN",
    "model_age_hours": "DOUBLE",
}
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
    "predicted_at": "When it was scored (UTC): the run's now, BLOFIN_AS_OF when the clock is "
    "frozen.",
    "horizon": "H in bars: the prediction is about bars ts+1 .. ts+H. NULL for rows stored "
    "before it was recorded.",
    "prediction_label": "The predicted class's name: momentum decelerating / neutral / "
    "accelerating; direction up or down (the likelier side). NULL for regressors, and for rows "
    "stored before labels were (their prediction column holds the class).",
    "outlier": "TRUE when the bar's features lie outside the version's training rows: "
    "outlier_score above the threshold in the version's reference.npz (the 99.9 % quantile "
    "of the training rows' own scores). NULL when unknown: a version saved without a "
    "reference, or a row stored before the flag was.",
    "outlier_score": "Mean Euclidean distance from the scaled features to the 10 nearest of "
    "the version's reference training rows, over the median of that distance for its "
    "training rows (about 1 is typical). NULL when unknown, as outlier.",
    "expired": "TRUE when the version was older than BLOFIN_MODEL_MAX_AGE_HOURS at "
    "predicted_at (model_age_hours above it): the hourly retraining had not replaced it. NULL "
    "for rows stored before it was recorded.",
    "model_age_hours": "predicted_at minus the version's data_until (the newest bar it learnt "
    "from), in hours. NULL for rows stored before it was recorded.",
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
