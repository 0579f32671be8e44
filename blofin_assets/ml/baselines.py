"""Every naive rule of a model's target, scored on the test rows the model is scored on.

Each rule uses only what is known at t (a naive_* column of ``targets``) or learned from the
training block (its majority class, up share or mean); none sees a test label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from blofin_assets.ml.metrics import (
    classification_metrics,
    coin_flip_metrics,
    majority_class,
    probability_metrics,
    regression_metrics,
    row_losses,
)
from blofin_assets.ml.specs import ModelSpec
from blofin_assets.ml.target_space import naive_prediction

# Mean 0/1 loss of a fair coin on any row: its expected accuracy is exactly one half.
COIN_FLIP_ROW_LOSS = 0.5


@dataclass(frozen=True)
class NaiveRule:
    metrics: dict[str, float]
    # Per test row, on the primary metric; None for a rule that is not a point forecast of it
    # (the base rate is a probability: it competes on log loss and Brier only).
    losses: np.ndarray | None


def naive_rules(
    spec: ModelSpec,
    *,
    train: pd.DataFrame,
    test: pd.DataFrame,
    y_train: np.ndarray,
    y_test: np.ndarray,
) -> dict[str, NaiveRule]:
    """The spec's rules in its order, each scored on ``test``."""
    rules = {}
    for name in spec.baselines:
        if spec.task == "classification":
            rules[name] = _classification_rule(name, spec, test, y_train, y_test)
        else:
            rules[name] = _regression_rule(name, spec, test, y_train, y_test)
    return rules


def _classification_rule(
    name: str, spec: ModelSpec, test: pd.DataFrame, y_train: np.ndarray, y_test: np.ndarray
) -> NaiveRule:
    if name == "coin_flip":
        losses = np.full(len(y_test), COIN_FLIP_ROW_LOSS)
        return NaiveRule(coin_flip_metrics(y_test), losses)
    if name == "base_rate":
        share_up = float(np.mean(y_train == 1))
        return NaiveRule(probability_metrics(y_test, np.full(len(y_test), share_up)), None)
    if name == "majority_class":
        predicted = np.full(len(y_test), majority_class(y_train), dtype=np.int64)
    else:
        predicted = test[name].to_numpy(dtype="float64").astype(np.int64)
    losses = row_losses(spec.primary_metric, y_test, predicted)
    return NaiveRule(classification_metrics(y_test, predicted), losses)


def _regression_rule(
    name: str, spec: ModelSpec, test: pd.DataFrame, y_train: np.ndarray, y_test: np.ndarray
) -> NaiveRule:
    if name == "training_mean":
        predicted = np.full(len(y_test), float(np.mean(y_train)))
    else:
        predicted = naive_prediction(name, spec, test)
    return NaiveRule(
        regression_metrics(y_test, predicted), row_losses(spec.primary_metric, y_test, predicted)
    )
