"""Fit one ModelSpec on the joined features + targets frame, honestly.

Time-ordered purged split, scaler fit on the training block only, regression targets
transformed and standardised inside the pickled estimator, deterministic row caps, fixed
seeds, every test metric next to its naive baseline. What surrounds the fit works on
fixed-size samples where it can (train metrics here, importance, outlier reference), and each
piece is timed (TrainedModel.timings; benchmarks/profile_steps.py prints them).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from threadpoolctl import threadpool_limits

from blofin_assets.ml.baselines import naive_rules
from blofin_assets.ml.features import REFERENCE_COLUMNS
from blofin_assets.ml.importance import (
    KERNEL_EVALUATIONS,
    FeatureImportance,
    feature_importance,
    support_vector_count,
)
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
from blofin_assets.ml.row_plan import RowPlan, even_positions, plan_rows
from blofin_assets.ml.significance import diebold_mariano, overlap_lag
from blofin_assets.ml.specs import ModelSpec
from blofin_assets.ml.splits import PurgedSplit
from blofin_assets.ml.target_space import model_target

DEFAULT_TEST_FRACTION = 0.2
# Train metrics are an over-fitting check beside the test metrics, not a skill: on 50,000
# evenly spaced rows their sampling error (~0.002 in accuracy) is far below the gaps they are
# read for, and predicting every training row of a big market costs a forest or a booster
# seconds per run.
TRAIN_METRIC_ROWS = 50_000


class TrainingDataError(ValueError):
    """The training frame cannot give an honest model; never trained around silently."""


@dataclass(frozen=True)
class TrainedModel:
    spec: ModelSpec
    estimator: Any
    scaler: StandardScaler
    evaluation: Evaluation  # on the test block
    train_metrics: dict[str, float]  # on train_metric_rows of the training rows (see below)
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
    # Of the train_rows, how many the train metrics were computed on (None: all of them).
    train_metric_rows: int | None = None
    # Wall seconds of each piece of train_model (split, fit, predict_test, ...).
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def predict_seconds(self) -> float:
        """The estimator's own prediction of the test block (0.0 when not timed)."""
        return self.timings.get("predict_test", 0.0)

    @property
    def train_metrics_method(self) -> str:
        """What the train metrics were computed on, for metadata beside them."""
        rows = self.train_rows if self.train_metric_rows is None else self.train_metric_rows
        if rows >= self.train_rows:
            return f"all {self.train_rows} training rows"
        return f"{rows} of the {self.train_rows} training rows, evenly spaced per instrument"


def check_training_frame(frame: pd.DataFrame, spec: ModelSpec) -> None:
    """Refuse NaN/inf or missing columns with a message that says which and how many."""
    needed = [*spec.features, spec.target, "ts"]
    missing = [column for column in needed if column not in frame.columns]
    if missing:
        raise TrainingDataError(f"{spec.name}: training frame lacks columns {missing}")
    if frame.empty:
        raise TrainingDataError(f"{spec.name}: training frame is empty")
    # Column by column: one float copy of every column at once is ~0.8 GB at 100 instruments.
    rows_bad = np.zeros(len(frame), dtype=bool)
    counts = {}
    for column in [*spec.features, spec.target]:
        bad = ~np.isfinite(frame[column].to_numpy(dtype="float64"))
        if bad.any():
            counts[column] = int(bad.sum())
            rows_bad |= bad
    if counts:
        raise TrainingDataError(
            f"{spec.name}: {int(rows_bad.sum())} training rows hold NaN/inf (per column: {counts})"
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


def fit_threads(estimator: Any) -> AbstractContextManager[Any]:
    """The thread pools an estimator fits fastest on, measured at workload M (the model is the
    same; benchmarks/results/estimators.md has the figures). A histogram gradient booster takes
    one OpenMP thread while OpenMP threads sleep between regions (OMP_WAIT_POLICY=PASSIVE,
    process.py): waking a second one for each of its thousands of short regions costs more
    than it brings. The MLP takes one BLAS thread: its 256-row batches are too small to
    share."""
    inner = getattr(estimator, "regressor", estimator)
    if isinstance(inner, MLPRegressor | MLPClassifier):
        return threadpool_limits(1, user_api="blas")
    boosters = (HistGradientBoostingRegressor, HistGradientBoostingClassifier)
    if isinstance(inner, boosters) and os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        return threadpool_limits(1, user_api="openmp")
    return nullcontext()


def fit_estimator(estimator: Any, x: np.ndarray, y: np.ndarray) -> Any:
    """``estimator.fit(x, y)`` on the threads that fit it fastest (fit_threads)."""
    with fit_threads(estimator):
        return estimator.fit(x, y)


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
    instruments: tuple[str, ...]  # every instrument of the frame split, sorted


def split_blocks(
    spec: ModelSpec,
    frame: pd.DataFrame,
    *,
    horizon: int,
    test_fraction: float,
    plan: RowPlan | None = None,
) -> Blocks:
    """Past block to train on, later block to test on, ``horizon`` bars purged between them;
    the scaler sees the training block only. With a ``plan`` (ml/row_plan.py), the frame holds
    exactly the plan's rows in order, and the blocks are those the whole frame would give."""
    if plan is None:
        if not frame["ts"].is_monotonic_increasing:  # read_training_frame orders by time
            frame = frame.sort_values(["ts", "inst_id"], kind="stable").reset_index(drop=True)
        plan = plan_rows(
            spec, frame["ts"], frame["inst_id"], horizon=horizon, test_fraction=test_fraction
        )
        train_at, test_at = plan.train_positions, plan.test_positions
    else:
        plan.check_fits(spec)
        if len(frame) != len(plan.positions):
            raise TrainingDataError(
                f"{spec.name}: the row plan keeps {len(plan.positions)} rows, "
                f"the frame read for it holds {len(frame)}"
            )
        train_at = np.arange(len(plan.train_positions))
        test_at = np.arange(len(plan.train_positions), len(frame))
    # Positions first, so only the kept rows are copied out of the frame.
    train, test = frame.iloc[train_at], frame.iloc[test_at]
    features = list(spec.features)
    values = train[features].to_numpy(dtype="float64")
    scaler = StandardScaler().fit(values)
    y_train, y_test = model_target(spec, train), model_target(spec, test)
    if spec.task == "classification":
        y_train, y_test = y_train.astype("int64"), y_test.astype("int64")
        if len(np.unique(y_train)) < 2:
            raise TrainingDataError(f"{spec.name}: training block has a single class")
    return Blocks(
        split=plan.split,
        train=train,
        test=test,
        scaler=scaler,
        x_train=scaler.transform(values),
        x_test=scaler.transform(test[features].to_numpy(dtype="float64")),
        y_train=y_train,
        y_test=y_test,
        instruments=plan.instruments,
    )


class Stopwatch:
    """Wall seconds per named piece of a training, for TrainedModel.timings."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def piece(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - started, 4)


def train_metric_sample(estimator: Any, blocks: Blocks) -> np.ndarray:
    """The training rows the train metrics are computed on: TRAIN_METRIC_ROWS evenly spaced
    per instrument; a kernel machine gets the importance's budget of kernel evaluations."""
    support = support_vector_count(estimator)
    rows = TRAIN_METRIC_ROWS if support is None else KERNEL_EVALUATIONS // max(support, 1)
    return even_positions(blocks.train["inst_id"].to_numpy(), max(rows, 2))


def score_train(spec: ModelSpec, estimator: Any, blocks: Blocks) -> tuple[dict[str, float], int]:
    """The training metrics, on the train_metric_sample; and how many rows that was."""
    sample = train_metric_sample(estimator, blocks)
    y_true, predicted = blocks.y_train[sample], estimator.predict(blocks.x_train[sample])
    if spec.task == "classification":
        return classification_metrics(y_true, predicted), len(sample)
    return regression_metrics(y_true, predicted), len(sample)


def score_test(
    spec: ModelSpec, estimator: Any, blocks: Blocks, predicted: np.ndarray, *, horizon: int
) -> Evaluation:
    """Test metrics beside every naive rule on the same rows, the strongest rule named and
    tested row by row (``predicted``: the estimator's predictions of the test block)."""
    if spec.task == "classification":
        model = classification_metrics(blocks.y_test, predicted)
        if is_binary(estimator):
            model |= probability_metrics(
                blocks.y_test, estimator.predict_proba(blocks.x_test)[:, 1]
            )
    else:
        model = regression_metrics(blocks.y_test, predicted)
    rules = naive_rules(
        spec, train=blocks.train, test=blocks.test, y_train=blocks.y_train, y_test=blocks.y_test
    )
    scores = {name: rule.metrics for name, rule in rules.items()}
    strongest = strongest_baseline(scores, spec.primary_metric)
    if strongest is None:
        raise TrainingDataError(f"{spec.name}: no baseline scores {spec.primary_metric}")
    comparison = diebold_mariano(
        row_losses(spec.primary_metric, blocks.y_test, predicted),
        rules[strongest].losses,
        overlap_lag(horizon, blocks.test["inst_id"].nunique()),
    )
    return Evaluation(
        metrics=model,
        baselines=scores,
        primary_metric=spec.primary_metric,
        baseline_name=strongest,
        comparison=comparison,
    )


def is_binary(estimator: Any) -> bool:
    classes = getattr(estimator, "classes_", None)
    return classes is not None and list(classes) == [0, 1] and hasattr(estimator, "predict_proba")


def train_model(
    spec: ModelSpec,
    frame: pd.DataFrame,
    *,
    horizon: int,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    plan: RowPlan | None = None,
) -> TrainedModel:
    """Train on the past, test on the later block, purge ``horizon`` bars between them.
    ``plan``: the frame holds only the planned rows (storage.read_model_rows), same model."""
    check_training_frame(frame, spec)
    missing_baselines = [c for c in spec.baseline_columns if c not in frame.columns]
    if missing_baselines:
        raise TrainingDataError(f"{spec.name}: frame lacks baseline columns {missing_baselines}")
    watch = Stopwatch()
    with watch.piece("split"):
        blocks = split_blocks(spec, frame, horizon=horizon, test_fraction=test_fraction, plan=plan)
    estimator = clone(wrap_estimator(spec))
    with watch.piece("fit"):
        fit_estimator(estimator, blocks.x_train, blocks.y_train)
    with watch.piece("predict_test"):
        predicted = estimator.predict(blocks.x_test)
    with watch.piece("test_metrics"):  # the rules, the strongest one's row-by-row test
        evaluation = score_test(spec, estimator, blocks, predicted, horizon=horizon)
    with watch.piece("train_metrics"):
        train_metrics, metric_rows = score_train(spec, estimator, blocks)
    with watch.piece("importance"):
        importance = feature_importance(
            estimator, spec.features, blocks.x_test, blocks.y_test, metric=spec.primary_metric
        )
    with watch.piece("reference"):
        reference = build_reference(blocks.x_train, spec.features)
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
        feature_importances=importance,
        train_seconds=watch.seconds["fit"],
        instruments=blocks.instruments,
        naive_constants=naive_constants(spec, blocks.y_train),
        reference=reference,
        train_metric_rows=metric_rows,
        timings=watch.seconds,
    )


def naive_constants(spec: ModelSpec, y_train: np.ndarray) -> dict[str, float]:
    if spec.task == "classification":
        constants = {"majority_class": float(majority_class(y_train))}
        if set(np.unique(y_train)) <= {0, 1}:
            constants["base_rate"] = float(np.mean(y_train == 1))
        return constants
    return {"training_mean": float(np.mean(y_train))}
