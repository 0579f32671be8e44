"""Offline demo market: seeded synthetic candles that behave like real crypto 1-minute bars.

The demo source lets the whole pipeline run without network access. The statistics live in
``demo_model``; this module ties them to the product: the calendar (DEMO_EPOCH is the model's
day 0, and every supported bar divides a day, so the bar grid is anchored at midnight UTC),
each instrument's parameters, and the candle frame. Every bar is a pure function of
(instrument, bar open time): requests for any range agree on overlapping bars, in any process.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from blofin_assets.market.bars import bar_duration
from blofin_assets.market.clock import as_utc
from blofin_assets.market.contract import CANDLE_COLUMNS, empty_candles, validate_instrument_id
from blofin_assets.market.sources import demo_model as model
from blofin_assets.market.sources.demo_model import MINUTES_PER_DAY, Instrument, stable_key

DEMO_EPOCH: pd.Timestamp = pd.Timestamp("2024-01-01T00:00:00Z")

_NS_PER_MINUTE = 60_000_000_000
_DAYS_PER_YEAR = 365.0
_BLOCK_DAYS = 64  # days of minutes held in memory at once (about 100k minutes per array)
_BAR_COLUMNS = ("open", "high", "low", "close", "volume")

# Known majors keep familiar levels and risk; any other id derives them from its hash.
# (start price, annualised vol, loading on the market factor, mean quote volume / minute)
_KNOWN_BASES: dict[str, tuple[float, float, float, float]] = {
    "BTC": (60_000.0, 0.55, 0.92, 1.5e6),
    "ETH": (3_000.0, 0.70, 0.85, 8.0e5),
    "SOL": (150.0, 0.90, 0.75, 3.0e5),
}
_USD_QUOTES = {"USDT", "USDC", "USD"}


def _unit_floats(text: str, count: int) -> np.ndarray:
    """Stable uniforms in [0, 1) that parametrise instruments without a lookup table."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8 * count, person=b"demo-par")
    raw = np.frombuffer(digest.digest(), dtype="<u8")
    return (raw >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _instrument(name: str) -> Instrument:
    """Majors get realistic levels; others get hash-derived but plausible ones."""
    parts = name.split("-")
    base, quote = parts[0], parts[1]
    known = _KNOWN_BASES.get(base) if quote in _USD_QUOTES else None
    if known is not None:
        price, ann_vol, rho, quote_volume = known
    else:
        u = _unit_floats(name, 4)
        price = float(10.0 ** (-2.0 + 5.0 * u[0]))
        ann_vol = float(0.7 + 0.6 * u[1])
        rho = float(0.5 + 0.3 * u[2])
        quote_volume = float(10.0 ** (4.0 + 1.5 * u[3]))
    sigma_1m = ann_vol / np.sqrt(_DAYS_PER_YEAR * MINUTES_PER_DAY)
    return Instrument(stable_key(name), float(np.log(price)), sigma_1m, rho, quote_volume)


def demo_candles(
    instruments: list[str], bar: str, start: pd.Timestamp, end: pd.Timestamp
) -> pd.DataFrame:
    """Demo bars with start <= ts < end, a pure function of (instrument, bar open time).

    Pure on purpose: the pipeline has one clock (possibly frozen), so callers make every bar
    a closed one by bounding `end` with market.bars.latest_closed_bar_open(now, bar) + bar
    duration. `start` before DEMO_EPOCH is clipped to it; naive timestamps are taken as UTC.
    Raises ValueError on an invalid instrument id or bar code.
    """
    names = sorted({validate_instrument_id(name) for name in instruments})
    step = bar_duration(bar)
    per_bar, remainder = divmod(step.value, _NS_PER_MINUTE)
    if remainder or MINUTES_PER_DAY % per_bar:
        raise ValueError(f"demo source needs a bar that divides a day, got {bar!r}")
    start_ns = max(as_utc(start).value, DEMO_EPOCH.value)
    end_ns = as_utc(end).value
    if not names or start_ns >= end_ns:
        return empty_candles()

    day_ns = MINUTES_PER_DAY * _NS_PER_MINUTE
    first_day = (start_ns - DEMO_EPOCH.value) // day_ns
    last_day = (end_ns - 1 - DEMO_EPOCH.value) // day_ns
    market_days = model.market_days(last_day + 2)  # +1 for the interpolation to the next day
    params = [_instrument(name) for name in names]
    states = [model.instrument_days(inst, market_days, DEMO_EPOCH.weekday()) for inst in params]

    pieces: list[dict[str, list[np.ndarray]]] = [{c: [] for c in _BAR_COLUMNS} for _ in names]
    timestamps: list[np.ndarray] = []
    # Days are independent given day-level state, so blocks bound memory without changing bars.
    for block_first in range(first_day, last_day + 1, _BLOCK_DAYS):
        block_last = min(block_first + _BLOCK_DAYS - 1, last_day)
        market = model.market_minutes(block_first, block_last)
        n_bars = (block_last - block_first + 1) * (MINUTES_PER_DAY // per_bar)
        ts_ns = block_first * day_ns + np.arange(n_bars, dtype=np.int64) * step.value
        ts_ns += DEMO_EPOCH.value
        keep = (ts_ns >= start_ns) & (ts_ns < end_ns)
        timestamps.append(ts_ns[keep])
        for inst, state, piece in zip(params, states, pieces, strict=True):
            minutes = model.instrument_minutes(inst, block_first, block_last, state, market)
            bars = model.aggregate(minutes, per_bar)
            for column in _BAR_COLUMNS:
                piece[column].append(getattr(bars, column)[keep])

    ts_all = np.concatenate(timestamps)
    frame = pd.DataFrame(
        {
            "inst_id": np.repeat(np.array(names, dtype=object), len(ts_all)),
            "ts": pd.to_datetime(np.tile(ts_all, len(names)), utc=True),
            **{c: np.concatenate([np.concatenate(p[c]) for p in pieces]) for c in _BAR_COLUMNS},
        }
    )
    return frame[CANDLE_COLUMNS]
