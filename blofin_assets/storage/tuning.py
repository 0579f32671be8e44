"""tuning_trials (every trial of every tuning run) and model_params (the adoption decisions).

model_params is append-only: one row per model and tuning run, whose ``params`` column is the
set in force after that decision, adopted or not, so its newest row answers "which parameters
train this model now". The rows are plain values: this floor sits below ml (ARCHITECTURE.md),
so ml.adoption turns a tuning outcome into them. Both tables are written in one transaction:
a decision never stands without the trials behind it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import duckdb
import pandas as pd

from blofin_assets.storage.connection import DuckDBFile, query_frame, registered, transaction
from blofin_assets.storage.sql import apply_column_comments, quote_identifier, scalar, table_exists

TRIALS_TABLE = "tuning_trials"
PARAMS_TABLE = "model_params"
Source = Literal["default", "tuned"]

TRIALS_COLUMNS: dict[str, str] = {
    "run_id": "VARCHAR NOT NULL",
    "model_name": "VARCHAR NOT NULL",
    "trial": "INTEGER NOT NULL",
    "state": "VARCHAR NOT NULL",
    "params": "VARCHAR NOT NULL",
    "params_id": "VARCHAR NOT NULL",
    "metric": "VARCHAR NOT NULL",
    "fold_scores": "VARCHAR NOT NULL",
    "mean_score": "DOUBLE",
    "std_score": "DOUBLE",
    "seconds": "DOUBLE",
    "is_params_in_force": "BOOLEAN NOT NULL",
    "error": "VARCHAR",
    "recorded_at": "TIMESTAMPTZ NOT NULL",
}
TRIALS_DESCRIPTIONS: dict[str, str] = {
    "run_id": "The Dagster run that tuned.",
    "model_name": "The model (its Dagster asset), e.g. risk_scorer.",
    "trial": "Optuna's trial number in that run; 0 is the parameter set in force.",
    "state": "complete, pruned (stopped after a fold: worse than the median trial there) or "
    "failed (the estimator raised; see error).",
    "params": "JSON: the whole parameter set the trial trained with (searched and fixed).",
    "params_id": "Names the parameter set (ml.specs.params_id); ml_model_results and "
    "model_params use the same name.",
    "metric": "The model's primary metric, in its own orientation (accuracy: higher is better; "
    "mae: lower).",
    "fold_scores": "JSON list: the metric on each walk-forward fold's validation block, in time "
    "order (fewer than the folds when pruned or failed).",
    "mean_score": "Mean of fold_scores. NULL when no fold was scored.",
    "std_score": "Spread (population standard deviation) of fold_scores. NULL when none.",
    "seconds": "Wall-clock seconds the trial took, every fold's fit and prediction.",
    "is_params_in_force": "The trial trained with the set in force when tuning began.",
    "error": "The exception of a failed trial; NULL otherwise.",
    "recorded_at": "When the run's tuning was recorded (UTC).",
}
PARAMS_COLUMNS: dict[str, str] = {
    "id": "BIGINT NOT NULL",
    "model_name": "VARCHAR NOT NULL",
    "decided_at": "TIMESTAMPTZ NOT NULL",
    "run_id": "VARCHAR NOT NULL",
    "params_id": "VARCHAR NOT NULL",
    "params": "VARCHAR NOT NULL",
    "source": "VARCHAR NOT NULL",
    "adopted": "BOOLEAN NOT NULL",
    "candidate_params_id": "VARCHAR NOT NULL",
    "reason": "VARCHAR NOT NULL",
    "metric": "VARCHAR NOT NULL",
    "current_value": "DOUBLE",
    "candidate_value": "DOUBLE",
    "p_value": "DOUBLE",
    "evidence_rows": "BIGINT NOT NULL",
}
PARAMS_DESCRIPTIONS: dict[str, str] = {
    "id": "Row number, ascending in recording order: the newest row of a model is in force.",
    "model_name": "The model (its Dagster asset), e.g. risk_scorer.",
    "decided_at": "When the decision was made (UTC).",
    "run_id": "The Dagster run that tuned and decided.",
    "params_id": "Names the set in force after this decision (see params).",
    "params": "JSON: the parameter set in force after this decision (the candidate if adopted, "
    "else the set that was in force).",
    "source": "default (the spec's own parameters, ml/specs.py) or tuned (an adopted candidate).",
    "adopted": "The candidate replaced the set in force: its backtest loss was lower with a "
    "one-sided Diebold-Mariano p below the significance level.",
    "candidate_params_id": "The best trial's parameter set (tuning_trials.params_id); equal to "
    "params_id when tuning found nothing better.",
    "reason": "The decision in a sentence: both backtest values and p, or why none was run.",
    "metric": "The primary metric current_value and candidate_value are in.",
    "current_value": "The set in force before, on the backtest rows after the tuning window. "
    "NULL when no backtest was run.",
    "candidate_value": "The candidate, on the same rows. NULL when no backtest was run.",
    "p_value": "One-sided Diebold-Mariano p (HAC over the overlapping labels) that the "
    "candidate's loss is lower row by row. NULL when no backtest was run.",
    "evidence_rows": "Backtest rows the two sets were compared on (0 when none was run).",
}


class ParamsOwner(Protocol):
    """What params_in_force reads of a model spec (ml.specs.ModelSpec has all three)."""

    @property
    def name(self) -> str: ...

    @property
    def params(self) -> Mapping[str, Any]: ...

    @property
    def params_id(self) -> str: ...


@dataclass(frozen=True)
class ParamsInForce:
    params: dict[str, Any]
    params_id: str
    source: Source
    decided_at: pd.Timestamp | None  # None: no decision recorded, the spec's own set
    run_id: str | None


def restore_tuples(params: Mapping[str, Any], like: Mapping[str, Any]) -> dict[str, Any]:
    """JSON has no tuples: a list comes back as a tuple where ``like`` holds a tuple, so the
    estimator gets the very parameters the spec would give it (MLP hidden_layer_sizes)."""
    return {
        name: tuple(value)
        if isinstance(like.get(name), tuple) and isinstance(value, list)
        else value
        for name, value in params.items()
    }


def create_tuning_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Both tables if missing, their column comments set (inside the caller's transaction)."""
    for table, columns, key in (
        (TRIALS_TABLE, TRIALS_COLUMNS, "run_id, model_name, trial"),
        (PARAMS_TABLE, PARAMS_COLUMNS, "run_id, model_name"),
    ):
        if not table_exists(con, table):
            body = ", ".join(f"{quote_identifier(c)} {t}" for c, t in columns.items())
            con.execute(f"CREATE TABLE {table} ({body}, PRIMARY KEY ({key}))")
    apply_column_comments(con, TRIALS_TABLE, TRIALS_DESCRIPTIONS)
    apply_column_comments(con, PARAMS_TABLE, PARAMS_DESCRIPTIONS)


def check_columns(table: str, rows: Sequence[Mapping[str, Any]], expected: Sequence[str]) -> None:
    for number, row in enumerate(rows):
        missing = sorted(set(expected) - set(row))
        unknown = sorted(set(row) - set(expected))
        if missing or unknown:
            raise ValueError(
                f"{table} row {number}: missing columns {missing}, unknown columns {unknown}"
            )


def write_tuning(
    db: DuckDBFile, *, trials: Sequence[Mapping[str, Any]], decision: Mapping[str, Any]
) -> None:
    """One run's trials of one model and its decision, in one transaction. A repeated write
    of the same run and model (a retried step) replaces that run's own rows only."""
    trial_columns = list(TRIALS_COLUMNS)
    decision_columns = [c for c in PARAMS_COLUMNS if c != "id"]
    check_columns(TRIALS_TABLE, trials, trial_columns)
    check_columns(PARAMS_TABLE, [decision], decision_columns)
    keys = {(row["run_id"], row["model_name"]) for row in trials}
    if keys - {(decision["run_id"], decision["model_name"])}:
        raise ValueError(
            f"trials of {sorted(keys)} written with the decision of "
            f"{(decision['run_id'], decision['model_name'])}"
        )
    key = [decision["run_id"], decision["model_name"]]
    with db.connect() as con, transaction(con):
        create_tuning_tables(con)
        for table in (TRIALS_TABLE, PARAMS_TABLE):
            con.execute(f"DELETE FROM {table} WHERE run_id = ? AND model_name = ?", key)
        if trials:
            insert(con, TRIALS_TABLE, pd.DataFrame(list(trials), columns=trial_columns))
        next_id = int(scalar(con, f"SELECT coalesce(max(id), 0) + 1 FROM {PARAMS_TABLE}"))
        row = pd.DataFrame([{"id": next_id, **decision}], columns=list(PARAMS_COLUMNS))
        insert(con, PARAMS_TABLE, row)


def insert(con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame) -> None:
    quoted = ", ".join(quote_identifier(c) for c in frame.columns)
    with registered(con, "incoming_tuning_rows", frame):
        con.execute(f"INSERT INTO {table} ({quoted}) SELECT {quoted} FROM incoming_tuning_rows")


def params_in_force(con: duckdb.DuckDBPyConnection, spec: ParamsOwner) -> ParamsInForce:
    """The set that trains ``spec``'s model now: the newest decision's, when it is a tuned set;
    the spec's own otherwise (so an edit of the spec's defaults takes effect)."""
    default = ParamsInForce(dict(spec.params), spec.params_id, "default", None, None)
    if not table_exists(con, PARAMS_TABLE):
        return default
    rows = con.execute(
        f"SELECT params, params_id, source, decided_at, run_id FROM {PARAMS_TABLE} "
        "WHERE model_name = ? ORDER BY id DESC LIMIT 1",
        [spec.name],
    ).fetchall()
    if not rows:
        return default
    params, stored_id, source, decided_at, run_id = rows[0]
    decided = pd.Timestamp(decided_at).tz_convert("UTC")
    if source != "tuned":
        return ParamsInForce(dict(spec.params), spec.params_id, "default", decided, run_id)
    restored = restore_tuples(json.loads(params), spec.params)
    return ParamsInForce(restored, stored_id, "tuned", decided, run_id)


def read_trials(
    con: duckdb.DuckDBPyConnection, *, run_id: str | None = None, model_name: str | None = None
) -> pd.DataFrame:
    """Stored trials, optionally of one run and/or model, by run, model and trial number."""
    if not table_exists(con, TRIALS_TABLE):
        return pd.DataFrame(columns=list(TRIALS_COLUMNS))
    return query_frame(
        con,
        f"SELECT * FROM {TRIALS_TABLE} WHERE (? IS NULL OR run_id = ?) "
        "AND (? IS NULL OR model_name = ?) ORDER BY recorded_at, run_id, model_name, trial",
        [run_id, run_id, model_name, model_name],
    )


def read_decisions(con: duckdb.DuckDBPyConnection, model_name: str | None = None) -> pd.DataFrame:
    """The recorded decisions, oldest first, optionally of one model."""
    if not table_exists(con, PARAMS_TABLE):
        return pd.DataFrame(columns=list(PARAMS_COLUMNS))
    return query_frame(
        con,
        f"SELECT * FROM {PARAMS_TABLE} WHERE (? IS NULL OR model_name = ?) ORDER BY id",
        [model_name, model_name],
    )
