"""Skill is measured against the strongest naive rule on the test rows, beyond noise: markets
whose truth is known (pure noise, a jump, AR(1) persistence, a planted volume signal) show
that no model claims skill a one-line rule already has, and that a real signal is found."""

from __future__ import annotations

import pandas as pd
import pytest

from blofin_assets.ml.gates import skill_gate
from blofin_assets.ml.specs import MODEL_SPECS, SPECS_BY_NAME
from blofin_assets.ml.training import TrainedModel, train_model
from blofin_assets_tests.markets import (
    ar1_market,
    iid_market,
    jump_market,
    labelled_rows,
    volume_signal_market,
)

BARS = 4 * 1440
NOISE_SKILL = 0.03  # at most this much skill on a market where nothing is knowable


def train_all(market: pd.DataFrame) -> dict[str, TrainedModel]:
    rows = labelled_rows(market, horizon=5)
    return {spec.name: train_model(spec, rows, horizon=5) for spec in MODEL_SPECS}


@pytest.fixture(scope="module")
def on_noise() -> dict[str, TrainedModel]:
    return train_all(iid_market(BARS))


@pytest.mark.parametrize("name", [spec.name for spec in MODEL_SPECS])
def test_on_pure_noise_no_model_has_skill_and_none_beats_its_baseline(
    on_noise: dict[str, TrainedModel], name: str
) -> None:
    model = on_noise[name]
    verdict = skill_gate(model)
    assert model.evaluation.skill <= NOISE_SKILL, verdict.description
    assert not verdict.passed, verdict.description
    assert set(model.evaluation.baselines) == set(SPECS_BY_NAME[name].baselines)


def test_momentum_faces_the_rule_that_knows_the_trailing_half(
    on_noise: dict[str, TrainedModel],
) -> None:
    """Its label is forward minus trailing return; against the class shares alone noise
    looked like skill, against the zero-forward rule it is none."""
    evaluation = on_noise["momentum_classifier"].evaluation
    assert evaluation.baseline_name == "naive_momentum_zero_forward"
    assert evaluation.skills()["majority_class"] > 0.2  # the straw man it used to beat
    assert evaluation.skill <= NOISE_SKILL


def test_a_price_jump_in_the_training_rows_does_not_pick_a_weak_baseline() -> None:
    models = train_all(jump_market(BARS))
    for name in ("risk_scorer", "volatility_regressor"):
        evaluation = models[name].evaluation
        assert evaluation.skill <= NOISE_SKILL, (name, evaluation.skills())
        assert evaluation.baseline_name != SPECS_BY_NAME[name].baselines[0]  # not persistence
        assert evaluation.skills()[SPECS_BY_NAME[name].baselines[0]] > evaluation.skill


def test_on_a_persistent_market_direction_is_judged_against_persistence() -> None:
    """AR(1) returns: the majority class is a straw man; the last bar's direction is the rule
    to beat, and what the verdict says agrees with the skill over it."""
    model = train_model(
        SPECS_BY_NAME["direction_predictor"], labelled_rows(ar1_market(BARS)), horizon=5
    )
    evaluation = model.evaluation
    assert evaluation.baseline_name in ("naive_direction_last_bar", "naive_direction_last_h")
    assert evaluation.skills()["majority_class"] > evaluation.skill
    verdict = skill_gate(model)
    assert verdict.passed == (evaluation.skill > 0 and evaluation.comparison.significant)
    if not verdict.passed:
        assert "not" in verdict.description and evaluation.baseline_name in verdict.description


def test_a_planted_signal_is_found_and_beats_every_rule_beyond_noise() -> None:
    rows = labelled_rows(volume_signal_market(BARS))
    for name in ("direction_predictor", "price_predictor"):
        model = train_model(SPECS_BY_NAME[name], rows, horizon=5)
        verdict = skill_gate(model)
        assert verdict.passed, verdict.description
        assert model.evaluation.comparison.p_value < 0.01
        assert min(model.evaluation.skills().values()) > 0.05
