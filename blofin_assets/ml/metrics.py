"""Metrics that never travel without their naive baselines.

Every evaluation scores the model and every naive rule of its target on the same test rows.
The strongest rule there is the baseline: picking it on the test rows can only make the model
look worse, so nothing leaks in the model's favour, and a rule that is weak on the training
rows can never become the straw man. Skill is measured over that rule, and whether the model
beats it beyond noise is a separate, overlap-aware test (significance.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    log_loss,
    mean_absolute_error,
    precision_recall_fscore_support,
    r2_score,
    root_mean_squared_error,
)

from blofin_assets.ml.significance import Comparison

LOWER_IS_BETTER = frozenset({"mae", "rmse", "log_loss", "brier"})


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]  # the model's, on the test rows
    baselines: dict[str, dict[str, float]]  # every naive rule's, on the same rows
    primary_metric: str
    baseline_name: str  # the strongest rule on the primary metric
    # The model against that rule row by row, overlap-aware; None when not computed.
    comparison: Comparison | None = field(default=None, compare=False)

    @property
    def baseline(self) -> dict[str, float]:
        return self.baselines[self.baseline_name]

    @property
    def primary_value(self) -> float:
        return self.metrics[self.primary_metric]

    @property
    def baseline_value(self) -> float:
        return self.baseline[self.primary_metric]

    @property
    def skill(self) -> float:
        """> 0 means better than the strongest naive rule on the primary metric."""
        return skill_score(self.primary_metric, self.primary_value, self.baseline_value)

    @property
    def beats_baseline_beyond_noise(self) -> bool:
        return self.skill > 0 and self.comparison is not None and self.comparison.significant

    def skills(self, metric: str | None = None) -> dict[str, float]:
        """Skill over each rule that has ``metric`` (default: the primary one)."""
        metric = metric or self.primary_metric
        return {
            name: skill_score(metric, self.metrics[metric], values[metric])
            for name, values in self.baselines.items()
            if metric in values and metric in self.metrics
        }

    def strongest(self, metric: str) -> str | None:
        return strongest_baseline(self.baselines, metric)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Binary targets get the positive-class F1; multi-class targets the macro average."""
    average = "binary" if len(np.unique(np.concatenate([y_true, y_pred]))) <= 2 else "macro"
    if average == "binary" and not set(np.unique(y_true)) <= {0, 1}:
        average = "macro"
    # One call for the three: each separate call re-validates and re-counts the labels, which
    # adds up on millions of test rows and every naive rule scored beside the model.
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average=average, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1": float(f1),
        "precision": float(precision),
        "recall": float(recall),
    }


def probability_metrics(y_true: np.ndarray, p_up: np.ndarray) -> dict[str, float]:
    """How good the predicted probability of "up" is, not only its side of 0.5."""
    return {
        "log_loss": float(log_loss(y_true, p_up, labels=[0, 1])),
        "brier": float(brier_score_loss(y_true, p_up, pos_label=1)),
    }


def coin_flip_metrics(y_true: np.ndarray) -> dict[str, float]:
    """What a fair coin scores in expectation (exactly, not one noisy draw of it): it answers
    "up" half the time, so its precision is the share of ups and its recall one half."""
    share_up = float(np.mean(np.asarray(y_true) == 1)) if len(y_true) else float("nan")
    f1 = 2 * share_up * 0.5 / (share_up + 0.5) if share_up + 0.5 > 0 else 0.0
    return {
        "accuracy": 0.5,
        "f1": f1,
        "precision": share_up,
        "recall": 0.5,
        "log_loss": math.log(2.0),
        "brier": 0.25,
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return {
        "r2": float(r2_score(y_true, y_pred)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "rmse": float(root_mean_squared_error(y_true, y_pred)),
    }


def row_losses(metric: str, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """The per-row loss whose mean the metric is (or orders like), for the row-by-row test."""
    if metric == "accuracy":
        return (np.asarray(y_true) != np.asarray(y_pred)).astype("float64")
    error = np.asarray(y_true, dtype="float64") - np.asarray(y_pred, dtype="float64")
    if metric == "mae":
        return np.abs(error)
    if metric == "rmse":
        return error * error
    raise ValueError(f"no per-row loss for metric {metric!r}")


def skill_score(metric: str, value: float, baseline: float) -> float:
    """One sign convention for every model: positive = beats the baseline.

    Error metrics use 1 - error/baseline_error (the forecasting skill score); score metrics use
    (score - baseline) / (1 - baseline), the share of the baseline's shortfall that was closed.
    """
    if metric in LOWER_IS_BETTER:
        return float(1.0 - value / baseline) if baseline > 0 else float("nan")
    headroom = 1.0 - baseline
    return float((value - baseline) / headroom) if headroom > 0 else float("nan")


def strongest_baseline(baselines: Mapping[str, Mapping[str, float]], metric: str) -> str | None:
    """The rule with the best ``metric`` (ties: the first listed); None when none has it."""
    scored = [(name, values[metric]) for name, values in baselines.items() if metric in values]
    scored = [(name, value) for name, value in scored if value == value]  # NaN never wins
    if not scored:
        return None
    if metric in LOWER_IS_BETTER:
        return min(scored, key=lambda item: item[1])[0]
    return max(scored, key=lambda item: item[1])[0]


def majority_class(y_train: np.ndarray) -> int:
    """The naive classifier: always answer the most frequent training label (ties: smallest)."""
    values, counts = np.unique(np.asarray(y_train), return_counts=True)
    return int(values[np.argmax(counts)])
