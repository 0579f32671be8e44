"""Features: pinned against independent computations, and strictly causal.

The reference implementations below are written from the textbook definitions (Python
loops, plain numpy, pandas rolling), not with TA-Lib or the module's helpers, so a wrong
window, seed or sign in blofin_assets.ml.features shows up as a value mismatch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from blofin_assets.ml.features import (
    FEATURE_COLUMNS,
    FEATURE_WARMUP_BARS,
    REFERENCE_COLUMNS,
    compute_features,
)

N_BARS = FEATURE_WARMUP_BARS + 260
START = pd.Timestamp("2024-03-01 21:00", tz="UTC")  # a Friday evening: crosses days and weekend


def make_candles(
    inst_id: str, price: float, n: int = N_BARS, seed: int = 0, start: pd.Timestamp = START
) -> pd.DataFrame:
    """A deterministic 1m random walk with consistent open/high/low and lognormal volume."""
    rng = np.random.default_rng(seed)
    close = price * np.exp(np.cumsum(rng.normal(0.0, 2e-3, n)))
    open_ = np.concatenate(([price], close[:-1])) * np.exp(rng.normal(0.0, 2e-4, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 1e-3, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 1e-3, n)))
    return pd.DataFrame(
        {
            "inst_id": inst_id,
            "ts": pd.date_range(start, periods=n, freq="1min"),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.lognormal(2.0, 1.0, n),
        }
    )


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return pd.concat(
        [make_candles("BTC-USDT", 60_000.0, seed=1), make_candles("SOL-USDT", 150.0, seed=2)],
        ignore_index=True,
    )


@pytest.fixture(scope="module")
def features(candles: pd.DataFrame) -> pd.DataFrame:
    return compute_features(candles)


# ---------------------------------------------------------------- independent references


def wilder(values: np.ndarray, period: int, first: int) -> np.ndarray:
    """Wilder smoothing seeded with the plain mean of values[first : first + period]."""
    out = np.full(len(values), np.nan)
    out[first + period - 1] = np.mean(values[first : first + period])
    for i in range(first + period, len(values)):
        out[i] = (out[i - 1] * (period - 1) + values[i]) / period
    return out


def ema(values: np.ndarray, period: int) -> np.ndarray:
    alpha = 2.0 / (period + 1)
    out = np.empty(len(values))
    out[0] = values[0]
    for i in range(1, len(values)):
        out[i] = alpha * values[i] + (1 - alpha) * out[i - 1]
    return out


def true_range(c: pd.DataFrame) -> np.ndarray:
    high, low, close = c["high"].to_numpy(), c["low"].to_numpy(), c["close"].to_numpy()
    tr = np.full(len(c), np.nan)
    prev = close[:-1]
    tr[1:] = np.maximum.reduce(
        [high[1:] - low[1:], np.abs(high[1:] - prev), np.abs(low[1:] - prev)]
    )
    return tr


def reference_features(c: pd.DataFrame) -> dict[str, np.ndarray]:
    """Every feature for one instrument, full length, from its textbook definition."""
    o, h, lo, cl, v = (c[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    n = len(c)
    ref: dict[str, np.ndarray] = {}
    r = np.full(n, np.nan)
    r[1:] = np.log(cl[1:] / cl[:-1])
    for k in (1, 5, 15, 60):
        ret = np.full(n, np.nan)
        ret[k:] = np.log(cl[k:] / cl[:-k])
        ref[f"ret_{k}"] = ret
    for k in (5, 15, 60, 1440):
        rv = np.full(n, np.nan)
        for i in range(k, n):
            rv[i] = np.sqrt(np.sum(r[i - k + 1 : i + 1] ** 2))
        ref[f"rv_{k}"] = rv
    ref["vol_ratio_5_60"] = (ref["rv_5"] / np.sqrt(5)) / (ref["rv_60"] / np.sqrt(60))
    ref["vol_ratio_60_1440"] = (ref["rv_60"] / np.sqrt(60)) / (ref["rv_1440"] / np.sqrt(1440))
    log_volume = pd.Series(np.log(v))
    roll = log_volume.rolling(60)
    ref["volume_z_60"] = ((log_volume - roll.mean()) / roll.std(ddof=0)).to_numpy()
    ref["range_rel"] = (h - lo) / cl
    ref["body_to_range"] = (cl - o) / (h - lo)

    gains = np.concatenate(([np.nan], np.maximum(np.diff(cl), 0.0)))
    losses = np.concatenate(([np.nan], np.maximum(-np.diff(cl), 0.0)))
    avg_gain, avg_loss = wilder(gains, 14, 1), wilder(losses, 14, 1)
    ref["rsi_14"] = 100.0 * avg_gain / (avg_gain + avg_loss)

    ref["atr_14_rel"] = wilder(true_range(c), 14, 1) / cl

    macd = ema(cl, 12) - ema(cl, 26)
    ref["macd_hist_rel"] = (macd - ema(macd, 9)) / cl

    close_s = pd.Series(cl)
    mid = close_s.rolling(20).mean().to_numpy()
    sd = close_s.rolling(20).std(ddof=0).to_numpy()
    upper, lower = mid + 2 * sd, mid - 2 * sd
    ref["bb_pctb_20"] = (cl - lower) / (upper - lower)
    ref["bb_width_20"] = (upper - lower) / mid

    up = np.concatenate(([np.nan], np.diff(h)))
    down = np.concatenate(([np.nan], -np.diff(lo)))
    plus_dm = np.where((up > down) & (up > 0), up, 0.0)
    minus_dm = np.where((down > up) & (down > 0), down, 0.0)
    tr = true_range(c)
    s_plus, s_minus, s_tr = wilder(plus_dm, 14, 1), wilder(minus_dm, 14, 1), wilder(tr, 14, 1)
    plus_di, minus_di = 100 * s_plus / s_tr, 100 * s_minus / s_tr
    dx = 100 * np.abs(plus_di - minus_di) / (plus_di + minus_di)
    ref["adx_14"] = wilder(dx, 14, 14)

    lowest = pd.Series(lo).rolling(14).min().to_numpy()
    highest = pd.Series(h).rolling(14).max().to_numpy()
    fast_k = 100 * (cl - lowest) / (highest - lowest)
    ref["stoch_k_14"] = pd.Series(fast_k).rolling(3).mean().to_numpy()

    typical = (h + lo + cl) / 3
    flow = typical * v
    rising = np.concatenate(([False], typical[1:] > typical[:-1]))
    falling = np.concatenate(([False], typical[1:] < typical[:-1]))
    pos = pd.Series(np.where(rising, flow, 0.0)).rolling(14).sum().to_numpy()
    neg = pd.Series(np.where(falling, flow, 0.0)).rolling(14).sum().to_numpy()
    ref["mfi_14"] = 100 * pos / (pos + neg)

    cci = np.full(n, np.nan)
    for i in range(19, n):
        window = typical[i - 19 : i + 1]
        mean = window.mean()
        cci[i] = (typical[i] - mean) / (0.015 * np.mean(np.abs(window - mean)))
    ref["cci_20"] = cci

    ts = c["ts"]
    seconds = ts.dt.hour * 3600 + ts.dt.minute * 60 + ts.dt.second
    day_angle = 2 * np.pi * seconds.to_numpy() / 86_400
    week_angle = 2 * np.pi * ts.dt.dayofweek.to_numpy() / 7
    ref["tod_sin"], ref["tod_cos"] = np.sin(day_angle), np.cos(day_angle)
    ref["dow_sin"], ref["dow_cos"] = np.sin(week_angle), np.cos(week_angle)
    return ref


def rows_of(frame: pd.DataFrame, inst_id: str) -> pd.DataFrame:
    return frame[frame["inst_id"] == inst_id].reset_index(drop=True)


# ---------------------------------------------------------------- values


def test_every_feature_matches_its_independent_reference(candles, features):
    for inst_id in ("BTC-USDT", "SOL-USDT"):
        c = rows_of(candles, inst_id)
        got = rows_of(features, inst_id)
        ref = reference_features(c)
        assert set(ref) == set(FEATURE_COLUMNS)
        tail = slice(FEATURE_WARMUP_BARS, None)
        pd.testing.assert_series_equal(got["ts"], c["ts"][tail].reset_index(drop=True))
        np.testing.assert_array_equal(got["close"], c["close"].to_numpy()[tail])
        for name in FEATURE_COLUMNS:
            np.testing.assert_allclose(
                got[name].to_numpy(), ref[name][tail], rtol=1e-7, atol=1e-10, err_msg=name
            )


def test_rv_5_is_the_root_sum_of_the_last_five_squared_log_returns(candles, features):
    c = rows_of(candles, "SOL-USDT")["close"].to_numpy()
    row = rows_of(features, "SOL-USDT").iloc[100]
    i = FEATURE_WARMUP_BARS + 100
    expected = np.sqrt(sum(np.log(c[k] / c[k - 1]) ** 2 for k in range(i - 4, i + 1)))
    assert row["rv_5"] == pytest.approx(expected, rel=1e-9)


def test_time_encodings_by_hand():
    one = make_candles("ETH-USDT", 3000.0, n=FEATURE_WARMUP_BARS + 1)
    row = compute_features(one).iloc[0]
    ts = row["ts"]
    assert ts == START + pd.Timedelta(minutes=FEATURE_WARMUP_BARS)  # Saturday 21:00
    assert ts.dayofweek == 5
    assert row["tod_sin"] == pytest.approx(np.sin(2 * np.pi * 21 / 24))
    assert row["tod_cos"] == pytest.approx(np.cos(2 * np.pi * 21 / 24))
    assert row["dow_sin"] == pytest.approx(np.sin(2 * np.pi * 5 / 7))
    assert row["dow_cos"] == pytest.approx(np.cos(2 * np.pi * 5 / 7))


# ---------------------------------------------------------------- shape and contract


def test_output_contract(candles, features):
    assert list(features.columns) == ["inst_id", "ts", *REFERENCE_COLUMNS, *FEATURE_COLUMNS]
    assert REFERENCE_COLUMNS == ["close"]
    assert "close" not in FEATURE_COLUMNS
    assert len(FEATURE_COLUMNS) >= 16
    assert len(set(FEATURE_COLUMNS)) == len(FEATURE_COLUMNS)
    assert str(features["ts"].dtype) == "datetime64[ns, UTC]"
    assert all(features[name].dtype == np.float64 for name in FEATURE_COLUMNS)
    values = features[FEATURE_COLUMNS].to_numpy()
    assert np.isfinite(values).all()
    assert features.equals(features.sort_values(["inst_id", "ts"], ignore_index=True))
    # Exactly the warm-up bars are dropped, per instrument, and nothing else.
    assert features.groupby("inst_id").size().to_dict() == {
        "BTC-USDT": N_BARS - FEATURE_WARMUP_BARS,
        "SOL-USDT": N_BARS - FEATURE_WARMUP_BARS,
    }


def test_short_and_empty_inputs():
    short = make_candles("XRP-USDT", 0.5, n=FEATURE_WARMUP_BARS)
    assert compute_features(short).empty
    long = make_candles("ADA-USDT", 0.4, n=FEATURE_WARMUP_BARS + 3)
    out = compute_features(pd.concat([long, short], ignore_index=True))
    assert out["inst_id"].tolist() == ["ADA-USDT"] * 3
    empty = compute_features(long.iloc[:0])
    assert empty.empty
    assert list(empty.columns) == ["inst_id", "ts", *REFERENCE_COLUMNS, *FEATURE_COLUMNS]


def test_unsorted_input_is_sorted_and_duplicates_are_refused(candles, features):
    shuffled = candles.sample(frac=1.0, random_state=0)
    pd.testing.assert_frame_equal(compute_features(shuffled), features)
    duplicated = pd.concat([candles, candles.iloc[[100]]], ignore_index=True)
    with pytest.raises(ValueError, match="duplicate"):
        compute_features(duplicated)


def test_bad_prices_are_refused(candles):
    broken = candles.copy()
    broken.loc[50, "low"] = 0.0
    with pytest.raises(ValueError, match="low"):
        compute_features(broken)
    broken = candles.copy()
    broken.loc[50, "close"] = np.nan
    with pytest.raises(ValueError, match="close"):
        compute_features(broken)


# ---------------------------------------------------------------- causality


@pytest.mark.parametrize("cut", [FEATURE_WARMUP_BARS, FEATURE_WARMUP_BARS + 37, N_BARS - 2])
def test_truncating_the_future_leaves_earlier_rows_identical(candles, features, cut):
    cut_ts = START + pd.Timedelta(minutes=cut)
    truncated = compute_features(candles[candles["ts"] <= cut_ts])
    expected = features[features["ts"] <= cut_ts].reset_index(drop=True)
    assert len(truncated) == len(expected) == 2 * (cut - FEATURE_WARMUP_BARS + 1)
    assert truncated["ts"].equals(expected["ts"])
    for name in ["close", *FEATURE_COLUMNS]:
        np.testing.assert_allclose(
            truncated[name], expected[name], rtol=1e-12, atol=1e-15, err_msg=name
        )


@pytest.mark.parametrize("cut", [FEATURE_WARMUP_BARS + 5, N_BARS - 60])
def test_changing_the_future_leaves_earlier_rows_identical(candles, features, cut):
    cut_ts = START + pd.Timedelta(minutes=cut)
    rng = np.random.default_rng(cut)
    changed = candles.copy()
    future = changed["ts"] > cut_ts
    factor = np.exp(rng.normal(0.0, 0.05, future.sum()))
    for column in ("open", "high", "low", "close"):
        changed.loc[future, column] *= factor
    changed.loc[future, "volume"] *= rng.lognormal(0.0, 1.0, future.sum())
    after = compute_features(changed)
    past = features["ts"] <= cut_ts
    for name in ["close", *FEATURE_COLUMNS]:
        np.testing.assert_allclose(
            after.loc[past, name], features.loc[past, name], rtol=1e-12, atol=1e-15, err_msg=name
        )
    # The perturbation was real: price features after the cut did change.
    assert not np.allclose(after.loc[~past, "ret_1"], features.loc[~past, "ret_1"])


def test_serving_window_reproduces_the_full_history_row(candles, features):
    """FEATURE_WARMUP_BARS + 1 bars are enough: the recursive filters have forgotten the seed."""
    for inst_id in ("BTC-USDT", "SOL-USDT"):
        recent = rows_of(candles, inst_id).iloc[-(FEATURE_WARMUP_BARS + 1) :]
        served = compute_features(recent)
        assert len(served) == 1
        full = rows_of(features, inst_id).iloc[-1]
        np.testing.assert_allclose(
            served[FEATURE_COLUMNS].to_numpy()[0],
            full[FEATURE_COLUMNS].to_numpy(dtype=float),
            rtol=1e-6,
            atol=1e-9,
        )


def test_instruments_never_mix(candles, features):
    for inst_id in ("BTC-USDT", "SOL-USDT"):
        alone = compute_features(rows_of(candles, inst_id))
        together = rows_of(features, inst_id)
        pd.testing.assert_frame_equal(alone, together, check_exact=False, rtol=1e-12, atol=1e-15)


def test_features_are_scale_free(candles, features):
    scaled = candles.copy()
    for column in ("open", "high", "low", "close"):
        scaled[column] *= 1000.0
    scaled["volume"] *= 1e-3  # a different volume unit must not matter either
    rescaled = compute_features(scaled)
    np.testing.assert_allclose(rescaled["close"], features["close"] * 1000.0, rtol=1e-12)
    for name in FEATURE_COLUMNS:
        np.testing.assert_allclose(
            rescaled[name], features[name], rtol=1e-6, atol=1e-9, err_msg=name
        )


def volume_z_reference(volume: np.ndarray) -> np.ndarray:
    """volume_z_60 from its definition, one window at a time: a zero-volume bar counts as the
    quietest traded bar of the same 60-bar window; a window with no trade reads 0."""
    z = np.full(len(volume), np.nan)
    for t in range(59, len(volume)):
        window = volume[t - 59 : t + 1]
        traded = window[window > 0]
        if len(traded) == 0:
            z[t] = 0.0
            continue
        logs = np.log(np.where(window > 0, window, traded.min()))
        spread = logs.std()
        z[t] = (logs[-1] - logs.mean()) / spread if spread > 1e-6 else 0.0
    return z


def test_zero_volume_bars_count_as_the_quietest_traded_bar_of_their_window():
    c = make_candles("DOGE-USDT", 0.1, seed=3)
    volume = c["volume"].to_numpy().copy()
    volume[:200] = 0.0  # listed before its first trade
    volume[FEATURE_WARMUP_BARS - 100 :: 7] = 0.0
    volume[FEATURE_WARMUP_BARS - 300] = 1e-9  # barely traded, long before the rows' windows
    volume[FEATURE_WARMUP_BARS + 100 : FEATURE_WARMUP_BARS + 159] = 0.0  # one trade in 60
    volume[-70:] = 0.0  # the last 60-bar windows hold no trade at all
    c["volume"] = volume
    got = compute_features(c)
    assert np.isfinite(got[FEATURE_COLUMNS].to_numpy()).all()

    z = volume_z_reference(volume)[FEATURE_WARMUP_BARS:]
    np.testing.assert_allclose(got["volume_z_60"], z, rtol=1e-7, atol=1e-9)
    assert (got["volume_z_60"].to_numpy()[-11:] == 0.0).all()
    # Still independent of the volume unit, zero bars included.
    c["volume"] = volume * 1e-4
    np.testing.assert_allclose(compute_features(c)["volume_z_60"], got["volume_z_60"], atol=1e-9)
    # And of the bars before the window: the row equals the one computed from its warm-up.
    served = compute_features(c.iloc[-(FEATURE_WARMUP_BARS + 80) :])
    np.testing.assert_allclose(served["volume_z_60"], got["volume_z_60"].iloc[-80:], atol=1e-9)


def test_all_cores_give_the_same_bytes_as_one_block_after_another(candles, features, monkeypatch):
    """Blocks run on a thread pool for large inputs; the output must not depend on it."""
    from blofin_assets.ml import blocks as module
    from blofin_assets.ml.targets import compute_targets

    if module.worker_count() < 2:
        pytest.skip("one core: the thread pool is never used")
    serial_targets = compute_targets(candles, 5, start=candles["ts"].iloc[2000])
    monkeypatch.setattr(module, "PARALLEL_MIN_CANDLES", 0)
    pd.testing.assert_frame_equal(compute_features(candles), features, check_exact=True)
    pd.testing.assert_frame_equal(
        compute_targets(candles, 5, start=candles["ts"].iloc[2000]),
        serial_targets,
        check_exact=True,
    )
