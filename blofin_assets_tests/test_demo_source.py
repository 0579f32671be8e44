"""The demo market must be reproducible and statistically crypto-like, or ML results mean nothing.

Stylised facts are checked on fixed realistic samples (3 majors x 14 days of 1m bars, and a
quarter for regimes); thresholds are ones real BTC/ETH/SOL minute bars clear comfortably.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from blofin_assets.market.bars import BAR_DURATIONS, latest_closed_bar_open
from blofin_assets.market.contract import CANDLE_COLUMNS
from blofin_assets.market.sources.demo import DEMO_EPOCH, demo_candles

REPO_ROOT = Path(__file__).resolve().parents[1]
MAJORS = ["BTC-USDT", "ETH-USDT", "SOL-USDT"]
SAMPLE_START = pd.Timestamp("2024-03-04T00:00:00Z")  # a Monday: two full weeks
SAMPLE_END = SAMPLE_START + pd.Timedelta(days=14)


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return demo_candles(MAJORS, "1m", SAMPLE_START, SAMPLE_END)


@pytest.fixture(scope="module")
def returns(sample: pd.DataFrame) -> dict[str, pd.Series]:
    """1m log returns (close to close) per instrument, indexed by bar open time."""
    out = {}
    for inst, group in sample.groupby("inst_id"):
        series = pd.Series(np.log(group["close"].to_numpy()), index=group["ts"].to_numpy())
        out[inst] = series.diff().iloc[1:]
    return out


def dot(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b))  # plain numpy: BLAS dot is oddly slow on some CI boxes


def acf(values: np.ndarray, lag: int) -> float:
    x = values - values.mean()
    return dot(x[:-lag], x[lag:]) / dot(x, x)


# Runs both here and in a fresh interpreter: the bytes of every value must match.
DIGEST_SCRIPT = """
import hashlib
import pandas as pd
from blofin_assets.market.sources.demo import demo_candles
frame = demo_candles(["BTC-USDT", "FOO-BAR-SWAP"], "1m",
                     pd.Timestamp("2024-07-01T22:00:00Z"), pd.Timestamp("2024-07-02T02:00:00Z"))
digest = hashlib.sha256("|".join(frame["inst_id"]).encode())
digest.update(frame["ts"].astype("int64").to_numpy().tobytes())
digest.update(frame[["open", "high", "low", "close", "volume"]].to_numpy().tobytes())
result = f"{len(frame)} {digest.hexdigest()}"
"""


# ---------------------------------------------------------------- frame contract and ranges


def test_frame_contract(sample: pd.DataFrame) -> None:
    assert list(sample.columns) == CANDLE_COLUMNS
    assert len(sample) == len(MAJORS) * 14 * 1440
    assert sample["inst_id"].dtype == object
    assert str(sample["ts"].dtype) == "datetime64[ns, UTC]"
    for column in ["open", "high", "low", "close", "volume"]:
        assert sample[column].dtype == np.float64
        assert np.isfinite(sample[column]).all()
    ordered = sample.sort_values(["inst_id", "ts"], kind="stable")
    assert sample.index.equals(pd.RangeIndex(len(sample)))
    assert (ordered.index == sample.index).all()
    assert sample["ts"].min() == SAMPLE_START
    assert sample["ts"].max() == SAMPLE_END - pd.Timedelta(minutes=1)


@pytest.mark.parametrize("bar", ["1m", "5m", "15m", "1H", "4H", "1D"])
def test_range_bounds_and_grid_alignment(bar: str) -> None:
    step = BAR_DURATIONS[bar]
    start = pd.Timestamp("2024-02-10T07:03:20Z")
    end = pd.Timestamp("2024-02-13T13:17:00Z")
    frame = demo_candles(["ETH-USDT"], bar, start, end)
    ts = frame["ts"]
    assert (ts >= start).all() and (ts < end).all()
    assert (((ts - DEMO_EPOCH) % step) == pd.Timedelta(0)).all()
    expected = pd.date_range(
        DEMO_EPOCH + -(-(start - DEMO_EPOCH) // step) * step,  # first grid point >= start
        end - pd.Timedelta(1, "ns"),
        freq=step,
    )
    assert list(ts) == list(expected)


def test_start_before_epoch_is_clipped() -> None:
    frame = demo_candles(
        ["BTC-USDT"], "1H", DEMO_EPOCH - pd.Timedelta(days=30), DEMO_EPOCH + pd.Timedelta(hours=5)
    )
    assert list(frame["ts"]) == list(pd.date_range(DEMO_EPOCH, periods=5, freq="1h"))


def test_empty_ranges_keep_the_contract() -> None:
    for start, end in [
        (SAMPLE_START, SAMPLE_START),  # empty interval
        (SAMPLE_END, SAMPLE_START),  # reversed
        (DEMO_EPOCH - pd.Timedelta(days=2), DEMO_EPOCH),  # entirely before the epoch
    ]:
        frame = demo_candles(["BTC-USDT"], "5m", start, end)
        assert frame.empty
        assert list(frame.columns) == CANDLE_COLUMNS
        assert str(frame["ts"].dtype) == "datetime64[ns, UTC]"
    assert demo_candles([], "1m", SAMPLE_START, SAMPLE_END).empty


# ---------------------------------------------------------------- determinism


def test_overlapping_requests_agree_exactly() -> None:
    a = pd.Timestamp("2024-04-01T00:00:00Z")
    b = pd.Timestamp("2024-04-02T13:37:00Z")
    c = pd.Timestamp("2024-04-03T06:00:00Z")
    long = demo_candles(["BTC-USDT", "ETH-USDT"], "1m", a, c)
    short = demo_candles(["BTC-USDT", "ETH-USDT"], "1m", b, c)
    overlap = long[long["ts"] >= b].reset_index(drop=True)
    assert len(overlap) == len(short) > 0
    pd.testing.assert_frame_equal(overlap, short, check_exact=True)


@pytest.mark.parametrize("day", ["2024-05-17", "2024-06-20"])
def test_one_day_equals_the_same_day_inside_a_quarter_and_other_instruments(day: str) -> None:
    # The quarter is generated in blocks of 64 days: 2024-06-20 opens the second block.
    opening = pd.Timestamp(day, tz="UTC")
    quarter = demo_candles(
        ["AVAX-USDT", "BTC-USDT", "XRP-USDT"],
        "5m",
        pd.Timestamp("2024-04-17T00:00:00Z"),
        pd.Timestamp("2024-07-17T00:00:00Z"),
    )
    alone = demo_candles(["BTC-USDT"], "5m", opening, opening + pd.Timedelta(days=1))
    inside = quarter[(quarter["inst_id"] == "BTC-USDT") & (quarter["ts"] >= opening)]
    inside = inside[inside["ts"] < opening + pd.Timedelta(days=1)].reset_index(drop=True)
    assert len(alone) == 288
    pd.testing.assert_frame_equal(inside, alone, check_exact=True)


def test_identical_across_processes() -> None:
    namespace: dict[str, object] = {}
    exec(DIGEST_SCRIPT, namespace)
    local = namespace["result"]
    assert str(local).startswith("480 ")  # 2 instruments x 4 hours of 1m bars
    remote = subprocess.run(
        [sys.executable, "-c", DIGEST_SCRIPT + "print(result)"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.strip()
    assert remote == local


# ---------------------------------------------------------------- instruments and bars


def test_instrument_levels_and_hashed_instruments() -> None:
    first = demo_candles(
        ["BTC-USDT", "ETH-USDT", "SOL-USDT", "FOO-BAR", "FOO-BAZ"],
        "1m",
        DEMO_EPOCH,
        DEMO_EPOCH + pd.Timedelta(minutes=1),
    ).set_index("inst_id")["open"]
    assert first["BTC-USDT"] == pytest.approx(60_000.0)
    assert first["ETH-USDT"] == pytest.approx(3_000.0)
    assert first["SOL-USDT"] == pytest.approx(150.0)
    assert first["FOO-BAR"] > 0 and first["FOO-BAZ"] > 0
    assert first["FOO-BAR"] != first["FOO-BAZ"]  # parameters come from the name


@pytest.mark.parametrize("bad", ["btc-usdt", "BTC_USDT", "", "BTC-USDT;DROP TABLE", "BTC", 42])
def test_invalid_instrument_raises(bad: object) -> None:
    with pytest.raises(ValueError, match="invalid instrument id"):
        demo_candles(["BTC-USDT", bad], "1m", SAMPLE_START, SAMPLE_END)  # type: ignore[list-item]


@pytest.mark.parametrize("bad_bar", ["1M", "2m", "1h", ""])
def test_invalid_bar_raises(bad_bar: str) -> None:
    with pytest.raises(ValueError, match="unknown bar size"):
        demo_candles(["BTC-USDT"], bad_bar, SAMPLE_START, SAMPLE_END)
    with pytest.raises(ValueError, match="unknown bar size"):
        latest_closed_bar_open(SAMPLE_START, bad_bar)


@pytest.mark.parametrize("bar", [bar for bar in BAR_DURATIONS if bar != "1m"])
def test_coarser_bars_aggregate_the_1m_bars(bar: str) -> None:
    start = pd.Timestamp("2024-06-09T00:00:00Z")
    end = start + pd.Timedelta(days=2)
    minutes = demo_candles(["ETH-USDT", "DOGE-USDT"], "1m", start, end)
    coarse = demo_candles(["ETH-USDT", "DOGE-USDT"], bar, start, end)
    bucket = DEMO_EPOCH + ((minutes["ts"] - DEMO_EPOCH) // BAR_DURATIONS[bar]) * BAR_DURATIONS[bar]
    expected = (
        minutes.groupby(["inst_id", bucket.rename("ts")], sort=True)
        .agg(
            open=("open", "first"),
            high=("high", "max"),
            low=("low", "min"),
            close=("close", "last"),
            volume=("volume", "sum"),
        )
        .reset_index()
    )
    assert (
        len(coarse)
        == len(expected)
        == 2 * (2 * 1440 * pd.Timedelta(minutes=1)) // BAR_DURATIONS[bar]
    )
    prices = ["inst_id", "ts", "open", "high", "low", "close"]
    pd.testing.assert_frame_equal(coarse[prices], expected[prices], check_exact=True)
    np.testing.assert_allclose(coarse["volume"], expected["volume"], rtol=1e-12)


# ---------------------------------------------------------------- the clock


def test_latest_closed_bar_open() -> None:
    t = pd.Timestamp
    assert latest_closed_bar_open(t("2024-05-01T10:07:30Z"), "1m") == t("2024-05-01T10:06:00Z")
    assert latest_closed_bar_open(t("2024-05-01T10:05:00Z"), "5m") == t("2024-05-01T10:00:00Z")
    assert latest_closed_bar_open(t("2024-05-01T10:04:59.999Z"), "5m") == t("2024-05-01T09:55:00Z")
    assert latest_closed_bar_open(t("2024-05-01T10:00:00Z"), "4H") == t("2024-05-01T04:00:00Z")
    assert latest_closed_bar_open(t("2024-05-01T23:59:59Z"), "1D") == t("2024-04-30T00:00:00Z")
    assert latest_closed_bar_open(t("2024-05-01T12:00:00+02:00"), "1H") == t("2024-05-01T09:00:00Z")
    assert latest_closed_bar_open(t("2024-05-01T10:07:30"), "1m") == t("2024-05-01T10:06:00Z")


def test_new_candles_appear_as_the_clock_advances() -> None:
    start = pd.Timestamp("2024-05-01T09:00:00Z")
    now = pd.Timestamp("2024-05-01T10:02:30Z")
    frames = []
    for tick in [now, now + pd.Timedelta(minutes=7)]:
        end = latest_closed_bar_open(tick, "1m") + pd.Timedelta(minutes=1)
        frames.append(demo_candles(["BTC-USDT"], "1m", start, end))
    before, after = frames
    assert before["ts"].iloc[-1] == pd.Timestamp("2024-05-01T10:01:00Z")
    assert len(after) == len(before) + 7
    assert after["ts"].iloc[-1] == pd.Timestamp("2024-05-01T10:08:00Z")
    pd.testing.assert_frame_equal(after.iloc[: len(before)], before, check_exact=True)


def test_a_frozen_clock_far_from_the_epoch_yields_only_closed_bars() -> None:
    """The pipeline freezes "now"; the demo market must not consult the wall clock."""
    now = pd.Timestamp("2026-11-20T12:00:30Z")
    end = latest_closed_bar_open(now, "5m") + pd.Timedelta(minutes=5)
    frame = demo_candles(["BTC-USDT", "ETH-USDT"], "5m", pd.Timestamp("2026-11-20T06:00Z"), end)
    assert len(frame) == 2 * 72
    assert frame["ts"].max() == pd.Timestamp("2026-11-20T11:55:00Z")
    assert (frame["ts"] + pd.Timedelta(minutes=5) <= now).all()
    # Almost three years of history: prices have wandered but stay sane.
    assert frame[["open", "high", "low", "close", "volume"]].gt(0).all().all()
    btc = frame.loc[frame["inst_id"] == "BTC-USDT", "close"]
    assert 60_000 / 50 < btc.iloc[-1] < 60_000 * 50


# ---------------------------------------------------------------- stylised facts


def test_fat_tails(returns: dict[str, pd.Series]) -> None:
    for inst, r in returns.items():
        assert stats.kurtosis(r) > 5.0, inst  # a Gaussian would give ~0


def test_returns_are_uncorrelated_but_volatility_clusters(returns: dict[str, pd.Series]) -> None:
    # Pooled over instruments: heavy tails make single-series acf noisy (sd ~0.02 here).
    demeaned = [r.to_numpy() - r.mean() for r in returns.values()]
    denominator = sum(dot(x, x) for x in demeaned)
    for lag in range(1, 11):
        pooled = sum(dot(x[:-lag], x[lag:]) for x in demeaned) / denominator
        assert abs(pooled) < 0.05, lag
    for inst, r in returns.items():
        signs = np.sign(r.to_numpy())
        absolute = r.abs().to_numpy()
        for lag in range(1, 11):
            assert abs(acf(signs, lag)) < 0.03, (inst, lag)  # direction is a coin flip
        clustering = np.array([acf(absolute, lag) for lag in range(1, 61)])
        assert (clustering > 0.05).all(), inst  # volatility is predictable up to an hour ahead
        assert clustering[:10].mean() > 0.15, inst


def test_direction_is_not_predictable_from_past_returns(returns: dict[str, pd.Series]) -> None:
    lags = 10
    for inst, r in returns.items():
        values = r.to_numpy()
        design = np.column_stack([values[lags - k : -k] for k in range(1, lags + 1)])
        target = values[lags:]
        design = np.column_stack([np.ones(len(target)), design])
        half = len(target) // 2
        beta, *_ = np.linalg.lstsq(design[:half], target[:half], rcond=None)
        hit_rate = np.mean(np.sign(design[half:] @ beta) == np.sign(target[half:]))
        persistence = np.mean(np.sign(values[1:]) == np.sign(values[:-1]))
        momentum = pd.Series(values).rolling(60).sum().shift(1).to_numpy()[60:]
        momentum_hit = np.mean(np.sign(momentum) == np.sign(values[60:]))
        for rate in (hit_rate, persistence, momentum_hit):
            assert 0.48 < rate < 0.52, inst


def test_intraday_seasonality(sample: pd.DataFrame, returns: dict[str, pd.Series]) -> None:
    for inst, r in returns.items():
        hours = r.index.hour
        median_abs = r.abs().groupby(hours).median()
        assert median_abs.max() / median_abs.min() > 1.5, inst
        minute_of_day = hours * 60 + r.index.minute
        us_session = r.abs()[(minute_of_day >= 13 * 60 + 30) & (minute_of_day < 16 * 60)]
        late_evening = r.abs()[(hours >= 20) & (hours < 24)]
        assert us_session.median() > 1.4 * late_evening.median(), inst
        group = sample[sample["inst_id"] == inst]
        volume_by_hour = group["volume"].groupby(group["ts"].dt.hour).median()
        assert volume_by_hour.max() / volume_by_hour.min() > 1.5, inst
        assert volume_by_hour.idxmax() in range(13, 17), inst


def test_instruments_share_a_market_factor(returns: dict[str, pd.Series]) -> None:
    assert np.corrcoef(returns["BTC-USDT"], returns["ETH-USDT"])[0, 1] > 0.3
    assert np.corrcoef(returns["BTC-USDT"], returns["SOL-USDT"])[0, 1] > 0.3
    lead_lag = np.corrcoef(returns["BTC-USDT"].to_numpy()[:-1], returns["ETH-USDT"].to_numpy()[1:])
    assert abs(lead_lag[0, 1]) < 0.05  # BTC does not predict ETH's next minute


def test_calm_and_turbulent_days() -> None:
    # Regimes need a longer look than two weeks: one quarter of the same majors.
    start = pd.Timestamp("2024-04-01T00:00:00Z")
    quarter = demo_candles(MAJORS, "1m", start, start + pd.Timedelta(days=90))
    for inst, group in quarter.groupby("inst_id"):
        r = np.log(group["close"]).diff().iloc[1:]
        daily_vol = np.sqrt((r**2).groupby(group["ts"].iloc[1:].dt.floor("D")).sum())
        assert len(daily_vol) == 90
        assert daily_vol.max() / daily_vol.min() > 2.0, inst
        assert daily_vol.quantile(0.9) / daily_vol.quantile(0.1) > 2.0, inst
        assert acf(np.log(daily_vol.to_numpy()), 1) > 0.3, inst  # turbulence persists


def test_volume_is_positive_lognormal_and_follows_moves(
    sample: pd.DataFrame, returns: dict[str, pd.Series]
) -> None:
    assert (sample["volume"] > 0).all()
    for inst, r in returns.items():
        volume = sample.loc[sample["inst_id"] == inst, "volume"].to_numpy()[1:]
        assert stats.spearmanr(volume, r.abs()).statistic > 0.3, inst
        assert stats.skew(volume) > 2.0, inst  # right-skewed in levels ...
        assert abs(stats.skew(np.log(volume))) < 1.0, inst  # ... roughly symmetric in logs


def test_ohlc_consistency(sample: pd.DataFrame) -> None:
    o, h, low, c = (sample[k].to_numpy() for k in ["open", "high", "low", "close"])
    assert (low > 0).all()
    assert (low <= np.minimum(o, c)).all()
    assert (np.maximum(o, c) <= h).all()
    assert (h > low).all()
    for _, group in sample.groupby("inst_id"):
        # Each open is the previous close, including across midnight UTC.
        np.testing.assert_array_equal(group["open"].to_numpy()[1:], group["close"].to_numpy()[:-1])
