"""direction_ensemble: the five models' predictions stacked into one P(up) of the next H bars.

Trained only on rows no member saw (ml/stacking.py proves it row by row, per instrument), and
judged by walk-forward over those rows: the eligible rows are cut into a first stretch and
``n_folds`` later blocks; each block is predicted by a stacker fit on the purged rows before
it. On exactly the predicted rows the ensemble faces every naive rule of direction and each
member's own direction call (the direction model's side of 0.5, the price model's sign of its
return): the strongest of them is its bar, and ``members_gate`` serves it only when it beats
that bar beyond noise. The served stacker is then fit on every eligible row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from blofin_assets.ml.baselines import NaiveRule, naive_rules
from blofin_assets.ml.importance import FeatureImportance, feature_importance
from blofin_assets.ml.metrics import (
    Evaluation,
    classification_metrics,
    probability_metrics,
    row_losses,
    strongest_baseline,
)
from blofin_assets.ml.reference import build_reference
from blofin_assets.ml.row_plan import even_positions
from blofin_assets.ml.significance import SIGNIFICANCE_LEVEL, diebold_mariano, overlap_lag
from blofin_assets.ml.specs import MODEL_FEATURES, MODEL_SPECS, SPECS_BY_NAME, ModelSpec
from blofin_assets.ml.splits import PurgedSplit
from blofin_assets.ml.stacking import (
    InSampleError,
    Member,
    StackedDirection,
    assert_out_of_fold,
    exact_input_scaler,
    fit_stacker,
    out_of_fold_mask,
)
from blofin_assets.ml.training import (
    TrainedModel,
    TrainingDataError,
    check_training_frame,
    naive_constants,
)
from blofin_assets.ml.verdict import Verdict
from blofin_assets.ml.walk_forward import walk_forward_folds

__all__ = [
    "ENSEMBLE_SPEC",
    "EnsembleFit",
    "InSampleError",
    "Member",
    "StackedDirection",
    "assert_out_of_fold",
    "members_gate",
    "stack_ensemble",
    "train_ensemble",
]

MEMBER_RULE_PREFIX = "member_"
_DIRECTION = SPECS_BY_NAME["direction_predictor"]

ENSEMBLE_SPEC = ModelSpec(
    name="direction_ensemble",
    description="Probability that close[t+H] > close[t], stacked (logistic regression) on the "
    "five models' predictions for bars none of them saw. Served only when it beats its "
    "strongest member's own direction call and the strongest naive rule beyond noise.",
    target=_DIRECTION.target,
    task="classification",
    estimator_class=StackedDirection,
    params={
        "C": 1.0,
        "members": tuple(spec.name for spec in MODEL_SPECS),
        "n_folds": 3,
        # Binds from about 40 instruments of 30 days of 1m bars; below, every eligible row.
        "max_rows": 200_000,
    },
    primary_metric="accuracy",
    baselines=_DIRECTION.baselines,
    kind="ensemble",
    leakage_limits={"accuracy": 0.75},
    regression_warn_drop=_DIRECTION.regression_warn_drop,
    regression_error_drop=_DIRECTION.regression_error_drop,
    features=MODEL_FEATURES,
    target_unit=_DIRECTION.target_unit,
    class_names=("down", "up"),
)
# Models for which serving nothing is a normal state (served only once they beat their bar):
# their unserved versions get a shadow record, and nothing to serve is reported, not an
# error. For the five, no served version is a failure and stays one.
MAY_SERVE_NOTHING: tuple[str, ...] = (ENSEMBLE_SPEC.name,)


@dataclass(frozen=True)
class EnsembleFit:
    """A trained ensemble and how it got there: what tests and reports read beside it."""

    trained: TrainedModel
    frame: pd.DataFrame  # the training frame in time order
    stacking: pd.DataFrame  # its rows out of sample for every member (at most max_rows)
    meta: np.ndarray  # the members' outputs on those rows (columns: meta_features_)
    folds: tuple[PurgedSplit, ...]  # walk-forward folds, positions into ``stacking``
    evaluated: np.ndarray  # positions into ``stacking`` of the rows the evaluation scores
    p_up: np.ndarray  # the walk-forward P(up) of those rows
    fitted_rows: tuple[pd.DataFrame, ...]  # (inst_id, ts) of every stacker fit, served last


def train_ensemble(
    spec: ModelSpec,
    frame: pd.DataFrame,
    members: Sequence[Member],
    *,
    horizon: int,
    n_folds: int | None = None,
) -> TrainedModel:
    """Stack ``members`` on their out-of-fold predictions; ``n_folds`` defaults to the spec's."""
    return stack_ensemble(spec, frame, members, horizon=horizon, n_folds=n_folds).trained


def eligible_rows(
    spec: ModelSpec, frame: pd.DataFrame, members: Sequence[Member], *, horizon: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The frame in time order, and its rows out of sample for every member (at most the
    spec's ``max_rows`` of them, evenly spaced per instrument)."""
    check_training_frame(frame, spec)
    lacking = [c for c in spec.baseline_columns if c not in frame.columns]
    if lacking:
        raise TrainingDataError(f"{spec.name}: frame lacks baseline columns {lacking}")
    if not members:
        raise TrainingDataError(f"{spec.name}: no members to stack")
    ordered = frame.sort_values(["ts", "inst_id"], kind="stable", ignore_index=True)
    stacking = ordered[out_of_fold_mask(ordered, members, horizon=horizon)]
    if stacking.empty:
        starts = {m.name: str(m.test_start) for m in members}
        raise TrainingDataError(
            f"{spec.name}: none of {len(ordered)} rows (up to {ordered['ts'].max()}) is out of "
            f"sample for every member (their test_start: {starts}, horizon {horizon})"
        )
    cap = spec.params.get("max_rows")
    if cap is not None and len(stacking) > cap:  # time order kept: positions ascend
        stacking = stacking.iloc[even_positions(stacking["inst_id"], int(cap))]
    return ordered, stacking.reset_index(drop=True)


def stack_ensemble(
    spec: ModelSpec,
    frame: pd.DataFrame,
    members: Sequence[Member],
    *,
    horizon: int,
    n_folds: int | None = None,
) -> EnsembleFit:
    """The whole training: eligible rows, walk-forward evaluation, the served stacker."""
    n_folds = int(spec.params.get("n_folds", 3)) if n_folds is None else n_folds
    ordered, stacking = eligible_rows(spec, frame, members, horizon=horizon)
    features = list(spec.features)
    started = time.perf_counter()
    raw = stacking[features].to_numpy(dtype="float64")
    scaler = exact_input_scaler(raw)  # exactly invertible: it changes no prediction
    estimator = spec.build_estimator().with_members(members, scaler, features)
    meta = estimator.meta_features(scaler.transform(raw))
    y = stacking[spec.target].to_numpy(dtype="float64").astype("int64")
    folds = walk_forward_blocks(spec, stacking, n_folds=n_folds, horizon=horizon)
    # Each fold's stacker, then the served one on every eligible row; all through the guard.
    fitted = [*(fold.train_index for fold in folds), np.arange(len(stacking))]
    stackers = [
        fit_stacker(estimator.C, meta[i], y[i], stacking.iloc[i], ordered, members, horizon=horizon)
        for i in fitted
    ]
    estimator.stacker_ = stackers.pop()
    evaluated = np.concatenate([fold.test_index for fold in folds])
    p_up = np.concatenate(
        [s.predict_proba(meta[f.test_index])[:, 1] for s, f in zip(stackers, folds, strict=True)]
    )
    train_seconds = time.perf_counter() - started
    evaluation = evaluate_ensemble(spec, estimator, meta, y, stacking, folds, p_up, horizon=horizon)
    last = folds[-1]
    trained = TrainedModel(
        spec=spec,
        estimator=estimator,
        scaler=scaler,
        evaluation=evaluation,
        train_metrics=classification_metrics(
            y[last.train_index], stackers[-1].predict(meta[last.train_index])
        ),
        split=last,
        train_rows=len(last.train_index),
        test_rows=len(evaluated),
        data_window=(stacking["ts"].min(), stacking["ts"].max()),
        feature_importances=walk_forward_importance(
            stackers, folds, meta, y, estimator.meta_features_
        ),
        train_seconds=train_seconds,
        instruments=tuple(sorted(ordered["inst_id"].unique())),
        naive_constants=naive_constants(spec, y),
        reference=build_reference(scaler.transform(raw), features),
    )
    keys = tuple(stacking.iloc[i][["inst_id", "ts"]].reset_index(drop=True) for i in fitted)
    return EnsembleFit(trained, ordered, stacking, meta, tuple(folds), evaluated, p_up, keys)


def walk_forward_blocks(
    spec: ModelSpec, stacking: pd.DataFrame, *, n_folds: int, horizon: int
) -> list[PurgedSplit]:
    """The eligible rows cut into a first stretch and ``n_folds`` blocks, purged per
    instrument (ml/walk_forward.py); too few rows say how many there were and from when."""
    try:
        return walk_forward_folds(
            stacking["ts"], stacking["inst_id"], n_folds=n_folds, horizon=horizon
        )
    except ValueError as error:
        raise TrainingDataError(
            f"{spec.name}: {len(stacking)} stacking rows from {stacking['ts'].min()}: {error}"
        ) from error


def member_calls(
    estimator: StackedDirection, meta: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Each member's own direction call, named member_<name>: a binary classifier's
    P(up) > 0.5 (with that probability), a return model's sign (no probability). The one rule
    the ensemble is judged against, here and in the forward record."""
    calls: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for column, name in enumerate(estimator.meta_features_):
        _, member, output = name.split(":")
        if output == "p_up":
            calls[f"{MEMBER_RULE_PREFIX}{member}"] = (
                (meta[:, column] > 0.5).astype("int64"),
                meta[:, column],
            )
        elif output == "log_return":
            calls[f"{MEMBER_RULE_PREFIX}{member}"] = ((meta[:, column] > 0).astype("int64"), None)
    return calls


def member_rules(
    estimator: StackedDirection, meta: np.ndarray, y: np.ndarray
) -> dict[str, NaiveRule]:
    """Each member's own direction call on the same rows, scored as a rule (a probability
    too, where it has one)."""
    rules = {}
    for name, (predicted, probability) in member_calls(estimator, meta).items():
        metrics = classification_metrics(y, predicted)
        if probability is not None:
            metrics |= probability_metrics(y, probability)
        rules[name] = NaiveRule(metrics, row_losses("accuracy", y, predicted))
    return rules


def evaluate_ensemble(
    spec: ModelSpec,
    estimator: StackedDirection,
    meta: np.ndarray,
    y: np.ndarray,
    stacking: pd.DataFrame,
    folds: Sequence[PurgedSplit],
    p_up: np.ndarray,
    *,
    horizon: int,
) -> Evaluation:
    """The walk-forward predictions beside every naive rule (learnt from the first stretch)
    and every member's own call, on the same rows; the strongest is tested row by row."""
    evaluated = np.concatenate([fold.test_index for fold in folds])
    first = folds[0].train_index
    y_test = y[evaluated]
    predicted = (p_up > 0.5).astype("int64")
    rules = naive_rules(
        spec,
        train=stacking.iloc[first],
        test=stacking.iloc[evaluated],
        y_train=y[first],
        y_test=y_test,
    )
    rules |= member_rules(estimator, meta[evaluated], y_test)
    scores = {name: rule.metrics for name, rule in rules.items()}
    strongest = strongest_baseline(scores, spec.primary_metric)
    if strongest is None:
        raise TrainingDataError(f"{spec.name}: no baseline scores {spec.primary_metric}")
    comparison = diebold_mariano(
        row_losses(spec.primary_metric, y_test, predicted),
        rules[strongest].losses,
        overlap_lag(horizon, stacking["inst_id"].nunique()),
    )
    return Evaluation(
        metrics=classification_metrics(y_test, predicted) | probability_metrics(y_test, p_up),
        baselines=scores,
        primary_metric=spec.primary_metric,
        baseline_name=strongest,
        comparison=comparison,
    )


def walk_forward_importance(
    stackers: Sequence[Pipeline],
    folds: Sequence[PurgedSplit],
    meta: np.ndarray,
    y: np.ndarray,
    names: Sequence[str],
) -> FeatureImportance:
    """Permutation importance of the meta-features, each block scored by the stacker fit
    before it (rows it never saw), averaged over the blocks weighted by their rows."""
    parts = [
        (
            len(f.test_index),
            feature_importance(s, names, meta[f.test_index], y[f.test_index], metric="accuracy"),
        )
        for s, f in zip(stackers, folds, strict=True)
    ]
    total = sum(rows for rows, _ in parts)
    scores = {n: sum(rows * part[n] for rows, part in parts) / total for n in names}
    stderr = {
        n: math.sqrt(sum((rows / total * part.stderr[n]) ** 2 for rows, part in parts))
        for n in names
    }
    order = sorted(names, key=lambda n: -scores[n])
    return FeatureImportance(
        method=f"mean over {len(parts)} walk-forward blocks ({total} rows, weighted by rows), "
        f"each by the stacker fit before it; per block: {parts[-1][1].method}",
        scores={n: scores[n] for n in order},
        stderr={n: stderr[n] for n in order},
    )


def members_gate(trained: TrainedModel) -> Verdict:
    """ERROR unless the ensemble beats the strongest of its members' own calls and the naive
    rules beyond noise: a stack no better than its best part is kept, not served."""
    evaluation = trained.evaluation
    metric = evaluation.primary_metric
    comparison = evaluation.comparison
    p_value = comparison.p_value if comparison is not None else float("nan")
    members = {k: v for k, v in evaluation.baselines.items() if k.startswith(MEMBER_RULE_PREFIX)}
    rules = {k: v for k, v in evaluation.baselines.items() if k not in members}
    best_member, best_rule = strongest_baseline(members, metric), strongest_baseline(rules, metric)
    passed = evaluation.skill > 0 and p_value < SIGNIFICANCE_LEVEL
    figures = (
        f"{metric} {evaluation.primary_value:.4f} vs {evaluation.baseline_value:.4f}, skill "
        f"{evaluation.skill:+.4f}, one-sided p = {p_value:.3g} (Diebold-Mariano, HAC) on "
        f"{trained.test_rows} walk-forward rows no member saw"
    )
    if passed:
        description = (
            f"{trained.spec.name} beats its strongest member and the strongest naive rule; "
            f"the bar was {evaluation.baseline_name} ({figures})."
        )
    else:
        description = (
            f"not better than {evaluation.baseline_name} ({figures}): kept in history, not served."
        )
    metadata = {
        "primary_metric": metric,
        "model_value": evaluation.primary_value,
        "bar": evaluation.baseline_name,
        "bar_value": evaluation.baseline_value,
        "skill": evaluation.skill,
        "p_value": p_value,
        "strongest_member": best_member,
        "strongest_member_value": members[best_member][metric] if best_member else None,
        "strongest_naive_rule": best_rule,
        "strongest_naive_rule_value": rules[best_rule][metric] if best_rule else None,
    }
    return Verdict("beats_members", passed, "ERROR", description, metadata)
