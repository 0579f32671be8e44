"""Tuning (ml/tuning.py) and adoption (ml/adoption.py): folds purged per instrument, a search
that never reads the test block, and a parameter set adopted only on evidence."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution

from blofin_assets.ml.adoption import decide, run_tuning
from blofin_assets.ml.search_spaces import search_space, to_search_values
from blofin_assets.ml.specs import MODEL_SPECS, SPECS_BY_NAME, ModelSpec
from blofin_assets.ml.splits import purged_split
from blofin_assets.ml.training import DEFAULT_TEST_FRACTION
from blofin_assets.ml.tuning import TrialRecord, TuningBudget, time_ordered, tune
from blofin_assets.ml.walk_forward import walk_forward_folds
from blofin_assets_tests.markets import iid_market, labelled_rows

HORIZON = 5
# One XGBoost thread: the test machine is shared, and threads are not what is tested.
DIRECTION = SPECS_BY_NAME["direction_predictor"]
DIRECTION = DIRECTION.with_params({**DIRECTION.params, "n_jobs": 1})
BUDGET = TuningBudget(n_trials=8, timeout_seconds=None)


@pytest.fixture(scope="module")
def iid_rows() -> pd.DataFrame:
    return time_ordered(labelled_rows(iid_market(3400), horizon=HORIZON))


@pytest.fixture(scope="module")
def planted_rows(iid_rows: pd.DataFrame) -> pd.DataFrame:
    """Direction is the sign of ret_1 x ret_60 (plus noise): an interaction that single splits
    cannot express and deeper trees learn easily."""
    rows = iid_rows.copy()
    rng = np.random.default_rng(3)
    z = (rows["ret_1"] / rows["ret_1"].std()) * (rows["ret_60"] / rows["ret_60"].std())
    rows["target_direction"] = (z + rng.normal(0.0, 0.3, len(rows)) > 0).astype("float64")
    return rows


# Stumps, two of them: they underfit an interaction by construction.
UNDERFIT = replace(DIRECTION, params={**DIRECTION.params, "n_estimators": 2, "max_depth": 1})


@pytest.fixture(scope="module")
def planted_outcome(planted_rows: pd.DataFrame):
    return run_tuning(
        UNDERFIT, planted_rows, horizon=HORIZON, params_in_force=UNDERFIT.params, budget=BUDGET
    )


def outage_rows() -> pd.DataFrame:
    """Three instruments over 200 minutes; ETH stops from minute 100 to 139."""
    minutes = pd.date_range("2026-01-01", periods=200, freq="min", tz="UTC")
    frames = []
    for inst in ("BTC-USDT", "ETH-USDT", "SOL-USDT"):
        ts = (
            minutes
            if inst != "ETH-USDT"
            else minutes[(np.arange(200) < 100) | (np.arange(200) >= 140)]
        )
        frames.append(pd.DataFrame({"inst_id": inst, "ts": ts}))
    return pd.concat(frames).sort_values(["ts", "inst_id"], kind="stable").reset_index(drop=True)


def test_walk_forward_folds_purge_each_instrument_and_validate_each_block_once() -> None:
    rows = outage_rows()
    label_end = rows.groupby("inst_id")["ts"].shift(-HORIZON)  # each row's own H-th next row
    folds = walk_forward_folds(rows["ts"], rows["inst_id"], n_folds=3, horizon=HORIZON)
    assert len(folds) == 3
    starts = [fold.test_start for fold in folds]
    assert starts == sorted(starts) and len(set(starts)) == 3
    validated = np.concatenate([fold.test_index for fold in folds])
    assert len(validated) == len(np.unique(validated))  # disjoint blocks
    assert (rows["ts"].iloc[validated] >= starts[0]).all()
    assert len(validated) == int((rows["ts"] >= starts[0]).sum())  # and they cover the rest
    for k, fold in enumerate(folds):
        train, valid = rows.iloc[fold.train_index], rows.iloc[fold.test_index]
        end = starts[k + 1] if k + 1 < len(starts) else rows["ts"].max() + pd.Timedelta("1min")
        assert ((valid["ts"] >= fold.test_start) & (valid["ts"] < end)).all()
        assert train["ts"].max() < valid["ts"].min()
        # Exactly the rows whose own label ends before the block train: none more, none fewer.
        eligible = label_end.notna() & (label_end < fold.test_start)
        assert np.array_equal(fold.train_index, np.flatnonzero(eligible))
    # The outage straddles fold 2's start (minute 120): ETH's last bars before it label
    # themselves with bars inside that block, 20 minutes after it begins. Purged; BTC's kept.
    assert starts[1] == pd.Timestamp("2026-01-01 02:00", tz="UTC")
    before_outage = rows["ts"].between("2026-01-01 01:35", "2026-01-01 01:39")
    trained = rows.iloc[folds[1].train_index]
    assert not (trained["inst_id"].eq("ETH-USDT") & before_outage.iloc[folds[1].train_index]).any()
    assert (trained["inst_id"].eq("BTC-USDT") & before_outage.iloc[folds[1].train_index]).sum() == 5


def test_walk_forward_folds_refuse_too_few_timestamps() -> None:
    ts = pd.date_range("2026-01-01", periods=4, freq="min", tz="UTC")
    with pytest.raises(ValueError, match="too few timestamps for 5 walk-forward folds: 4"):
        walk_forward_folds(ts, ["BTC-USDT"] * 4, n_folds=5, horizon=1)


@pytest.mark.parametrize("spec", MODEL_SPECS, ids=lambda spec: spec.name)
def test_every_search_space_holds_its_defaults_and_searches_no_fixed_parameter(
    spec: ModelSpec,
) -> None:
    space = search_space(spec)
    values = to_search_values(spec, spec.params)
    assert set(values) == set(space)  # every searched parameter has a default in the spec
    for name, distribution in space.items():
        value = values[name]
        if isinstance(distribution, CategoricalDistribution):
            assert value in distribution.choices, name
        else:
            assert distribution.low <= value <= distribution.high, name
    assert not {"n_jobs", "random_state", "tree_method", "max_samples", "batch_size"} & set(space)


def test_search_space_refuses_an_unknown_model() -> None:
    with pytest.raises(ValueError, match="no search space for model 'ensemble'"):
        search_space(replace(DIRECTION, name="ensemble"))


def test_planted_signal_underfit_by_the_defaults_is_tuned_and_adopted(
    planted_outcome,
) -> None:
    result, decision = planted_outcome.result, planted_outcome.decision
    assert [t.trial for t in result.trials] == list(range(BUDGET.n_trials))
    assert result.current.params["max_depth"] == 1  # trial 0 is the set in force
    assert result.best.trial != 0
    assert result.best.mean_score > result.current.mean_score + 0.1
    assert decision.adopted, decision.reason
    assert decision.candidate_value > decision.current_value
    assert decision.p_value < 0.05
    assert decision.rows > 500
    assert planted_outcome.params_after["max_depth"] == result.best.params["max_depth"]
    assert planted_outcome.params_after != dict(UNDERFIT.params)
    assert planted_outcome.source == "tuned"
    assert "adopted" in decision.reason and f"{decision.p_value:.3g}" in decision.reason


def test_on_an_iid_market_nothing_is_adopted(iid_rows: pd.DataFrame) -> None:
    outcome = run_tuning(
        DIRECTION, iid_rows, horizon=HORIZON, params_in_force=DIRECTION.params, budget=BUDGET
    )
    assert not outcome.decision.adopted, outcome.decision.reason
    assert outcome.params_after == dict(DIRECTION.params)
    assert outcome.source == "default"


def test_tuning_never_reads_the_test_block(planted_rows: pd.DataFrame, planted_outcome) -> None:
    result = planted_outcome.result
    split = purged_split(
        planted_rows["ts"],
        planted_rows["inst_id"],
        test_fraction=DEFAULT_TEST_FRACTION,
        horizon=HORIZON,
    )
    assert result.test_start == split.test_start
    assert result.tuning_end < split.test_start
    used = np.concatenate([np.r_[f.train_index, f.test_index] for f in result.fold_splits])
    assert set(used) <= set(split.train_index)  # the outer training block, purge respected
    # Scramble every label and feature of the test block: the search must not notice.
    scrambled = planted_rows.copy()
    test = scrambled.index[split.test_index]
    rng = np.random.default_rng(0)
    scrambled.loc[test, "target_direction"] = rng.integers(0, 2, len(test)).astype("float64")
    for column in DIRECTION.features:
        scrambled.loc[test, column] = rng.normal(0.0, 1.0, len(test))
    again = tune(
        UNDERFIT, scrambled, horizon=HORIZON, params_in_force=UNDERFIT.params, budget=BUDGET
    )
    assert [(t.params, t.fold_scores) for t in again.trials] == [
        (t.params, t.fold_scores) for t in result.trials
    ]


def test_tuning_is_seeded(planted_rows: pd.DataFrame, planted_outcome) -> None:
    seen: list[TrialRecord] = []
    again = tune(
        UNDERFIT,
        planted_rows,
        horizon=HORIZON,
        params_in_force=UNDERFIT.params,
        budget=BUDGET,
        on_trial=seen.append,
    )
    first = planted_outcome.result.trials
    assert [(t.params, t.fold_scores, t.state) for t in again.trials] == [
        (t.params, t.fold_scores, t.state) for t in first
    ]
    assert seen == again.trials  # every trial reported as it ended
    assert len({t.params_id for t in first}) == len(first)  # and they differ from each other


def test_a_trial_that_cannot_fit_is_recorded_failed_and_the_search_goes_on(
    iid_rows: pd.DataFrame,
) -> None:
    optuna.logging.set_verbosity(optuna.logging.INFO)
    broken = {**DIRECTION.params, "subsample": 2.0}  # XGBoost refuses it
    result = tune(
        DIRECTION,
        iid_rows,
        horizon=HORIZON,
        params_in_force=broken,
        budget=TuningBudget(n_trials=3, timeout_seconds=None, max_rows=3000),
    )
    assert optuna.logging.get_verbosity() == optuna.logging.INFO  # restored
    assert [t.state for t in result.trials] == ["failed", "complete", "complete"]
    assert "subsample" in result.current.error and result.current.mean_score is None
    assert result.best.trial != 0
    assert result.rows <= 3000 + 3 and result.rows > 2500  # whole timestamps kept


def test_the_timeout_stops_new_trials(iid_rows: pd.DataFrame) -> None:
    result = tune(
        DIRECTION,
        iid_rows,
        horizon=HORIZON,
        params_in_force=DIRECTION.params,
        budget=TuningBudget(n_trials=1000, timeout_seconds=0.5, max_rows=2000),
    )
    assert 1 <= len(result.trials) < 1000


def test_decide_runs_no_backtest_for_the_set_in_force_and_refuses_overlapping_evidence(
    iid_rows: pd.DataFrame,
) -> None:
    same = decide(
        DIRECTION,
        iid_rows,
        horizon=HORIZON,
        current_params=DIRECTION.params,
        candidate_params=dict(DIRECTION.params),
        tuning_end=iid_rows["ts"].min(),
    )
    assert not same.adopted and same.rows == 0 and same.p_value is None
    assert "is the parameter set in force" in same.reason
    with pytest.raises(ValueError, match="evidence must come from data tuning never saw"):
        decide(
            DIRECTION,
            iid_rows,
            horizon=HORIZON,
            current_params=DIRECTION.params,
            candidate_params={**DIRECTION.params, "max_depth": 2},
            tuning_end=iid_rows["ts"].max(),
        )
