import math

import numpy as np
import pytest

from blofin_assets.ml.metrics import (
    evaluate_classifier,
    evaluate_regressor,
    majority_class,
    skill_score,
)


def test_majority_baseline_comes_from_training_labels_not_test() -> None:
    y_train = np.array([1, 1, 1, 0])
    y_test = np.array([0, 0, 0, 1])
    evaluation = evaluate_classifier(
        y_test, np.array([0, 0, 0, 1]), y_train=y_train, primary_metric="accuracy"
    )
    assert majority_class(y_train) == 1
    assert evaluation.baseline["accuracy"] == pytest.approx(0.25)
    assert evaluation.metrics["accuracy"] == pytest.approx(1.0)
    assert evaluation.skill == pytest.approx(1.0)


def test_classifier_no_better_than_majority_has_zero_skill() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 10_000)
    constant = np.ones_like(y)
    evaluation = evaluate_classifier(y, constant, y_train=np.ones(10), primary_metric="accuracy")
    assert evaluation.skill == pytest.approx(0.0)


def test_multiclass_uses_macro_averages() -> None:
    y = np.array([0, 1, 2, 2, 1, 0])
    pred = np.array([0, 1, 1, 2, 1, 0])
    evaluation = evaluate_classifier(y, pred, y_train=y, primary_metric="accuracy")
    assert evaluation.metrics["accuracy"] == pytest.approx(5 / 6)
    assert evaluation.metrics["recall"] == pytest.approx((1 + 1 + 0.5) / 3)


def test_regression_skill_against_persistence() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    naive = np.array([0.0, 1.0, 2.0, 3.0])  # MAE 1
    pred = np.array([1.5, 2.5, 3.5, 4.5])  # MAE 0.5
    evaluation = evaluate_regressor(y, pred, y_naive=naive, primary_metric="mae")
    assert evaluation.baseline_value == pytest.approx(1.0)
    assert evaluation.primary_value == pytest.approx(0.5)
    assert evaluation.skill == pytest.approx(0.5)
    worse = evaluate_regressor(y, y + 2.0, y_naive=naive, primary_metric="mae")
    assert worse.skill == pytest.approx(-1.0)


def test_skill_score_conventions() -> None:
    assert skill_score("accuracy", 0.6, 0.5) == pytest.approx(0.2)
    assert skill_score("rmse", 1.0, 2.0) == pytest.approx(0.5)
    assert math.isnan(skill_score("mae", 1.0, 0.0))
