"""The forward record's figures on outcome frames whose truth is known: a planted edge is
significant and noise is not (the HAC test respects the label overlap where a lag-0 test does
not), windows, calibration, the live_skill verdicts, the table round-trip, and the asset with
its checks in Dagster. The trading rule's arithmetic is in test_forward_trading.py."""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from dagster import AssetCheckKey, AssetCheckSeverity, AssetKey, AssetSelection, DagsterInstance

from blofin_assets.forward.calibration import calibration_bins, probability_scores
from blofin_assets.forward.live_skill import live_skill
from blofin_assets.forward.performance import (
    WindowPerformance,
    assess,
    primary_losses,
    scored_rows,
)
from blofin_assets.forward.record import forward_record
from blofin_assets.ml.significance import SIGNIFICANCE_LEVEL, diebold_mariano, overlap_lag
from blofin_assets.ml.specs import MODEL_SPECS, SPECS_BY_NAME, ModelSpec
from blofin_assets.storage.forward import append_forward_performance, read_forward_performance
from blofin_assets.storage.outcomes import append_outcomes
from blofin_assets_tests.conftest import Project
from blofin_assets_tests.forward_frames import (
    DIRECTION,
    MINUTE,
    RISK,
    START,
    direction_outcomes,
    outcomes,
    overlapping_sums,
)


def only_window(
    frame: pd.DataFrame, spec: ModelSpec = DIRECTION, window: str = "all"
) -> WindowPerformance:
    (result,) = [p for p in assess(frame, [spec]) if p.window == window and p.mode == "live"]
    return result


# ---- significance --------------------------------------------------------------------------
def test_a_planted_edge_over_the_coin_flip_is_significant() -> None:
    rng = np.random.default_rng(11)
    frame = pd.concat(
        direction_outcomes(rng, 2_000, edge=0.5, inst_id=inst) for inst in ("BTC-USDT", "ETH-USDT")
    )
    result = only_window(frame)
    assert result.n == 4_000 and result.instruments == 2
    assert result.hac_lag == overlap_lag(5, 2) == 2 * (4 * 2 + 1)
    assert result.model_value > 0.55 and result.baseline_value == 0.5
    assert result.skill > 0 and result.p_value < 0.001
    assert result.beats_baseline_beyond_noise


def test_a_regressor_with_a_planted_edge_beats_its_baseline_on_mae() -> None:
    rng = np.random.default_rng(5)
    truth = 50 + 10 * overlapping_sums(rng, 3_000, 5) / np.sqrt(5)
    frame = outcomes(
        model="risk_scorer",
        prediction=truth + rng.normal(scale=4.0, size=truth.size),
        realized=truth,
        baseline=truth + rng.normal(scale=6.0, size=truth.size),
        baseline_name="naive_risk",
    )
    result = only_window(frame, RISK)
    assert result.primary_metric == "mae" and result.skill > 0.2
    assert result.beats_baseline_beyond_noise and result.probability is None


def test_on_overlapping_noise_the_hac_test_holds_its_level_where_lag_zero_does_not() -> None:
    """No edge: the probability follows a walk unrelated to the labels' walk. Both are sums
    of H shocks, so the loss differences are autocorrelated over H rows."""
    rng = np.random.default_rng(2)
    horizon, trials = 10, 200
    hac = naive = 0
    for _ in range(trials):
        # Without probabilities: only the accuracy test is asked for, and it is fast.
        frame = direction_outcomes(rng, 2_000, edge=0.0, horizon=horizon).assign(probability=np.nan)
        hac += only_window(frame).beats_baseline_beyond_noise
        model_loss, baseline_loss = primary_losses(DIRECTION, scored_rows(frame))
        naive += diebold_mariano(model_loss, baseline_loss, lag=0).significant
    assert hac / trials <= 2 * SIGNIFICANCE_LEVEL
    assert naive / trials >= 3 * SIGNIFICANCE_LEVEL  # what ignoring the overlap would claim


def test_price_is_judged_on_log_returns_from_the_close() -> None:
    close = np.array([100.0, 200.0])
    frame = outcomes(
        model="price_predictor",
        prediction=close * np.exp([0.01, 0.02]),
        realized=close * np.exp([0.02, 0.02]),
        baseline=close,
        baseline_name="naive_price",
    ).assign(close=close)
    model_loss, baseline_loss = primary_losses(SPECS_BY_NAME["price_predictor"], frame)
    np.testing.assert_allclose(model_loss, [0.01, 0.0], atol=1e-12)
    np.testing.assert_allclose(baseline_loss, [0.02, 0.02], atol=1e-12)


# ---- windows -------------------------------------------------------------------------------
def test_windows_end_at_the_newest_outcome_and_select_their_rows() -> None:
    hours = 24 * 10
    frame = outcomes(
        prediction=np.ones(hours), realized=np.ones(hours), baseline=0.5, bar=pd.Timedelta(hours=1)
    )
    # Another model's newer outcome moves every window's end: a model that stopped is seen.
    later = outcomes(
        model="risk_scorer",
        prediction=[50.0],
        realized=[50.0],
        baseline=50.0,
        start=START + pd.Timedelta(hours=hours + 11),
        bar=pd.Timedelta(hours=1),
    )
    results = {p.window: p for p in assess(pd.concat([frame, later]), [DIRECTION])}
    end = START + pd.Timedelta(hours=hours + 11)
    assert {p.window_end for p in results.values()} == {end}
    # direction's newest bar is 12 hours before the end: ts > end - span leaves span - 12 h.
    assert results["24h"].n == 24 - 12
    assert results["7d"].n == 7 * 24 - 12
    assert results["all"].n == hours and results["all"].window_start is None


def test_one_row_per_bar_the_newer_version_wins_and_backtest_variants_stay_apart() -> None:
    old = outcomes(prediction=[0.0, 0.0], realized=[1.0, 1.0], baseline=0.5, version="v1")
    new = old.assign(model_version="v2", prediction=1.0, data_until=START)
    new = new[new["ts"] > START]  # v2 saw the first bar: only the second is its
    plain = old.assign(mode="backtest", model_version="backtest-2026", prediction=1.0)
    refit = old.assign(mode="backtest", model_version="backtest-refit-2026", prediction=0.0)
    rows = scored_rows(pd.concat([old, new, plain, refit]))
    live = rows[rows["mode"] == "live"]
    assert list(live["model_version"]) == ["v1", "v2"]
    results = {(p.mode, p.variant): p for p in assess(rows, [DIRECTION]) if p.window == "all"}
    assert results[("live", "served")].model_value == 0.5
    assert results[("backtest", "train-block")].model_value == 1.0
    assert results[("backtest", "refit")].model_value == 0.0


# ---- probability and calibration -----------------------------------------------------------
def test_calibration_bins_count_and_compare_predicted_with_realised() -> None:
    levels = np.round(np.arange(0.05, 1.0, 0.1), 2)
    probability = np.repeat(levels, 20)
    realized = np.concatenate([np.arange(20) < round(20 * p) for p in levels]).astype(float)
    bins = calibration_bins(probability, realized)
    assert [b.rows for b in bins] == [20] * 10
    np.testing.assert_allclose([b.mean_probability for b in bins], levels)
    np.testing.assert_allclose([b.realized_frequency for b in bins], levels)
    frame = outcomes(
        prediction=(probability > 0.5) * 1.0,
        probability=probability,
        realized=realized,
        baseline=0.5,
    )
    calibrated = probability_scores(frame, {})
    assert calibrated.calibration_error == pytest.approx(0.0, abs=1e-12)
    always_up = probability_scores(frame.assign(realized=1.0), {})
    assert always_up.calibration_error == pytest.approx(float(np.mean(1 - probability)))


def test_probability_scores_against_the_coin_flip_and_the_base_rate() -> None:
    frame = outcomes(
        prediction=[1, 1, 0, 1],
        probability=np.array([0.8, 0.7, 0.4, 0.9]),
        realized=[1, 1, 0, 0],
        baseline=0.5,
    )
    trained = probability_scores(frame, {("direction_predictor", "v1"): 0.6})
    assert trained.base_rate_source == "training"
    assert (
        trained.coin_flip_log_loss == pytest.approx(math.log(2)) and trained.coin_flip_brier == 0.25
    )
    assert trained.base_rate_brier == pytest.approx(np.mean((0.6 - np.array([1, 1, 0, 0])) ** 2))
    assert trained.brier == pytest.approx(
        np.mean((np.array([0.8, 0.7, 0.4, 0.9]) - [1, 1, 0, 0]) ** 2)
    )
    in_sample = probability_scores(frame, {})
    assert in_sample.base_rate_source == "window share of ups (in-sample)"
    assert in_sample.base_rate_log_loss == pytest.approx(math.log(2))  # half of them went up


# ---- live_skill ----------------------------------------------------------------------------
END = pd.Timestamp("2026-11-20T12:00:00Z")


def latest(day: dict, week: dict, *, week_days: float = 7.0) -> pd.DataFrame:
    """forward_performance rows of risk_scorer's live 24 h and 7 d windows."""
    base = {"model_name": "risk_scorer", "mode": "live", "variant": "served", "p_value": 0.5}
    base |= {"p_value_worse": 0.5, "promotion_skill": np.nan, "window_end": END}
    return pd.DataFrame(
        [
            base | {"window": "24h", "first_ts": END - pd.Timedelta(days=1)} | day,
            base | {"window": "7d", "first_ts": END - pd.Timedelta(days=week_days)} | week,
        ]
    )


FINE = {"n": 1_000, "skill": 0.05, "p_value_worse": 0.9}
WORSE_BEYOND_NOISE = {"n": 1_000, "skill": -0.05, "p_value_worse": 0.01}
FAR_BELOW_PROMISE = {"n": 1_000, "skill": 0.01, "promotion_skill": 0.2}
WEEK_FINE = {"n": 7_000, "skill": 0.02}
WEEK_WORSE = {"n": 7_000, "skill": -0.03, "p_value_worse": 0.001}
TOO_FEW = {"n": 10, "skill": -0.5, "p_value_worse": 0.001}


@pytest.mark.parametrize(
    ("day", "week", "week_days", "passed", "severity"),
    [
        (FINE, WEEK_FINE, 7.0, True, "WARN"),
        (WORSE_BEYOND_NOISE, WEEK_FINE, 7.0, False, "WARN"),
        (FAR_BELOW_PROMISE, WEEK_FINE, 7.0, False, "WARN"),
        ({"n": 1_000, "skill": -0.02}, WEEK_WORSE, 7.0, False, "ERROR"),
        (WORSE_BEYOND_NOISE, WEEK_WORSE, 2.0, False, "WARN"),
        (TOO_FEW, TOO_FEW, 7.0, True, "WARN"),
    ],
    ids=["pass", "warn-24h", "warn-far-below-promise", "error-7d", "young-record", "too-few"],
)
def test_live_skill_verdicts(
    day: dict, week: dict, week_days: float, passed: bool, severity: str
) -> None:
    verdict = live_skill(RISK, latest(day, week, week_days=week_days))
    assert (verdict.passed, verdict.severity) == (passed, severity), verdict.description
    assert verdict.check_name == "live_skill"


def test_live_skill_without_live_outcomes_passes_and_says_so() -> None:
    verdict = live_skill(RISK, pd.DataFrame(columns=["model_name"]))
    assert verdict.passed and "no live outcomes" in verdict.description


def test_a_model_worse_than_its_baseline_for_a_week_is_an_error_end_to_end() -> None:
    rng = np.random.default_rng(6)
    truth = rng.normal(50, 10, size=7 * 24 * 60)
    frame = outcomes(
        model="risk_scorer",
        prediction=truth + rng.normal(scale=6, size=truth.size),
        realized=truth,
        baseline=truth + rng.normal(scale=4, size=truth.size),
        baseline_name="naive_risk",
    )
    record = forward_record(frame, [RISK], bar=MINUTE, computed_at=pd.Timestamp.now(tz="UTC"))
    verdict = live_skill(RISK, record.frame())
    assert (verdict.passed, verdict.severity) == (False, "ERROR")


def test_thresholds_live_in_the_spec_but_change_nothing_learned() -> None:
    edited = dataclasses.replace(DIRECTION, live_min_predictions=7, live_skill_margin=0.5)
    assert edited.code_version == DIRECTION.code_version
    assert all(spec.live_min_predictions > 0 and spec.live_skill_margin > 0 for spec in MODEL_SPECS)


# ---- the table -----------------------------------------------------------------------------
def test_forward_performance_round_trips_and_appends_a_history(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    frame = direction_outcomes(rng, 600, edge=0.5)
    first = forward_record(
        frame, MODEL_SPECS, bar=MINUTE, computed_at=pd.Timestamp("2026-11-20T10:00Z")
    )
    second = forward_record(
        frame, MODEL_SPECS, bar=MINUTE, computed_at=pd.Timestamp("2026-11-20T11:00Z")
    )
    with duckdb.connect(str(tmp_path / "f.duckdb")) as con:
        rows = first.frame()
        assert append_forward_performance(con, rows) == len(rows) == len(MODEL_SPECS) * 3
        assert append_forward_performance(con, rows) == 0  # the same computation adds nothing
        assert append_forward_performance(con, second.frame()) == len(rows)
        stored = read_forward_performance(con)
        history = read_forward_performance(con, latest=False)
    assert len(history) == 2 * len(rows)
    assert set(stored["computed_at"]) == {pd.Timestamp("2026-11-20T11:00Z")}
    mine = stored[(stored["model_name"] == "direction_predictor") & (stored["window"] == "all")]
    expected = second.find("direction_predictor", "all")
    assert expected is not None
    row = mine.iloc[0]
    assert row["n"] == expected.n == 600
    assert row["skill"] == pytest.approx(expected.skill)
    assert row["p_value"] == pytest.approx(expected.p_value)
    assert bool(row["beats_baseline_beyond_noise"]) == expected.beats_baseline_beyond_noise
    trading = second.trading[("live", "served", "all")]
    assert row["rule_net_return"] == pytest.approx(trading["rule"].net_return)
    assert row["long_turnover"] == pytest.approx(trading["always_long"].turnover)
    assert len(pd.read_json(io.StringIO(row["calibration"]))) == 10


# ---- in Dagster ----------------------------------------------------------------------------
def test_forward_performance_in_dagster_reports_its_figures_and_checks(
    project: Project, instance: DagsterInstance
) -> None:
    rng = np.random.default_rng(12)
    bars = 2 * 24 * 60
    start = pd.Timestamp("2026-11-18T11:00:00Z")
    direction = pd.concat(
        direction_outcomes(rng, bars, edge=0.5, inst_id=inst, start=start)
        for inst in ("BTC-USDT", "ETH-USDT", "SOL-USDT")
    )
    truth = rng.normal(50, 10, size=bars)
    risk = outcomes(
        model="risk_scorer",
        prediction=truth + rng.normal(scale=6, size=bars),
        realized=truth,
        baseline=truth + rng.normal(scale=4, size=bars),
        baseline_name="naive_risk",
        start=start,
    )
    project.db_path.parent.mkdir(parents=True)
    with duckdb.connect(str(project.db_path)) as con:
        assert append_outcomes(con, pd.concat([direction, risk])) == 4 * bars
    checks = [AssetCheckKey(AssetKey(spec.name), "live_skill") for spec in MODEL_SPECS]
    selection = AssetSelection.assets("forward_performance") | AssetSelection.checks(*checks)
    result = project.materialize(instance, selection)
    (event,) = result.asset_materializations_for_node("forward_performance")
    metadata = event.metadata
    keys = list(metadata)
    assert keys[:4] == [
        "direction_predictor_live_skill_24h",
        "direction_predictor_live_skill_7d",
        "direction_predictor_live_n_24h",
        "direction_predictor_live_p_value_24h",
    ]
    assert metadata["direction_predictor_live_n_24h"].value == 3 * 24 * 60
    assert metadata["direction_predictor_live_skill_24h"].value > 0
    assert "direction_rule_live_net_return_24h" in keys and "always_long_live_net_return_7d" in keys
    assert keys.index("direction_rule_live_net_return_24h") < keys.index("performance")
    assert metadata["equity_curves"].value.startswith("![equity curves](data:image/png;base64,")
    # Three windows live for the five and the ensemble, and the ensemble's shadow track.
    assert metadata["dagster/row_count"].value == (len(MODEL_SPECS) + 1) * 3 + 3
    assert metadata["direction_ensemble_shadow_n_24h"].value == 0  # no rejected version scored
    evaluations = {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == {spec.name for spec in MODEL_SPECS}
    assert evaluations["direction_predictor"].passed
    # Worse beyond noise, but two days of record are not the week an ERROR needs.
    assert not evaluations["risk_scorer"].passed
    assert evaluations["risk_scorer"].severity == AssetCheckSeverity.WARN
    assert evaluations["price_predictor"].passed  # no live outcomes: not judged
