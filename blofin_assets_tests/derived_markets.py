"""The markets the derived-table tests append to and rebuild from: the demo market around a
fixed hour, and the same with what a thin real feed has (zero volume, outages, missing bars)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from blofin_assets.market.sources.demo import demo_candles

INSTRUMENTS = ["BTC-USDT", "ETH-USDT", "SOL-USDT"]
T0 = pd.Timestamp("2026-11-10 00:00", tz="UTC")
DAYS = 3  # training window; the market below starts two days before it
BAR = pd.Timedelta(minutes=1)


def market(end: pd.Timestamp, instruments: list[str] = INSTRUMENTS) -> pd.DataFrame:
    return demo_candles(instruments, "1m", T0 - pd.Timedelta(days=DAYS + 2), end)


def thin_market(end: pd.Timestamp) -> pd.DataFrame:
    """``market`` with what a thin real feed has: zero-volume bars (runs, single bars, a whole
    listed-but-untraded start of history), a bar that barely traded, outages and missing bars.

    Every change is a function of the bar's time, so two ends agree on the bars they share.
    The new hour after T0 and the first hour of the window stay complete, so the row counts
    of an hourly append are the same as on ``market``.
    """
    candles = market(end)
    minute = ((candles["ts"] - T0) // BAR).to_numpy()  # bar open, in minutes from T0
    inst = candles["inst_id"].to_numpy()
    rng = np.random.default_rng(14)
    span = np.arange(-(DAYS + 2) * 1440, 60)
    volume = candles["volume"].to_numpy().copy()
    btc, eth, sol = (inst == name for name in INSTRUMENTS)
    runs = [(-4000, 200), (-2000, 1), (-1500, 30), (-700, 61), (-200, 5), (-59, 20), (10, 15)]
    zero = btc & np.isin(minute, [a + k for a, n in runs for k in range(n)])
    zero |= btc & np.isin(minute, rng.choice(span, size=len(span) // 20, replace=False))
    zero |= eth & (minute < -4200)  # listed, but no trade until after the window starts
    zero |= sol & (((minute >= -1620) & (minute < -1590)) | ((minute >= -100) & (minute < -40)))
    volume[zero] = 0.0
    volume[btc & (minute == -3000)] *= 1e-6  # read by a rebuild, not by the hourly warm-up
    candles["volume"] = volume
    missing = rng.choice(np.arange(-2800, -200), size=50, replace=False)
    gap = (eth & (((minute >= -1000) & (minute < -880)) | np.isin(minute, missing))) | (
        sol & (minute >= -1800) & (minute < -1620)
    )
    return candles.loc[~gap].reset_index(drop=True)
