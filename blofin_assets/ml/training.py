"""Fit one ModelSpec on the joined features + targets frame, honestly.

Time-ordered purged split, scaler fit on the training block only, regression targets
transformed and standardised inside the pickled estimator, row caps taken from the most recent
rows, fixed seeds, and every test metric next to its naive baseline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from blofin_assets.ml.baselines import naive_rules
from blofin_assets.ml.features import REFERENCE_COLUMNS
from blofin_assets.ml.importance import FeatureImportance, feature_importance
from blofin_assets.ml.metrics import (
    Evaluation,
    classification_metrics,
    majority_class,
    probability_metrics,
    regression_metrics,
    row_losses,
    strongest_baseline,
)
from blofin_assets.ml.reference import OutlierReference, build_reference
from blofin_assets.ml.significance import diebold_mariano, overlap_lag
from blofin_assets.ml.specs import ModelSpec
from blofin_assets.ml.splits import PurgedSplit, purged_split
from blofin_assets.ml.target_space import model_target

DEFAULT_TEST_FRACTION = 0.2


class TrainingDataError(ValueError):
    """The training frame cannot give an honest model; never trained around silently."""


@dataclass(frozen=True)
class TrainedModel:
    spec: ModelSpec
    estimator: Any
    scaler: StandardScaler
    evaluation: Evaluation  # on the test block
    train_metrics: dict[str, float]
    split: PurgedSplit
    train_rows: int
    test_rows: int
    data_window: tuple[pd.Timestamp, pd.Timestamp]
    feature_importances: FeatureImportance  # permutation on the test block, method named
    train_seconds: float
    instruments: tuple[str, ...]
    # What the rules learned from the training block answer (majority class, share of ups,
    # mean target in the estimator's space), so the served version's rule can be replayed on
    # the bars it later predicts.
    naive_constants: dict[str, float]
    # The training rows as the estimator saw them (sampled, scaled), to tell later rows that
    # lie outside them (ml/reference.py); saved with the version as reference.npz.
    reference: OutlierReference


def check_training_frame(frame: pd.DataFrame, spec: ModelSpec) -> None:
    """Refuse NaN/inf or missing columns with a message that says which and how many."""
    needed = [*spec.features, spec.target, "ts"]
    missing = [column for column in needed if column not in frame.columns]
    if missing:
        raise TrainingDataError(f"{spec.name}: training frame lacks columns {missing}")
    if frame.empty:
        raise TrainingDataError(f"{spec.name}: training frame is empty")
    values = frame[[*spec.features, spec.target]].to_numpy(dtype="float64")
    bad = ~np.isfinite(values)
    if bad.any():
        columns = [*spec.features, spec.target]
        counts = {columns[i]: int(n) for i, n in enumerate(bad.sum(axis=0)) if n}
        raise TrainingDataError(
            f"{spec.name}: {int(bad.any(axis=1).sum())} training rows hold NaN/inf "
            f"(per column: {counts})"
        )


def training_columns(spec: ModelSpec) -> list[str]:
    """What train_model reads of the joined frame: keys, reference price, features, target
    and the column baselines; the model step reads only these."""
    wanted = [
        "inst_id",
        "ts",
        *REFERENCE_COLUMNS,
        *spec.features,
        spec.target,
        *spec.baseline_columns,
    ]
    return list(dict.fromkeys(wanted))


def wrap_estimator(spec: ModelSpec) -> Any:
    """Put target transforms inside the estimator so model.pkl predicts in target units.

    Only numpy ufuncs and scikit-learn objects are pickled: any program with scikit-learn can
    load model.pkl without importing this package.
    """
    estimator = spec.build_estimator()
    if spec.task == "classification" or not spec.scale_target:
        return estimator
    steps: list[tuple[str, Any]] = []
    if spec.target_transform == "log":
        steps.append(("log", FunctionTransformer(np.log, np.exp, check_inverse=False)))
    steps.append(("standardise", StandardScaler()))
    return TransformedTargetRegressor(regressor=estimator, transformer=Pipeline(steps))


def evenly_spaced(frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    return frame.iloc[np.unique(np.linspace(0, len(frame) - 1, rows).round().astype(int))]


def cap_rows(train: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """Apply the spec's row cap deterministically (no random sampling: same data, same model)."""
    cap = spec.max_train_rows
    if cap is None or len(train) <= cap:
        return train
    return evenly_spaced(train, cap) if spec.row_sampling == "even" else train.iloc[-cap:]


@dataclass(frozen=True)
class Blocks:
    """The purged split and the design matrices of both blocks, scaled on the training block."""

    split: PurgedSplit
    train: pd.DataFrame
    test: pd.DataFrame
    scaler: StandardScaler
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


def split_blocks(
    spec: ModelSpec, frame: pd.DataFrame, *, horizon: int, test_fraction: float
) -> Blocks:
    """Past block to train on, later block to test on, ``horizon`` bars purged between them;
    the scaler sees the training block only."""
    if not frame["ts"].is_monotonic_increasing:  # read_training_frame already orders by time
        frame = frame.sort_values(["ts", "inst_id"], kind="stable").reset_index(drop=True)
    split = purged_split(
        frame["ts"], frame["inst_id"], test_fraction=test_fraction, horizon=horizon
    )
    train = cap_rows(frame.iloc[split.train_index], spec)
    test = frame.iloc[split.test_index]
    if spec.max_test_rows is not None and len(test) > spec.max_test_rows:
        test = evenly_spaced(test, spec.max_test_rows)  # an unbiased sample of the whole block
    features = list(spec.features)
    scaler = StandardScaler().fit(train[features].to_numpy(dtype="float64"))
    y_train, y_test = model_target(spec, train), model_target(spec, test)
    if spec.task == "classification":
        y_train, y_test = y_train.astype("int64"), y_test.astype("int64")
        if len(np.unique(y_train)) < 2:
            raise TrainingDataError(f"{spec.name}: training block has a single class")
    return Blocks(
        split=split,
        train=train,
        test=test,
        scaler=scaler,
        x_train=scaler.transform(train[features].to_numpy(dtype="float64")),
        x_test=scaler.transform(test[features].to_numpy(dtype="float64")),
        y_train=y_train,
        y_test=y_test,
    )


def evaluate(
    spec: ModelSpec, estimator: Any, blocks: Blocks, *, horizon: int
) -> tuple[Evaluation, dict[str, float]]:
    """Test metrics beside every naive rule on the same rows, the strongest rule named and
    tested row by row; and the training metrics."""
    predicted_test = estimator.predict(blocks.x_test)
    predicted_train = estimator.predict(blocks.x_train)
    if spec.task == "classification":
        model = classification_metrics(blocks.y_test, predicted_test)
        if is_binary(estimator):
            model |= probability_metrics(
                blocks.y_test, estimator.predict_proba(blocks.x_test)[:, 1]
            )
        train_metrics = classification_metrics(blocks.y_train, predicted_train)
    else:
        model = regression_metrics(blocks.y_test, predicted_test)
        train_metrics = regression_metrics(blocks.y_train, predicted_train)
    rules = naive_rules(
        spec, train=blocks.train, test=blocks.test, y_train=blocks.y_train, y_test=blocks.y_test
    )
    scores = {name: rule.metrics for name, rule in rules.items()}
    strongest = strongest_baseline(scores, spec.primary_metric)
    if strongest is None:
        raise TrainingDataError(f"{spec.name}: no baseline scores {spec.primary_metric}")
    comparison = diebold_mariano(
        row_losses(spec.primary_metric, blocks.y_test, predicted_test),
        rules[strongest].losses,
        overlap_lag(horizon, blocks.test["inst_id"].nunique()),
    )
    evaluation = Evaluation(
        metrics=model,
        baselines=scores,
        primary_metric=spec.primary_metric,
        baseline_name=strongest,
        comparison=comparison,
    )
    return evaluation, train_metrics


def is_binary(estimator: Any) -> bool:
    classes = getattr(estimator, "classes_", None)
    return classes is not None and list(classes) == [0, 1] and hasattr(estimator, "predict_proba")


def train_model(
    spec: ModelSpec,
    frame: pd.DataFrame,
    *,
    horizon: int,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> TrainedModel:
    """Train on the past, test on the later block, purge ``horizon`` bars between them."""
    check_training_frame(frame, spec)
    missing_baselines = [c for c in spec.baseline_columns if c not in frame.columns]
    if missing_baselines:
        raise TrainingDataError(f"{spec.name}: frame lacks baseline columns {missing_baselines}")
    blocks = split_blocks(spec, frame, horizon=horizon, test_fraction=test_fraction)
    estimator = clone(wrap_estimator(spec))
    started = time.perf_counter()
    estimator.fit(blocks.x_train, blocks.y_train)
    train_seconds = time.perf_counter() - started
    evaluation, train_metrics = evaluate(spec, estimator, blocks, horizon=horizon)
    return TrainedModel(
        spec=spec,
        estimator=estimator,
        scaler=blocks.scaler,
        evaluation=evaluation,
        train_metrics=train_metrics,
        split=blocks.split,
        train_rows=len(blocks.train),
        test_rows=len(blocks.test),
        data_window=(blocks.train["ts"].min(), blocks.test["ts"].max()),
        feature_importances=feature_importance(
            estimator, spec.features, blocks.x_test, blocks.y_test, metric=spec.primary_metric
        ),
        train_seconds=train_seconds,
        instruments=tuple(sorted(frame["inst_id"].unique())),
        naive_constants=naive_constants(spec, blocks.y_train),
        reference=build_reference(blocks.x_train, spec.features),
    )


def naive_constants(spec: ModelSpec, y_train: np.ndarray) -> dict[str, float]:
    if spec.task == "classification":
        constants = {"majority_class": float(majority_class(y_train))}
        if set(np.unique(y_train)) <= {0, 1}:
            constants["base_rate"] = float(np.mean(y_train == 1))
        return constants
    return {"training_mean": float(np.mean(y_train))}
