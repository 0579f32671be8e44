"""Evidence before adoption: a tuned parameter set replaces the one in force only when it is
better on data tuning never saw, by a margin the test says is not noise.

The evidence is a walk-forward backtest over the test block of the same purged split whose
training block tuning searched: the block is cut into consecutive stretches, and for each both
sets are trained on every row before it (purged per instrument, scaler on those rows, the
spec's row cap) and predict it. Their pooled row losses are compared by the one-sided
Diebold-Mariano test with the HAC lag of the overlapping labels; the candidate is adopted only
if its loss is lower and p < alpha.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from blofin_assets.ml.metrics import row_losses
from blofin_assets.ml.significance import SIGNIFICANCE_LEVEL, diebold_mariano, overlap_lag
from blofin_assets.ml.specs import ModelSpec, params_id
from blofin_assets.ml.splits import purged_split
from blofin_assets.ml.training import DEFAULT_TEST_FRACTION, check_training_frame
from blofin_assets.ml.tuning import (
    TrialRecord,
    TuningBudget,
    TuningResult,
    fit_predict,
    fold_data,
    jsonable,
    metric_value,
    time_ordered,
    tune,
)
from blofin_assets.ml.walk_forward import folds_from
from blofin_assets.storage.connection import DuckDBFile
from blofin_assets.storage.tuning import Source, restore_tuples, write_tuning

DEFAULT_STEPS = 2


@dataclass(frozen=True)
class AdoptionDecision:
    adopted: bool
    reason: str  # a sentence with both values and p, or why no backtest was run
    current_value: float | None  # the primary metric on the backtest rows; None: no backtest
    candidate_value: float | None
    p_value: float | None
    rows: int  # backtest rows compared
    metric: str
    current_params: dict[str, Any]  # JSON-able (tuples as lists)
    candidate_params: dict[str, Any]
    evidence_start: pd.Timestamp | None = None  # the backtest's first and last scored bar
    evidence_end: pd.Timestamp | None = None


@dataclass(frozen=True)
class TuningOutcome:
    result: TuningResult
    decision: AdoptionDecision
    params_after: dict[str, Any]  # in force after the decision, tuples as the spec holds them
    source: Source  # 'default' when params_after is the spec's own set, else 'tuned'


@dataclass(frozen=True)
class Backtest:
    y: np.ndarray
    current: np.ndarray
    candidate: np.ndarray
    instruments: int
    start: pd.Timestamp
    end: pd.Timestamp


def backtest(
    spec: ModelSpec,
    frame: pd.DataFrame,
    *,
    horizon: int,
    sets: tuple[dict[str, Any], dict[str, Any]],
    start: pd.Timestamp,
    steps: int,
) -> Backtest:
    """Both sets' predictions of every stretch from ``start`` on, each trained on all rows
    before its stretch; pooled in (ts, inst_id) order."""
    y, predicted = [], ([], [])
    scored = []
    for number, fold in enumerate(
        folds_from(frame["ts"], frame["inst_id"], start=start, n_folds=steps, horizon=horizon)
    ):
        data = fold_data(spec, frame, fold, number + 1)
        y.append(data.y_valid)
        for params, out in zip(sets, predicted, strict=True):
            out.append(fit_predict(spec.with_params(params), data))
        scored.append(data.valid)
    rows = pd.concat(scored)
    return Backtest(
        y=np.concatenate(y),
        current=np.concatenate(predicted[0]),
        candidate=np.concatenate(predicted[1]),
        instruments=int(rows["inst_id"].nunique()),
        start=rows["ts"].min(),
        end=rows["ts"].max(),
    )


def decide(
    spec: ModelSpec,
    frame: pd.DataFrame,
    *,
    horizon: int,
    current_params: Mapping[str, Any],
    candidate_params: Mapping[str, Any],
    tuning_end: pd.Timestamp,
    steps: int = DEFAULT_STEPS,
    alpha: float = SIGNIFICANCE_LEVEL,
) -> AdoptionDecision:
    """Adopt the candidate only on a lower backtest loss with one-sided p < alpha."""
    current = jsonable({**spec.params, **current_params})
    candidate = jsonable({**spec.params, **candidate_params})
    if current == candidate:
        reason = (
            "not adopted: the candidate is the parameter set in force, so there is nothing to "
            "compare and no backtest was run"
        )
        return no_backtest(spec.primary_metric, reason, current, candidate)
    check_training_frame(frame, spec)
    frame = time_ordered(frame)
    split = purged_split(
        frame["ts"], frame["inst_id"], test_fraction=DEFAULT_TEST_FRACTION, horizon=horizon
    )
    if pd.Timestamp(tuning_end) >= split.test_start:
        raise ValueError(
            f"{spec.name}: the tuning window ends at {tuning_end}, not before the backtest's "
            f"first bar {split.test_start}: evidence must come from data tuning never saw"
        )
    sets = (restore_tuples(current, spec.params), restore_tuples(candidate, spec.params))
    evidence = backtest(
        spec, frame, horizon=horizon, sets=sets, start=split.test_start, steps=steps
    )
    return judged(spec, evidence, (current, candidate), horizon=horizon, alpha=alpha, steps=steps)


def judged(
    spec: ModelSpec,
    evidence: Backtest,
    sets: tuple[dict[str, Any], dict[str, Any]],
    *,
    horizon: int,
    alpha: float,
    steps: int,
) -> AdoptionDecision:
    """The row-by-row test of the candidate against the set in force, and its sentence."""
    metric = spec.primary_metric
    comparison = diebold_mariano(
        row_losses(metric, evidence.y, evidence.candidate),
        row_losses(metric, evidence.y, evidence.current),
        overlap_lag(horizon, evidence.instruments),
    )
    current_value = metric_value(spec, evidence.y, evidence.current)
    candidate_value = metric_value(spec, evidence.y, evidence.candidate)
    adopted = bool(comparison.mean_loss_difference > 0 and comparison.p_value < alpha)
    verdict = "adopted" if adopted else "not adopted"
    need = "" if adopted else f" (adoption needs a lower loss and p < {alpha:g})"
    reason = (
        f"{verdict}: candidate {metric} {candidate_value:.4g} against {current_value:.4g} for "
        f"the set in force on {len(evidence.y):,} backtest rows after the tuning window "
        f"({evidence.start:%Y-%m-%d %H:%M} to {evidence.end:%Y-%m-%d %H:%M} UTC, {steps} "
        f"walk-forward steps); one-sided Diebold-Mariano p = {comparison.p_value:.3g}{need}"
    )
    return AdoptionDecision(
        adopted=adopted,
        reason=reason,
        current_value=current_value,
        candidate_value=candidate_value,
        p_value=comparison.p_value,
        rows=len(evidence.y),
        metric=metric,
        current_params=sets[0],
        candidate_params=sets[1],
        evidence_start=evidence.start,
        evidence_end=evidence.end,
    )


def no_backtest(
    metric: str, reason: str, current: dict[str, Any], candidate: dict[str, Any]
) -> AdoptionDecision:
    return AdoptionDecision(
        adopted=False,
        reason=reason,
        current_value=None,
        candidate_value=None,
        p_value=None,
        rows=0,
        metric=metric,
        current_params=current,
        candidate_params=candidate,
    )


def run_tuning(
    spec: ModelSpec,
    frame: pd.DataFrame,
    *,
    horizon: int,
    params_in_force: Mapping[str, Any],
    budget: TuningBudget,
    on_trial: Callable[[TrialRecord], None] | None = None,
    steps: int = DEFAULT_STEPS,
) -> TuningOutcome:
    """Tune, then put the best trial to the backtest; what is in force afterwards.

    ``spec`` is the model's own spec (its params are the defaults); ``params_in_force`` the
    set that trains it now (storage.tuning.params_in_force)."""
    result = tune(
        spec,
        frame,
        horizon=horizon,
        params_in_force=params_in_force,
        budget=budget,
        on_trial=on_trial,
    )
    in_force = {**spec.params, **params_in_force}
    best = result.best
    if best.trial == 0 or best.state != "complete":
        decision = nothing_better(result, jsonable(in_force))
    else:
        decision = decide(
            spec,
            frame,
            horizon=horizon,
            current_params=in_force,
            candidate_params=best.params,
            tuning_end=result.tuning_end,
            steps=steps,
        )
    after = decision.candidate_params if decision.adopted else decision.current_params
    params_after = restore_tuples(after, spec.params)
    source: Source = "default" if jsonable(params_after) == jsonable(spec.params) else "tuned"
    return TuningOutcome(result, decision, params_after, source)


def nothing_better(result: TuningResult, current: dict[str, Any]) -> AdoptionDecision:
    """No candidate: the set in force scored best on the folds (or every other trial failed)."""
    scored = result.current.mean_score
    value = "" if scored is None else f" (mean {result.metric} {scored:.4g})"
    reason = (
        f"not adopted: no trial of {len(result.trials)} beat the set in force{value} on the "
        f"{result.folds} walk-forward folds of the tuning window, so no backtest was run"
    )
    return no_backtest(result.metric, reason, current, current)


def tuning_rows(
    outcome: TuningOutcome, *, run_id: str, model_name: str, decided_at: pd.Timestamp
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The tuning_trials rows and the model_params row of one outcome (storage/tuning.py)."""
    decided_at = pd.Timestamp(decided_at)
    decision = outcome.decision
    in_force_id = params_id(decision.current_params)
    trials = [
        {
            "run_id": run_id,
            "model_name": model_name,
            "trial": record.trial,
            "state": record.state,
            "params": json_text(record.params),
            "params_id": record.params_id,
            "metric": record.metric,
            "fold_scores": json_text(record.fold_scores),
            "mean_score": record.mean_score,
            "std_score": record.std_score,
            "seconds": record.seconds,
            "is_params_in_force": record.params_id == in_force_id,
            "error": record.error,
            "recorded_at": decided_at,
        }
        for record in outcome.result.trials
    ]
    after = jsonable(outcome.params_after)
    row = {
        "model_name": model_name,
        "decided_at": decided_at,
        "run_id": run_id,
        "params_id": params_id(after),
        "params": json_text(after),
        "source": outcome.source,
        "adopted": decision.adopted,
        "candidate_params_id": params_id(decision.candidate_params),
        "reason": decision.reason,
        "metric": decision.metric,
        "current_value": decision.current_value,
        "candidate_value": decision.candidate_value,
        "p_value": decision.p_value,
        "evidence_rows": decision.rows,
    }
    return trials, row


def json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def record_tuning(
    db: DuckDBFile,
    *,
    run_id: str,
    model_name: str,
    outcome: TuningOutcome,
    decided_at: pd.Timestamp,
) -> None:
    """Every trial and the decision of one model's tuning, in one transaction."""
    trials, decision = tuning_rows(
        outcome, run_id=run_id, model_name=model_name, decided_at=decided_at
    )
    write_tuning(db, trials=trials, decision=decision)
