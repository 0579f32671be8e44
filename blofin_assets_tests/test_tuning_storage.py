"""tuning_trials and model_params (storage/tuning.py), written by ml.adoption.record_tuning."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from blofin_assets.ml.adoption import AdoptionDecision, TuningOutcome, record_tuning, tuning_rows
from blofin_assets.ml.specs import SPECS_BY_NAME, params_id
from blofin_assets.ml.tuning import TrialRecord, TuningResult, jsonable
from blofin_assets.storage.connection import DuckDBFile, DuckDBWriteError
from blofin_assets.storage.sql import described_columns, table_exists
from blofin_assets.storage.tuning import (
    PARAMS_COLUMNS,
    TRIALS_COLUMNS,
    params_in_force,
    read_decisions,
    read_trials,
    write_tuning,
)

PRICE = SPECS_BY_NAME["price_predictor"]  # its hidden_layer_sizes is a tuple
DECIDED = pd.Timestamp("2026-11-20 12:00", tz="UTC")
TUNED = {**PRICE.params, "hidden_layer_sizes": (64, 32), "alpha": 3.0}


def trial(number: int, params: dict, scores: list[float], state: str = "complete") -> TrialRecord:
    mean = sum(scores) / len(scores) if scores else None
    return TrialRecord(
        trial=number,
        params=jsonable(params),
        metric="mae",
        fold_scores=scores,
        mean_score=mean,
        std_score=0.0 if scores else None,
        mean_loss=mean,
        seconds=1.5,
        state=state,  # type: ignore[arg-type]
        error="ValueError: refused" if state == "failed" else None,
    )


def outcome(adopted: bool, current: dict, candidate: dict) -> TuningOutcome:
    """A tuning run of price_predictor as tune and decide report one: three trials, one failed."""
    trials = [
        trial(0, current, [0.0021, 0.0023, 0.0022]),
        trial(1, candidate, [0.0019, 0.0020, 0.0020]),
        trial(2, {**current, "alpha": 1e-3}, [], "failed"),
    ]
    result = TuningResult(
        trials=trials,
        current=trials[0],
        best=trials[1],
        tuning_start=pd.Timestamp("2026-11-06", tz="UTC"),
        tuning_end=pd.Timestamp("2026-11-17", tz="UTC"),
        folds=3,
        rows=60_000,
        metric="mae",
        test_start=pd.Timestamp("2026-11-17 00:05", tz="UTC"),
    )
    decision = AdoptionDecision(
        adopted=adopted,
        reason="adopted: ..." if adopted else "not adopted: ...",
        current_value=0.0022,
        candidate_value=0.0020,
        p_value=0.01 if adopted else 0.3,
        rows=4_000,
        metric="mae",
        current_params=jsonable(current),
        candidate_params=jsonable(candidate),
    )
    after = candidate if adopted else current
    source = "default" if jsonable(after) == jsonable(PRICE.params) else "tuned"
    return TuningOutcome(result, decision, dict(after), source)  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path) -> DuckDBFile:
    return DuckDBFile(str(tmp_path / "tuning.duckdb"))


def in_force(db: DuckDBFile, spec=PRICE):
    with db.connect() as con:
        return params_in_force(con, spec)


def test_record_tuning_writes_every_trial_and_one_decision(db: DuckDBFile) -> None:
    record_tuning(
        db,
        run_id="run-1",
        model_name=PRICE.name,
        outcome=outcome(True, dict(PRICE.params), TUNED),
        decided_at=DECIDED,
    )
    with db.connect() as con:
        trials = read_trials(con, run_id="run-1", model_name=PRICE.name)
        decisions = read_decisions(con, PRICE.name)
        comments = {
            table: {name: comment for name, _, comment in described_columns(con, table)}
            for table in ("tuning_trials", "model_params")
        }
    assert list(trials["trial"]) == [0, 1, 2]
    assert list(trials["state"]) == ["complete", "complete", "failed"]
    assert list(trials["is_params_in_force"]) == [True, False, False]
    assert json.loads(trials["fold_scores"].iloc[0]) == [0.0021, 0.0023, 0.0022]
    assert json.loads(trials["params"].iloc[1])["hidden_layer_sizes"] == [64, 32]
    assert trials["params_id"].iloc[1] == params_id(TUNED)
    assert pd.isna(trials["mean_score"].iloc[2]) and "refused" in trials["error"].iloc[2]
    assert len(decisions) == 1
    row = decisions.iloc[0]
    assert bool(row["adopted"]) and row["source"] == "tuned"
    assert row["params_id"] == params_id(TUNED) == row["candidate_params_id"]
    assert row["evidence_rows"] == 4_000 and row["p_value"] == pytest.approx(0.01)
    assert set(comments["tuning_trials"]) == set(TRIALS_COLUMNS)
    assert set(comments["model_params"]) == set(PARAMS_COLUMNS)
    assert all(comments["tuning_trials"].values()) and all(comments["model_params"].values())


def test_params_in_force_round_trips_tuples_and_falls_back_to_the_spec(db: DuckDBFile) -> None:
    with db.connect() as con:
        assert not table_exists(con, "model_params")
    fresh = in_force(db)
    assert fresh.params == dict(PRICE.params) and fresh.source == "default"
    assert fresh.params_id == PRICE.params_id and fresh.decided_at is None

    record_tuning(
        db,
        run_id="run-1",
        model_name=PRICE.name,
        outcome=outcome(True, dict(PRICE.params), TUNED),
        decided_at=DECIDED,
    )
    tuned = in_force(db)
    assert tuned.params == TUNED and isinstance(tuned.params["hidden_layer_sizes"], tuple)
    assert tuned.source == "tuned" and tuned.run_id == "run-1" and tuned.decided_at == DECIDED
    assert tuned.params_id == params_id(TUNED)
    estimator = PRICE.with_params(tuned.params).build_estimator()
    assert estimator.get_params()["hidden_layer_sizes"] == (64, 32)
    assert in_force(db, SPECS_BY_NAME["risk_scorer"]).source == "default"  # other models: none

    # A later run that adopts nothing keeps the tuned set in force.
    later = outcome(False, TUNED, {**TUNED, "alpha": 30.0})
    record_tuning(db, run_id="run-2", model_name=PRICE.name, outcome=later, decided_at=DECIDED)
    assert in_force(db).params == TUNED and in_force(db).run_id == "run-2"

    # A run that adopts the spec's own set hands the model back to the spec's defaults.
    back = outcome(True, TUNED, dict(PRICE.params))
    record_tuning(db, run_id="run-3", model_name=PRICE.name, outcome=back, decided_at=DECIDED)
    assert in_force(db).params == dict(PRICE.params) and in_force(db).source == "default"


def test_a_failed_write_leaves_both_tables_untouched(db: DuckDBFile) -> None:
    first = outcome(True, dict(PRICE.params), TUNED)
    trials, decision = tuning_rows(first, run_id="run-1", model_name=PRICE.name, decided_at=DECIDED)
    # On a fresh file the failure takes the new tables with it.
    with pytest.raises(DuckDBWriteError):
        write_tuning(db, trials=trials, decision={**decision, "p_value": "not a number"})
    with db.connect() as con:
        assert not table_exists(con, "tuning_trials") and not table_exists(con, "model_params")

    write_tuning(db, trials=trials, decision=decision)
    second, row = tuning_rows(
        outcome(False, TUNED, dict(PRICE.params)),
        run_id="run-2",
        model_name=PRICE.name,
        decided_at=DECIDED,
    )
    # The trials insert succeeds, the decision's fails: neither may stay.
    with pytest.raises(DuckDBWriteError):
        write_tuning(db, trials=second, decision={**row, "evidence_rows": "many"})
    with db.connect() as con:
        assert len(read_trials(con)) == 3 and set(read_trials(con)["run_id"]) == {"run-1"}
        assert list(read_decisions(con)["run_id"]) == ["run-1"]
    assert in_force(db).params == TUNED


def test_write_tuning_refuses_rows_it_does_not_know(db: DuckDBFile) -> None:
    trials, decision = tuning_rows(
        outcome(True, dict(PRICE.params), TUNED),
        run_id="run-1",
        model_name=PRICE.name,
        decided_at=DECIDED,
    )
    with pytest.raises(ValueError, match=r"unknown columns \['colour'\]"):
        write_tuning(db, trials=[{**trials[0], "colour": "red"}], decision=decision)
    with pytest.raises(ValueError, match="written with the decision of"):
        write_tuning(db, trials=trials, decision={**decision, "run_id": "run-9"})
    with duckdb.connect(db.path) as con:
        assert not table_exists(con, "tuning_trials")
