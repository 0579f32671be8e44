"""Metrics that never travel without their naive baseline.

A number with no baseline is not a result: every evaluation returns the model's metrics, the
same metrics for the naive predictor (majority class learned on the training block, or
persistence known at t), and the skill of the model over that baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    precision_score,
    r2_score,
    recall_score,
    root_mean_squared_error,
)

LOWER_IS_BETTER = frozenset({"mae", "rmse"})


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    baseline: dict[str, float]
    primary_metric: str
    skill: float  # > 0 means better than the naive baseline on the primary metric
    baseline_name: str = "majority_class"

    @property
    def primary_value(self) -> float:
        return self.metrics[self.primary_metric]

    @property
    def baseline_value(self) -> float:
        return self.baseline[self.primary_metric]


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Binary targets get the positive-class F1; multi-class targets the macro average."""
    average = "binary" if len(np.unique(np.concatenate([y_true, y_pred]))) <= 2 else "macro"
    if average == "binary" and not set(np.unique(y_true)) <= {0, 1}:
        average = "macro"
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1": float(f1_score(y_true, y_pred, average=average, zero_division=0)),
        "precision": float(precision_score(y_true, y_pred, average=average, zero_division=0)),
        "recall": float(recall_score(y_true, y_pred, average=average, zero_division=0)),
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return {
        "r2": float(r2_score(y_true, y_pred)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "rmse": float(root_mean_squared_error(y_true, y_pred)),
    }


def skill_score(metric: str, value: float, baseline: float) -> float:
    """One sign convention for every model: positive = beats the baseline.

    Error metrics use 1 - error/baseline_error (the forecasting skill score); score metrics use
    (score - baseline) / (1 - baseline), the share of the baseline's shortfall that was closed.
    """
    if metric in LOWER_IS_BETTER:
        return float(1.0 - value / baseline) if baseline > 0 else float("nan")
    headroom = 1.0 - baseline
    return float((value - baseline) / headroom) if headroom > 0 else float("nan")


def majority_class(y_train: np.ndarray) -> int:
    """The naive classifier: always answer the most frequent training label (ties: smallest)."""
    values, counts = np.unique(np.asarray(y_train), return_counts=True)
    return int(values[np.argmax(counts)])


def evaluate_classifier(
    y_true: np.ndarray, y_pred: np.ndarray, *, y_train: np.ndarray, primary_metric: str
) -> Evaluation:
    """Compare with the majority class of the *training* block (never of the test block)."""
    naive = np.full_like(np.asarray(y_true), majority_class(y_train))
    metrics = classification_metrics(np.asarray(y_true), np.asarray(y_pred))
    baseline = classification_metrics(np.asarray(y_true), naive)
    return Evaluation(
        metrics=metrics,
        baseline=baseline,
        primary_metric=primary_metric,
        skill=skill_score(primary_metric, metrics[primary_metric], baseline[primary_metric]),
        baseline_name="majority_class",
    )


def evaluate_regressor(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    y_naive: np.ndarray,
    primary_metric: str,
    baseline_name: str = "persistence",
) -> Evaluation:
    """Compare with a naive prediction known at t (persistence), row by row."""
    metrics = regression_metrics(np.asarray(y_true), np.asarray(y_pred))
    baseline = regression_metrics(np.asarray(y_true), np.asarray(y_naive))
    return Evaluation(
        metrics=metrics,
        baseline=baseline,
        primary_metric=primary_metric,
        skill=skill_score(primary_metric, metrics[primary_metric], baseline[primary_metric]),
        baseline_name=baseline_name,
    )
