import math

import numpy as np
import pandas as pd
import pytest

from blofin_assets.ml.baselines import naive_rules
from blofin_assets.ml.metrics import (
    Evaluation,
    classification_metrics,
    coin_flip_metrics,
    majority_class,
    probability_metrics,
    regression_metrics,
    skill_score,
    strongest_baseline,
)
from blofin_assets.ml.specs import SPECS_BY_NAME

MOMENTUM = SPECS_BY_NAME["momentum_classifier"]
DIRECTION = SPECS_BY_NAME["direction_predictor"]


def evaluation(model: dict[str, float], baselines: dict[str, dict[str, float]], metric: str):
    return Evaluation(
        metrics=model,
        baselines=baselines,
        primary_metric=metric,
        baseline_name=strongest_baseline(baselines, metric),
    )


def test_majority_baseline_comes_from_training_labels_not_test() -> None:
    y_train = np.array([1, 1, 1, 0])
    y_test = np.array([0, 0, 0, 1])
    test = pd.DataFrame({"naive_momentum_zero_forward": [2.0, 2.0, 2.0, 2.0]})
    rules = naive_rules(MOMENTUM, train=test, test=test, y_train=y_train, y_test=y_test)
    assert majority_class(y_train) == 1
    assert rules["majority_class"].metrics["accuracy"] == pytest.approx(0.25)
    assert list(rules["majority_class"].losses) == [1.0, 1.0, 1.0, 0.0]
    model = classification_metrics(y_test, np.array([0, 0, 0, 1]))
    scored = evaluation(model, {n: r.metrics for n, r in rules.items()}, "accuracy")
    assert scored.baseline_name == "majority_class"  # the zero-forward rule scored 0 here
    assert scored.metrics["accuracy"] == pytest.approx(1.0)
    assert scored.skill == pytest.approx(1.0)


def test_classifier_no_better_than_the_strongest_rule_has_zero_skill() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 10_000)
    constant = np.ones_like(y)
    scored = evaluation(
        classification_metrics(y, constant),
        {"majority_class": classification_metrics(y, constant), "coin_flip": coin_flip_metrics(y)},
        "accuracy",
    )
    assert scored.skill == pytest.approx(0.0)


def test_the_strongest_rule_is_chosen_on_the_test_rows() -> None:
    """A rule that was weak on the training rows but strong on the test rows is the baseline."""
    y = np.array([1.0, 2.0, 3.0, 4.0])
    level = np.full(4, 2.5)  # MAE 1.0 on these rows
    persistence = np.array([1.1, 2.1, 3.1, 4.1])  # MAE 0.1 on these rows
    model = np.array([1.5, 2.5, 3.5, 4.5])  # MAE 0.5
    scored = evaluation(
        regression_metrics(y, model),
        {"level": regression_metrics(y, level), "persistence": regression_metrics(y, persistence)},
        "mae",
    )
    assert scored.baseline_name == "persistence"
    assert scored.skill == pytest.approx(1 - 0.5 / 0.1)
    assert scored.skills() == pytest.approx({"level": 0.5, "persistence": 1 - 0.5 / 0.1})


def test_multiclass_uses_macro_averages() -> None:
    y = np.array([0, 1, 2, 2, 1, 0])
    pred = np.array([0, 1, 1, 2, 1, 0])
    metrics = classification_metrics(y, pred)
    assert metrics["accuracy"] == pytest.approx(5 / 6)
    assert metrics["recall"] == pytest.approx((1 + 1 + 0.5) / 3)


def test_regression_skill_against_persistence() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    naive = np.array([0.0, 1.0, 2.0, 3.0])  # MAE 1
    pred = np.array([1.5, 2.5, 3.5, 4.5])  # MAE 0.5
    scored = evaluation(regression_metrics(y, pred), {"p": regression_metrics(y, naive)}, "mae")
    assert scored.baseline_value == pytest.approx(1.0)
    assert scored.primary_value == pytest.approx(0.5)
    assert scored.skill == pytest.approx(0.5)
    worse = evaluation(regression_metrics(y, y + 2.0), {"p": regression_metrics(y, naive)}, "mae")
    assert worse.skill == pytest.approx(-1.0)


def test_coin_flip_and_base_rate_score_what_they_score_in_expectation() -> None:
    y = np.array([1, 1, 1, 0])
    coin = coin_flip_metrics(y)
    assert coin["accuracy"] == 0.5
    assert coin["precision"] == pytest.approx(0.75)
    assert coin["recall"] == 0.5
    assert coin["log_loss"] == pytest.approx(math.log(2))
    assert coin["brier"] == pytest.approx(0.25)
    # The coin's expected accuracy over many fair draws agrees.
    draws = np.random.default_rng(1).integers(0, 2, (20_000, len(y)))
    assert (draws == y).mean() == pytest.approx(0.5, abs=0.01)
    train = pd.DataFrame({"x": [0.0] * 4})
    rules = naive_rules(
        DIRECTION,
        train=train,
        test=pd.DataFrame(
            {"naive_direction_last_h": [1.0] * 4, "naive_direction_last_bar": [0.0] * 4}
        ),
        y_train=np.array([1, 0, 0, 0]),
        y_test=y,
    )
    assert rules["base_rate"].losses is None  # a probability: it competes on log loss and Brier
    assert rules["base_rate"].metrics == pytest.approx(probability_metrics(y, np.full(4, 0.25)))
    assert rules["naive_direction_last_h"].metrics["accuracy"] == pytest.approx(0.75)
    assert rules["naive_direction_last_bar"].metrics["accuracy"] == pytest.approx(0.25)
    assert strongest_baseline({n: r.metrics for n, r in rules.items()}, "log_loss") == "coin_flip"


def test_skill_score_conventions() -> None:
    assert skill_score("accuracy", 0.6, 0.5) == pytest.approx(0.2)
    assert skill_score("rmse", 1.0, 2.0) == pytest.approx(0.5)
    assert skill_score("log_loss", 0.5, 1.0) == pytest.approx(0.5)
    assert math.isnan(skill_score("mae", 1.0, 0.0))
