"""Targets: hand-computed labels, forward-only windows, dropped (never filled) edges."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from blofin_assets.ml.features import compute_features
from blofin_assets.ml.targets import (
    MOMENTUM_THRESHOLD,
    NAIVE_COLUMNS,
    RISK_REFERENCE_BARS,
    TARGET_COLUMNS,
    compute_targets,
)

START = pd.Timestamp("2024-05-01", tz="UTC")
ALL_COLUMNS = [*TARGET_COLUMNS, *NAIVE_COLUMNS]


def frame_from_close(inst_id: str, close: np.ndarray) -> pd.DataFrame:
    close = np.asarray(close, dtype=float)
    return pd.DataFrame(
        {
            "inst_id": inst_id,
            "ts": pd.date_range(START, periods=len(close), freq="1min"),
            "open": close,
            "high": close,
            "low": close,
            "close": close,
            "volume": 1.0,
        }
    )


def random_walk(inst_id: str, n: int, seed: int, price: float = 100.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return frame_from_close(inst_id, price * np.exp(np.cumsum(rng.normal(0.0, 1e-3, n))))


# ---------------------------------------------------------------- hand-computed values

A = 0.001  # history: log price alternates 0, A, 0, A, ... so every 1-bar return is +-A


def zigzag_then(forward: list[float]) -> np.ndarray:
    """RISK_REFERENCE_BARS + 1 zigzag bars ending at exactly 100, then the given closes."""
    k = np.arange(RISK_REFERENCE_BARS + 1)
    history = 100.0 * np.exp(np.where(k % 2 == 1, A, 0.0))
    assert history[-1] == 100.0  # RISK_REFERENCE_BARS is even
    return np.concatenate((history, forward))


CASES = {
    # name: (closes at t+1..t+5, direction, momentum)
    "ACC-USDT": ([100.2, 100.1, 100.4, 100.3, 100.6], 1, 2),
    "DEC-USDT": ([99.8, 99.9, 99.7, 99.6, 99.5], 0, 0),
    "MID-USDT": ([100.05, 99.95, 100.0, 99.92, 99.95], 0, 1),
}


def test_hand_computed_labels_and_baselines():
    frame = pd.concat(
        [frame_from_close(name, zigzag_then(fwd)) for name, (fwd, _, _) in CASES.items()],
        ignore_index=True,
    )
    out = compute_targets(frame, horizon=5)
    # One labelled row per instrument: t = RISK_REFERENCE_BARS, the only t with t+5 in range.
    assert out["inst_id"].tolist() == sorted(CASES)
    assert (out["ts"] == START + pd.Timedelta(minutes=RISK_REFERENCE_BARS)).all()

    # 720 returns of +A and 720 of -A: mean 0, sample std A * sqrt(1440 / 1439).
    sigma = A * math.sqrt(1440 / 1439)
    for _, row in out.iterrows():
        fwd, direction, momentum = CASES[row["inst_id"]]
        path = [100.0, *fwd]
        vol = math.sqrt(sum(math.log(b / a) ** 2 for a, b in itertools.pairwise(path)))
        assert row["target_direction"] == direction
        assert row["target_price"] == fwd[-1]
        assert row["target_volatility"] == pytest.approx(vol, rel=1e-9)
        logistic = 1 / (1 + math.exp(-2 * math.log(vol / (sigma * math.sqrt(5)))))
        assert row["target_risk"] == pytest.approx(100 * logistic, rel=1e-9)
        # back return: close[t] = 100, close[t-5] = 100 * e^A (t - 5 is odd)
        z = (math.log(fwd[-1] / 100) - (-A)) / (sigma * math.sqrt(10))
        assert (z > MOMENTUM_THRESHOLD, z < -MOMENTUM_THRESHOLD) == (momentum == 2, momentum == 0)
        assert row["target_momentum"] == momentum
        # Baselines: the last five returns are all +-A, so naive vol = A * sqrt(5) and
        # naive risk = 100 * (A / sigma)^2 / (1 + (A / sigma)^2) = 100 * 1439 / 2879.
        assert row["naive_price"] == 100.0
        assert row["naive_volatility"] == pytest.approx(A * math.sqrt(5), rel=1e-9)
        assert row["naive_risk"] == pytest.approx(100 * 1439 / 2879, rel=1e-9)


def reference_targets(close: np.ndarray, horizon: int) -> pd.DataFrame:
    """Row-by-row definitions with plain numpy, for every labelled t of one instrument."""
    r = np.concatenate(([np.nan], np.diff(np.log(close))))
    rows = []
    for t in range(RISK_REFERENCE_BARS, len(close) - horizon):
        sigma = np.std(r[t - RISK_REFERENCE_BARS + 1 : t + 1], ddof=1)
        fwd_vol = np.sqrt(np.sum(r[t + 1 : t + horizon + 1] ** 2))
        naive_vol = np.sqrt(np.sum(r[t - horizon + 1 : t + 1] ** 2))
        scale = sigma * np.sqrt(horizon)
        z = (np.log(close[t + horizon] / close[t]) - np.log(close[t] / close[t - horizon])) / (
            sigma * np.sqrt(2 * horizon)
        )
        z_zero_forward = -np.log(close[t] / close[t - horizon]) / (sigma * np.sqrt(2 * horizon))
        rows.append(
            {
                "target_direction": int(close[t + horizon] > close[t]),
                "target_risk": 100 / (1 + np.exp(-2 * np.log(fwd_vol / scale))),
                "target_price": close[t + horizon],
                "target_momentum": 0 if z < -0.5 else (2 if z > 0.5 else 1),
                "target_volatility": fwd_vol,
                "naive_risk": 100 / (1 + np.exp(-2 * np.log(naive_vol / scale))),
                "naive_price": close[t],
                "naive_volatility": naive_vol,
                "naive_risk_level": 50.0,
                "naive_volatility_level": scale,
                "naive_direction_last_h": float(close[t] > close[t - horizon]),
                "naive_direction_last_bar": float(close[t] > close[t - 1]),
                "naive_momentum_zero_forward": (
                    0.0 if z_zero_forward < -0.5 else (2.0 if z_zero_forward > 0.5 else 1.0)
                ),
            }
        )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("horizon", [1, 5, 12])
def test_every_column_matches_the_row_by_row_reference(horizon):
    frames = [random_walk("BTC-USDT", 1700, 1, 60_000.0), random_walk("SOL-USDT", 1650, 2, 150.0)]
    out = compute_targets(pd.concat(frames, ignore_index=True), horizon=horizon)
    for frame in frames:
        inst_id = frame["inst_id"].iloc[0]
        got = out[out["inst_id"] == inst_id].reset_index(drop=True)
        ref = reference_targets(frame["close"].to_numpy(), horizon)
        assert len(got) == len(ref) == len(frame) - RISK_REFERENCE_BARS - horizon
        ts = frame["ts"].iloc[RISK_REFERENCE_BARS : len(frame) - horizon].reset_index(drop=True)
        pd.testing.assert_series_equal(got["ts"], ts)
        for column in ALL_COLUMNS:
            np.testing.assert_allclose(got[column], ref[column], rtol=1e-8, err_msg=column)


# ---------------------------------------------------------------- contract


def test_output_contract_and_dropped_edges():
    frames = [random_walk("ETH-USDT", 1600, 3), random_walk("XRP-USDT", 1500, 4, 0.5)]
    out = compute_targets(pd.concat(frames, ignore_index=True), horizon=5)
    assert list(out.columns) == ["inst_id", "ts", *TARGET_COLUMNS, *NAIVE_COLUMNS]
    assert str(out["ts"].dtype) == "datetime64[ns, UTC]"
    assert out["target_direction"].dtype == np.int64
    assert out["target_momentum"].dtype == np.int64
    assert np.isfinite(out[ALL_COLUMNS].to_numpy(dtype=float)).all()
    assert out["target_risk"].between(0, 100, inclusive="neither").all()
    assert out["naive_risk"].between(0, 100, inclusive="neither").all()
    for frame in frames:
        got = out[out["inst_id"] == frame["inst_id"].iloc[0]]
        # First RISK_REFERENCE_BARS rows (no sigma) and last H rows (no label) are gone.
        assert got["ts"].min() == frame["ts"].iloc[RISK_REFERENCE_BARS]
        assert got["ts"].max() == frame["ts"].iloc[-1 - 5]
        assert len(got) == len(frame) - RISK_REFERENCE_BARS - 5


def test_short_empty_and_invalid_inputs():
    short = random_walk("ADA-USDT", RISK_REFERENCE_BARS + 5, 5)
    assert compute_targets(short, horizon=5).empty
    assert len(compute_targets(short, horizon=4)) == 1
    empty = compute_targets(short.iloc[:0])
    assert empty.empty
    assert list(empty.columns) == ["inst_id", "ts", *TARGET_COLUMNS, *NAIVE_COLUMNS]
    for horizon in (0, -1, 2.5):
        with pytest.raises(ValueError, match="horizon"):
            compute_targets(short, horizon=horizon)


def test_flat_market_has_defined_labels():
    out = compute_targets(frame_from_close("USDC-USDT", np.ones(RISK_REFERENCE_BARS + 20)))
    assert np.isfinite(out[ALL_COLUMNS].to_numpy(dtype=float)).all()
    assert (out["target_risk"] == 50.0).all()  # as (non-)volatile as usual
    assert (out["target_momentum"] == 1).all()
    assert (out["target_direction"] == 0).all()
    assert (out["target_volatility"] == 0.0).all()


# ---------------------------------------------------------------- forward-only labels


def test_labels_use_only_the_next_h_bars():
    h = 5
    base = random_walk("BTC-USDT", 1700, 7)
    before = compute_targets(base, horizon=h).set_index("ts")
    t = 1500
    t_ts = base["ts"].iloc[t]

    beyond = base.copy()
    beyond.loc[t + h + 1, ["open", "high", "low", "close"]] *= 1.05
    after = compute_targets(beyond, horizon=h).set_index("ts")
    upto = before.index <= t_ts
    pd.testing.assert_frame_equal(after[upto], before[upto])
    assert not after.loc[base["ts"].iloc[t + 1]].equals(before.loc[base["ts"].iloc[t + 1]])

    at_h = base.copy()
    for factor, direction in ((1.01, 1), (0.99, 0)):
        at_h.loc[t + h, "close"] = base["close"].iloc[t] * factor
        row = compute_targets(at_h, horizon=h).set_index("ts").loc[t_ts]
        assert row["target_direction"] == direction
        assert row["target_price"] == pytest.approx(base["close"].iloc[t] * factor)
        for column in ("target_risk", "target_volatility"):
            assert row[column] != before.loc[t_ts, column]
        # Persistence baselines are known at t: the future never moves them.
        for column in NAIVE_COLUMNS:
            assert row[column] == before.loc[t_ts, column]


def test_future_changes_never_move_past_labels():
    base = random_walk("SOL-USDT", 1800, 8)
    before = compute_targets(base)
    cut = 1600
    changed = base.copy()
    rng = np.random.default_rng(0)
    changed.loc[cut:, "close"] *= np.exp(rng.normal(0.0, 0.02, len(base) - cut))
    after = compute_targets(changed)
    # A label at t reads closes up to t + 5, so rows t <= cut - 6 must be untouched.
    keep = before["ts"] <= base["ts"].iloc[cut - 6]
    pd.testing.assert_frame_equal(after[keep], before[keep])
    assert not after[~keep].equals(before[~keep])


# ---------------------------------------------------------------- distributions


def test_class_balance_on_a_random_walk():
    frames = [random_walk(f"C{i}-USDT", 16_000, 100 + i, 10.0**i) for i in range(4)]
    out = compute_targets(pd.concat(frames, ignore_index=True))
    momentum = out["target_momentum"].value_counts(normalize=True).sort_index()
    # z ~ N(0, 1): P(z < -0.5) = P(z > 0.5) = 0.309, middle 0.383.
    assert momentum[0] == pytest.approx(0.309, abs=0.03)
    assert momentum[1] == pytest.approx(0.383, abs=0.03)
    assert momentum[2] == pytest.approx(0.309, abs=0.03)
    assert out["target_direction"].mean() == pytest.approx(0.5, abs=0.02)
    # Forward vol in units of the trailing day: median of chi2_5 / 5 is 0.87 -> risk ~46.5.
    assert out["target_risk"].median() == pytest.approx(46.5, abs=3)


def test_naive_volatility_is_the_rv_5_feature():
    rng = np.random.default_rng(9)
    n = RISK_REFERENCE_BARS + 400
    close = 100 * np.exp(np.cumsum(rng.normal(0.0, 1e-3, n)))
    candles = frame_from_close("BTC-USDT", close)
    candles["high"] = close * 1.001
    candles["low"] = close * 0.999
    joined = compute_features(candles).merge(
        compute_targets(candles, horizon=5), on=["inst_id", "ts"]
    )
    assert len(joined) == n - RISK_REFERENCE_BARS - 5
    np.testing.assert_array_equal(joined["naive_volatility"], joined["rv_5"])
    np.testing.assert_array_equal(joined["naive_price"], joined["close"])
