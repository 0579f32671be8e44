"""Each gate passes on an honest market and fails on one built to trip it, using the real
feature, target and training code."""

from __future__ import annotations

import pandas as pd
import pytest

from blofin_assets.market.sources.demo import demo_candles
from blofin_assets.ml.gates import leakage_gate, regression_gate, skill_gate
from blofin_assets.ml.specs import SPECS_BY_NAME
from blofin_assets.ml.training import TrainedModel, train_model
from blofin_assets_tests.markets import iid_market, labelled_rows, periodic_market

END = pd.Timestamp("2026-11-20T12:00", tz="UTC")


def train_on(candles: pd.DataFrame, model: str) -> TrainedModel:
    return train_model(SPECS_BY_NAME[model], labelled_rows(candles, horizon=5), horizon=5)


@pytest.fixture(scope="module")
def clustered_market() -> pd.DataFrame:
    return demo_candles(["BTC-USDT", "ETH-USDT", "SOL-USDT"], "1m", END - pd.Timedelta(days=4), END)


@pytest.fixture(scope="module")
def volatility_on_clustered(clustered_market: pd.DataFrame) -> TrainedModel:
    return train_on(clustered_market, "volatility_regressor")


def test_leakage_alarm_quiet_on_an_honest_market(clustered_market: pd.DataFrame) -> None:
    outcome = leakage_gate(train_on(clustered_market, "direction_predictor"))
    assert outcome.passed, outcome.description


def test_leakage_alarm_fires_on_a_perfectly_periodic_market() -> None:
    model = train_on(periodic_market(3 * 1440), "direction_predictor")
    outcome = leakage_gate(model)
    assert model.evaluation.metrics["accuracy"] > 0.75
    assert not outcome.passed and outcome.blocks_serving
    assert "LEAKAGE" in outcome.description
    assert outcome.metadata["test_accuracy"] > 0.75


def test_skill_gate_passes_when_volatility_clusters(volatility_on_clustered: TrainedModel) -> None:
    outcome = skill_gate(volatility_on_clustered)
    assert outcome.passed, outcome.description
    assert outcome.metadata["skill"] > 0


def test_skill_gate_warns_when_nothing_is_predictable() -> None:
    outcome = skill_gate(train_on(iid_market(3 * 1440), "price_predictor"))
    assert not outcome.passed
    assert outcome.severity == "WARN" and not outcome.blocks_serving


def test_regression_gate_passes_against_its_own_history(
    volatility_on_clustered: TrainedModel,
) -> None:
    history = [volatility_on_clustered.evaluation.skill] * 3
    assert regression_gate(volatility_on_clustered, history).passed
    first = regression_gate(volatility_on_clustered, [])
    assert first.passed and "No promoted history" in first.description


def test_regression_gate_errors_when_clustering_gives_way_to_iid(
    volatility_on_clustered: TrainedModel,
) -> None:
    """A volatility model promoted on a clustered market, then retrained on an i.i.d. one."""
    history = [volatility_on_clustered.evaluation.skill] * 5
    retrained = train_on(iid_market(4 * 1440), "volatility_regressor")
    outcome = regression_gate(retrained, history)
    assert not outcome.passed and outcome.severity == "ERROR", outcome.description
    assert outcome.metadata["skill_drop"] > retrained.spec.regression_error_drop


def test_regression_gate_warns_on_a_small_drop(volatility_on_clustered: TrainedModel) -> None:
    spec = volatility_on_clustered.spec
    skill = volatility_on_clustered.evaluation.skill
    midway = (spec.regression_warn_drop + spec.regression_error_drop) / 2
    outcome = regression_gate(volatility_on_clustered, [skill + midway])
    assert not outcome.passed and outcome.severity == "WARN"
