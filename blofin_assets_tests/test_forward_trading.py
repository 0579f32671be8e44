"""direction_predictor's trading rule priced by hand: positions, turnover, fees and net on a
three-bar example, the 1/H sizing of overlapping trades, always-long and flat, drawdown and
the annualised Sharpe."""

from __future__ import annotations

import math

import numpy as np
import pytest

from blofin_assets.forward.trading import (
    TradingRule,
    max_drawdown,
    rule_signals,
    simulate,
    strategies,
)
from blofin_assets_tests.forward_frames import MINUTE, direction_outcomes, outcomes


def test_fee_arithmetic_on_three_bars_by_hand() -> None:
    """H = 1: signals +1, +1, -1 are positions 1, 1, -1 and then 0 when the last trade exits;
    position changes 1, 0, 2, 1 are a turnover of 4 units, each paying 6 bps."""
    returns = np.array([0.01, -0.02, 0.03])
    frame = outcomes(
        prediction=[1, 1, 0],
        probability=np.array([0.9, 0.8, 0.1]),
        realized=[1, 0, 1],
        baseline=0.5,
        horizon=1,
        realized_return=returns,
    )
    signals = rule_signals(frame["probability"].to_numpy(), 0.02)
    assert list(signals) == [1.0, 1.0, -1.0]
    result = simulate(frame, signals, horizon=1, bar=MINUTE, fee_bps=6.0, name="rule")
    gross = math.expm1(0.01) + math.expm1(-0.02) - math.expm1(0.03)
    assert result.turnover == pytest.approx(4.0)
    assert result.fees == pytest.approx(4 * 0.0006)
    assert result.gross_return == pytest.approx(gross)
    assert result.net_return == pytest.approx(gross - 0.0024)
    assert result.trades == 3 and result.hit_rate == pytest.approx(1 / 3)
    # Fees on the bar they are paid, each trade's return on its exit bar.
    per_bar = [-0.0006, math.expm1(0.01), math.expm1(-0.02) - 0.0012, -math.expm1(0.03) - 0.0006]
    np.testing.assert_allclose(result.equity.to_numpy(), np.cumsum(per_bar))


def test_overlapping_h_bar_trades_add_up_to_at_most_one_unit() -> None:
    """H = 2: each signal is half a unit for two bars; two longs in a row make one unit."""
    frame = outcomes(
        prediction=[1, 1, 0],
        probability=np.array([0.9, 0.9, 0.5]),
        realized=[1, 1, 0],
        baseline=0.5,
        horizon=2,
        realized_return=np.array([0.02, 0.02, 0.0]),
    )
    result = simulate(
        frame, np.array([1.0, 1.0, 0.0]), horizon=2, bar=MINUTE, fee_bps=10.0, name="rule"
    )
    assert result.turnover == pytest.approx(2.0)  # 0.5 + 0.5 in, 0.5 + 0.5 out
    assert result.fees == pytest.approx(2 * 0.001)
    assert result.gross_return == pytest.approx(math.expm1(0.02))  # two halves of one trade


def test_always_long_pays_one_entry_and_one_exit_and_flat_pays_nothing() -> None:
    rng = np.random.default_rng(4)
    returns = rng.normal(scale=1e-3, size=500)
    frame = outcomes(
        prediction=np.ones(500),
        probability=np.full(500, 0.5),
        realized=(returns > 0) * 1.0,
        baseline=0.5,
        horizon=1,
        realized_return=returns,
    )
    results = strategies(frame, TradingRule(margin=0.02, fee_bps=6.0), bar=MINUTE)
    long, flat, rule = results["always_long"], results["always_flat"], results["rule"]
    assert long.turnover == pytest.approx(2.0) and long.fees == pytest.approx(0.0012)
    assert long.gross_return == pytest.approx(np.expm1(returns).sum())
    assert long.trades == 500
    assert rule.trades == 0 and rule.net_return == 0.0  # p = 0.5 is inside the margin
    assert flat.net_return == 0.0 and flat.turnover == 0.0 and flat.max_drawdown == 0.0
    assert math.isnan(flat.sharpe) and math.isnan(flat.hit_rate)


def test_drawdown_is_the_largest_fall_from_a_running_peak_that_starts_at_zero() -> None:
    assert max_drawdown(np.array([0.1, 0.3, 0.1, 0.2, -0.1, 0.0])) == pytest.approx(0.4)
    assert max_drawdown(np.array([-0.1, -0.3, -0.2])) == pytest.approx(0.3)
    assert max_drawdown(np.array([0.1, 0.2])) == 0.0


def test_the_sharpe_is_annualised_over_bars_per_year_with_the_long_run_deviation() -> None:
    rng = np.random.default_rng(8)
    frame = direction_outcomes(rng, 3_000, edge=1.0, horizon=1)
    result = strategies(frame, TradingRule(fee_bps=0.0), bar=MINUTE)["rule"]
    net = np.diff(np.concatenate([[0.0], result.equity.to_numpy()]))
    plain = net.mean() / net.std() * math.sqrt(365 * 24 * 60)
    assert result.sharpe == pytest.approx(plain, rel=0.2)  # H = 1: no overlap to correct
