"""Markets built for a purpose, in the candle contract layout, for tests of the gates."""

from __future__ import annotations

import numpy as np
import pandas as pd

from blofin_assets.ml.features import compute_features
from blofin_assets.ml.targets import compute_targets


def candles_from_closes(closes: dict[str, np.ndarray], start: str = "2026-01-01") -> pd.DataFrame:
    frames = []
    for inst_id, close in closes.items():
        ts = pd.date_range(start, periods=len(close), freq="min", tz="UTC")
        open_ = np.concatenate([[close[0]], close[:-1]])
        spread = np.abs(close - open_) + close * 1e-4
        frames.append(
            pd.DataFrame(
                {
                    "inst_id": inst_id,
                    "ts": ts,
                    "open": open_,
                    "high": np.maximum(open_, close) + spread * 0.5,
                    "low": np.minimum(open_, close) - spread * 0.5,
                    "close": close,
                    "volume": 10.0 + 5.0 * np.abs(np.sin(np.arange(len(close)) / 7.0)),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def periodic_market(bars: int, period: int = 60) -> pd.DataFrame:
    """Perfectly periodic prices: direction is fully determined by the phase, which the
    time-of-day features reveal. Any honest market gives nothing like this."""
    t = np.arange(bars)
    closes = {
        "BTC-USDT": 60000 * (1 + 0.01 * np.sin(2 * np.pi * t / period)),
        "ETH-USDT": 3000 * (1 + 0.01 * np.sin(2 * np.pi * t / period + 1.0)),
    }
    return candles_from_closes(closes)


def iid_market(bars: int, seed: int = 7) -> pd.DataFrame:
    """Gaussian i.i.d. returns at constant volatility: nothing about the future is knowable."""
    rng = np.random.default_rng(seed)
    closes = {
        inst: level * np.exp(np.cumsum(rng.normal(0.0, 1e-3, bars)))
        for inst, level in (("BTC-USDT", 60000.0), ("ETH-USDT", 3000.0), ("SOL-USDT", 150.0))
    }
    return candles_from_closes(closes)


def jump_market(bars: int, seed: int = 11) -> pd.DataFrame:
    """The i.i.d. market with one 50 % price jump in one instrument, early in the history: it
    inflates every trailing day level that spans it, so a rule chosen on training rows would
    be the weak one on the test rows."""
    market = iid_market(bars, seed=seed)
    sol = market["inst_id"] == "SOL-USDT"
    jump_at = market.loc[sol, "ts"].iloc[bars // 4]
    after = sol & (market["ts"] >= jump_at)
    for column in ("open", "high", "low", "close"):
        market.loc[after, column] *= 1.5
    first = market.index[sol & (market["ts"] == jump_at)][0]
    market.loc[first, "open"] = market.loc[first - 1, "close"]  # the jump happens inside a bar
    market.loc[first, "low"] = min(market.loc[first, "low"], market.loc[first, "open"])
    return market


def ar1_market(bars: int, phi: float = 0.3, seed: int = 5) -> pd.DataFrame:
    """Each 1-bar return partly repeats the last one: direction persistence is a strong rule,
    and a model must beat it, not the class shares."""
    rng = np.random.default_rng(seed)
    closes = {}
    for inst, level in (("BTC-USDT", 60000.0), ("ETH-USDT", 3000.0), ("SOL-USDT", 150.0)):
        shocks = rng.normal(0.0, 1e-3, bars)
        returns = np.empty(bars)
        returns[0] = shocks[0]
        for i in range(1, bars):
            returns[i] = phi * returns[i - 1] + shocks[i]
        closes[inst] = level * np.exp(np.cumsum(returns))
    return candles_from_closes(closes)


def volume_signal_market(bars: int, seed: int = 9) -> pd.DataFrame:
    """Noise, except that after a volume spike (about one bar in twenty) the price drifts up
    over the next bars: no rule on price alone sees it, a model reading volume_z_60 can."""
    rng = np.random.default_rng(seed)
    frames = []
    for inst, level in (("BTC-USDT", 60000.0), ("ETH-USDT", 3000.0), ("SOL-USDT", 150.0)):
        spike = rng.random(bars) < 0.05
        drift = np.zeros(bars)
        for lag in range(1, 6):
            drift[lag:] += np.where(spike[:-lag], 1.2e-3, 0.0)
        returns = rng.normal(0.0, 1e-3, bars) + drift - drift.mean()
        close = level * np.exp(np.cumsum(returns))
        frame = candles_from_closes({inst: close})
        frame["volume"] = np.where(spike, 200.0, 10.0) * np.exp(rng.normal(0.0, 0.1, bars))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def labelled_rows(candles: pd.DataFrame, horizon: int = 5) -> pd.DataFrame:
    """Features joined to targets in memory, as the models' training read joins the tables."""
    start = candles["ts"].min()
    features = compute_features(candles, start=start)
    targets = compute_targets(candles, horizon=horizon, start=start)
    overlap = (set(features.columns) & set(targets.columns)) - {"inst_id", "ts"}
    assert not overlap, f"feature and target tables share columns {sorted(overlap)}"
    return features.merge(targets, on=["inst_id", "ts"], how="inner", validate="one_to_one")
