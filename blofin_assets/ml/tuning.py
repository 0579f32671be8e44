"""Hyperparameter search by purged walk-forward cross-validation on the training window only.

The tuning window is the training block of the usual purged split (``purged_split`` with
DEFAULT_TEST_FRACTION on the whole frame), so tuning never sees the test block the models are
judged on, which adoption (adoption.py) then uses as evidence. Inside it, expanding-window folds
purged per instrument (walk_forward.py) score each trial exactly as training would: scaler fit
on the fold's training rows, the spec's row cap, regressors wrapped with their target
transforms. Optuna's TPE sampler is seeded (SEED) and trial 0 is the set in force, so it is
always scored on the same folds as the candidates; a trial that cannot fit is recorded as
failed with its error, never dropped.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState
from sklearn.base import clone
from sklearn.preprocessing import StandardScaler

from blofin_assets.ml.metrics import LOWER_IS_BETTER, classification_metrics, regression_metrics
from blofin_assets.ml.row_plan import cap_rows, evenly_spaced
from blofin_assets.ml.search_spaces import (
    from_search_values,
    search_space,
    to_search_values,
    widened_space,
)
from blofin_assets.ml.specs import SEED, ModelSpec, params_id
from blofin_assets.ml.splits import PurgedSplit, purged_split
from blofin_assets.ml.target_space import model_target
from blofin_assets.ml.training import (
    DEFAULT_TEST_FRACTION,
    TrainingDataError,
    check_training_frame,
    wrap_estimator,
)
from blofin_assets.ml.walk_forward import walk_forward_folds

State = Literal["complete", "pruned", "failed"]
# A trial is compared with the median of earlier ones after each fold from the first on, once
# this many trials have completed (Optuna's default).
PRUNER_STARTUP_TRIALS = 5


@dataclass(frozen=True)
class TuningBudget:
    n_trials: int
    timeout_seconds: float | None  # no new trial starts after this; trial 0 always runs
    n_folds: int = 3
    # Rows of the tuning window kept: all rows of evenly spaced timestamps over the whole
    # window (every instrument at each), so the sample is deterministic and spans every regime.
    max_rows: int | None = 60_000

    def __post_init__(self) -> None:
        if self.n_trials < 1:
            raise ValueError(f"n_trials must be >= 1, got {self.n_trials}")
        if self.timeout_seconds is not None and not self.timeout_seconds > 0:
            raise ValueError(f"timeout_seconds must be > 0 or None, got {self.timeout_seconds}")
        if self.n_folds < 1:
            raise ValueError(f"n_folds must be >= 1, got {self.n_folds}")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"max_rows must be >= 1 or None, got {self.max_rows}")


@dataclass(frozen=True)
class TrialRecord:
    trial: int  # Optuna's trial number; 0 is the parameter set in force
    params: dict[str, Any]  # the whole parameter set, JSON-able (tuples as lists)
    metric: str  # the spec's primary metric, in its own orientation
    fold_scores: list[float]  # the metric on each fold scored (fewer when pruned or failed)
    mean_score: float | None  # None when no fold was scored
    std_score: float | None
    mean_loss: float | None  # what the search minimised: the metric, or 1 - it for accuracy
    seconds: float
    state: State
    error: str | None = None  # a failed trial's exception

    @property
    def params_id(self) -> str:
        return params_id(self.params)


@dataclass(frozen=True)
class TuningResult:
    trials: list[TrialRecord]
    current: TrialRecord  # trial 0: the set in force, on the same folds
    best: TrialRecord  # the lowest mean loss among complete trials (ties: the earlier trial)
    tuning_start: pd.Timestamp  # first and last timestamp of the tuning window
    tuning_end: pd.Timestamp
    folds: int
    rows: int  # rows of the tuning window the folds drew on (after max_rows)
    metric: str
    test_start: pd.Timestamp  # the purged split's test block, which tuning never read
    # Each fold's training and validation rows as positions into the time-ordered frame.
    fold_splits: tuple[PurgedSplit, ...] = field(default=(), repr=False)
    seconds: float = 0.0


@dataclass(frozen=True)
class FoldData:
    """One fold's design matrices, built once and shared by every trial."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    valid: pd.DataFrame  # the scored rows (inst_id, ts, ...), for pooled tests


def time_ordered(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows by (ts, inst_id), as read_training_frame returns them and split_blocks expects."""
    if frame["ts"].is_monotonic_increasing:
        return frame.reset_index(drop=True)
    return frame.sort_values(["ts", "inst_id"], kind="stable").reset_index(drop=True)


def jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    """A parameter set as JSON values: tuples become lists, numpy scalars Python numbers."""

    def plain(value: Any) -> Any:
        if isinstance(value, np.generic):
            return value.item()
        raise TypeError(f"parameter value {value!r} cannot be stored as JSON")

    return json.loads(json.dumps(dict(params), default=plain))


def metric_value(spec: ModelSpec, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The spec's primary metric, computed as its evaluation computes it."""
    if spec.task == "classification":
        metrics = classification_metrics(y_true, y_pred)
    else:
        metrics = regression_metrics(y_true, y_pred)
    if spec.primary_metric not in metrics:
        raise ValueError(f"{spec.name}: primary metric {spec.primary_metric!r} is not computed")
    return metrics[spec.primary_metric]


def as_loss(metric: str, value: float) -> float:
    """One orientation for the search: lower is better."""
    return value if metric in LOWER_IS_BETTER else 1.0 - value


def fold_data(spec: ModelSpec, frame: pd.DataFrame, fold: PurgedSplit, number: int) -> FoldData:
    """Training rows capped as the spec caps them, the scaler fit on them alone."""
    train = cap_rows(frame.iloc[fold.train_index], spec)
    valid = frame.iloc[fold.test_index]
    if spec.max_test_rows is not None and len(valid) > spec.max_test_rows:
        valid = evenly_spaced(valid, spec.max_test_rows)
    features = list(spec.features)
    scaler = StandardScaler().fit(train[features].to_numpy(dtype="float64"))
    y_train, y_valid = model_target(spec, train), model_target(spec, valid)
    if spec.task == "classification":
        y_train, y_valid = y_train.astype("int64"), y_valid.astype("int64")
        if len(np.unique(y_train)) < 2:
            raise TrainingDataError(
                f"{spec.name}: fold {number} ({len(train)} training rows before "
                f"{fold.test_start}) holds a single class"
            )
    return FoldData(
        x_train=scaler.transform(train[features].to_numpy(dtype="float64")),
        y_train=y_train,
        x_valid=scaler.transform(valid[features].to_numpy(dtype="float64")),
        y_valid=y_valid,
        valid=valid,
    )


def fit_predict(spec: ModelSpec, data: FoldData) -> np.ndarray:
    """Fit the spec's estimator (target transforms inside) and predict the scored rows."""
    estimator = clone(wrap_estimator(spec))
    estimator.fit(data.x_train, data.y_train)
    return estimator.predict(data.x_valid)


def kept_rows(ts: pd.Series, max_rows: int | None) -> np.ndarray:
    """Mask of the rows at evenly spaced timestamps of the whole window, about max_rows."""
    if max_rows is None or len(ts) <= max_rows:
        return np.ones(len(ts), dtype=bool)
    # int64 nanoseconds: tz-aware values would become Python objects (slow on many rows).
    values = pd.DatetimeIndex(ts).as_unit("ns").asi8
    unique = np.unique(values)
    keep = max(1, math.floor(len(unique) * max_rows / len(ts)))
    chosen = unique[np.unique(np.linspace(0, len(unique) - 1, keep).round().astype(int))]
    return np.isin(values, chosen)


def tuning_folds(
    frame: pd.DataFrame, *, horizon: int, budget: TuningBudget
) -> tuple[list[PurgedSplit], PurgedSplit]:
    """The walk-forward folds inside the outer split's training block, as positions into
    ``frame``, and that outer split. Folds are purged on every window row, then thinned to
    the kept rows: thinning first would stretch each instrument's H-th next row."""
    outer = purged_split(
        frame["ts"], frame["inst_id"], test_fraction=DEFAULT_TEST_FRACTION, horizon=horizon
    )
    window = frame.iloc[outer.train_index]
    inner = walk_forward_folds(
        window["ts"], window["inst_id"], n_folds=budget.n_folds, horizon=horizon
    )
    kept = kept_rows(window["ts"], budget.max_rows)
    folds = []
    for fold in inner:
        train = outer.train_index[fold.train_index[kept[fold.train_index]]]
        valid = outer.train_index[fold.test_index[kept[fold.test_index]]]
        folds.append(replace(fold, train_index=train, test_index=valid))
    return folds, outer


def score_trial(
    spec: ModelSpec, params: dict[str, Any], data: list[FoldData], trial: optuna.Trial
) -> TrialRecord:
    """Score one parameter set fold by fold; pruned after a fold if Optuna says so."""
    metric = spec.primary_metric
    started = time.perf_counter()
    scores: list[float] = []
    state: State = "complete"
    error = None
    try:
        for step, fold in enumerate(data):
            predicted = fit_predict(spec.with_params(params), fold)
            scores.append(metric_value(spec, fold.y_valid, predicted))
            trial.report(float(np.mean([as_loss(metric, s) for s in scores])), step)
            if step < len(data) - 1 and trial.should_prune():
                state = "pruned"
                break
    except Exception as failure:  # a set that cannot fit is a result, not a crash
        state, error = "failed", f"{type(failure).__name__}: {failure}"
    mean = float(np.mean(scores)) if scores else None
    return TrialRecord(
        trial=trial.number,
        params=jsonable(params),
        metric=metric,
        fold_scores=scores,
        mean_score=mean,
        std_score=float(np.std(scores)) if scores else None,
        mean_loss=None if mean is None else float(np.mean([as_loss(metric, s) for s in scores])),
        seconds=time.perf_counter() - started,
        state=state,
        error=error,
    )


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna logs every trial at INFO; progress goes through on_trial instead. An in-force
    value outside the searched range (trial 0) is expected, so its warning is silenced."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Fixed parameter .* is out of range")
            yield
    finally:
        optuna.logging.set_verbosity(before)


OPTUNA_STATES = {
    "complete": TrialState.COMPLETE,
    "pruned": TrialState.PRUNED,
    "failed": TrialState.FAIL,
}


def tune(
    spec: ModelSpec,
    frame: pd.DataFrame,
    *,
    horizon: int,
    params_in_force: Mapping[str, Any],
    budget: TuningBudget,
    on_trial: Callable[[TrialRecord], None] | None = None,
) -> TuningResult:
    """Search the spec's space on the training window; trial 0 is ``params_in_force``."""
    started = time.perf_counter()
    check_training_frame(frame, spec)
    frame = time_ordered(frame)
    folds, outer = tuning_folds(frame, horizon=horizon, budget=budget)
    data = [fold_data(spec, frame, fold, k + 1) for k, fold in enumerate(folds)]
    in_force = {**spec.params, **params_in_force}
    start_values = to_search_values(spec, in_force)
    space = widened_space(search_space(spec), start_values)
    trials: list[TrialRecord] = []
    with quiet_optuna():
        study = optuna.create_study(
            direction="minimize",
            sampler=optuna.samplers.TPESampler(seed=SEED),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS),
        )
        study.enqueue_trial(start_values)
        deadline = None if budget.timeout_seconds is None else started + budget.timeout_seconds
        while len(trials) < budget.n_trials and (
            not trials or deadline is None or time.perf_counter() < deadline
        ):
            trial = study.ask(space)
            params = {**in_force, **from_search_values(spec, trial.params)}
            record = score_trial(spec, params, data, trial)
            if record.state == "complete":
                study.tell(trial, record.mean_loss)
            else:
                study.tell(trial, state=OPTUNA_STATES[record.state])
            trials.append(record)
            if on_trial is not None:
                on_trial(record)
    used = np.unique(np.concatenate([np.concatenate([f.train_index, f.test_index]) for f in folds]))
    return TuningResult(
        trials=trials,
        current=trials[0],
        best=best_trial(trials),
        tuning_start=frame["ts"].iloc[used].min(),
        tuning_end=frame["ts"].iloc[used].max(),
        folds=len(folds),
        rows=len(used),
        metric=spec.primary_metric,
        test_start=outer.test_start,
        fold_splits=tuple(folds),
        seconds=time.perf_counter() - started,
    )


def best_trial(trials: list[TrialRecord]) -> TrialRecord:
    """The lowest mean loss among complete trials, the earlier on a tie (trial 0 keeps its
    place against an equal candidate); trial 0 when none completed."""
    complete = [t for t in trials if t.state == "complete" and t.mean_loss is not None]
    if not complete:
        return trials[0]
    return min(complete, key=lambda t: (t.mean_loss, t.trial))
