"""Offline demo market: seeded synthetic candles that behave like real crypto 1-minute bars.

The demo source lets the whole pipeline run without network access, so the data must carry
the statistical structure that makes ML on candles meaningful (and hard) on real markets:
fat tails, volatility clustering with unpredictable direction, intraday seasonality, a
common market factor, calm/turbulent regimes and volume that follows volatility.

Every bar is a pure function of (instrument, bar open time): requests for any range agree
on overlapping bars, in any process. To stay cheap, state is split in two levels:

* day level (one draw per day since DEMO_EPOCH, in fixed-size seeded chunks): regime,
  volatility level and the day's total log return, so the price at any day start is a
  cumulative sum of daily draws, not of every minute since the epoch;
* minute level (one RNG per (instrument, UTC day)): student-t innovations under a
  stochastic log-volatility made of AR(1) components, shaped into a bridge that ends
  exactly at the day's drawn total return. The slow components are warmed up on the
  previous day's innovations so volatility carries over midnight without any chain back
  to the epoch.

Bars coarser than 1m are aggregated from the 1m bars of the same day (every supported bar
divides a day and the grid is anchored at midnight UTC), so they agree with 1m exactly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.signal import lfilter
from scipy.special import gammaln

from blofin_assets.market.bars import bar_duration
from blofin_assets.market.contract import CANDLE_COLUMNS, empty_candles, validate_instrument_id

DEMO_EPOCH: pd.Timestamp = pd.Timestamp("2024-01-01T00:00:00Z")

_MINUTES_PER_DAY = 1440
_NS_PER_MINUTE = 60_000_000_000
_DAYS_PER_YEAR = 365.0

# Changing the salt changes every demo candle: it is part of the data's identity. Any salt
# has the same statistics; this one keeps the majors' paths in a familiar range to 2026.
_SALT = 0xB10F_DE4A
_KIND_DAILY = 1
_KIND_DAILY_INIT = 2
_KIND_INTRADAY = 3
_DAILY_CHUNK = 256  # daily draws come in fixed chunks so longer histories extend, never reshuffle

# Student-t innovations, rescaled to unit variance (df > 2 keeps the variance finite).
_T_DF = 4.0
_T_SCALE = float(np.sqrt((_T_DF - 2.0) / _T_DF))

# Minute-level stochastic log-volatility: (phi, stationary sd). Market components are
# shared by every instrument, so turbulence is market-wide, as in real crypto.
_MKT_FAST = (0.95, 0.25)
_MKT_SLOW = (0.993, 0.35)
_IDIO_FAST = (0.90, 0.15)
_IDIO_SLOW = (0.99, 0.15)
_PREROLL = 720  # minutes of the previous day replayed so volatility is continuous at 00:00
_BLOCK_DAYS = 64  # days of minutes held in memory at once (about 100k minutes per array)
# News-like volatility bursts: Poisson per day, uniform size in log-vol, AR(1) decay.
_EVENTS_PER_DAY = 1.0
_EVENT_SIZE = (0.4, 1.4)
_EVENT_PHI = 0.97

# Day-level volatility: AR(1) level plus a persistent turbulent regime.
_DAY_LEVEL = (0.85, 0.25)
_REGIME_PHI = 0.97
_REGIME_THRESHOLD = 0.9  # about 18% of days turbulent
_REGIME_LOG_MULT = float(np.log(2.2))
_IDIO_DAY_LEVEL = (0.80, 0.15)

# Intrabar excursion beyond the open/close (log units, times the minute's sigma).
_WICK_SCALE = 0.4
# Volume: elasticity to volatility and to the size of the minute's move, and AR(1) noise.
_VOLUME_VOL_ELASTICITY = 0.8
_VOLUME_MOVE_LOADING = 0.3
_VOLUME_NOISE = (0.6, 0.3)

# Known majors keep familiar levels and risk; any other id derives them from its hash.
# (start price, annualised vol, loading on the market factor, mean quote volume / minute)
_KNOWN_BASES: dict[str, tuple[float, float, float, float]] = {
    "BTC": (60_000.0, 0.55, 0.92, 1.5e6),
    "ETH": (3_000.0, 0.70, 0.85, 8.0e5),
    "SOL": (150.0, 0.90, 0.75, 3.0e5),
}
_USD_QUOTES = {"USDT", "USDC", "USD"}


@dataclass(frozen=True)
class _Instrument:
    name: str
    key: int
    log_p0: float
    sigma_1m: float
    rho: float
    quote_volume: float


def _stable_key(text: str) -> int:
    """64-bit key from the name; hashlib, because hash() is salted per process."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, person=b"demo-key").digest()
    return int.from_bytes(digest, "little")


def _unit_floats(text: str, count: int) -> np.ndarray:
    """Stable uniforms in [0, 1) that parametrise instruments without a lookup table."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8 * count, person=b"demo-par")
    raw = np.frombuffer(digest.digest(), dtype="<u8")
    return (raw >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _instrument(name: str) -> _Instrument:
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
    sigma_1m = ann_vol / np.sqrt(_DAYS_PER_YEAR * _MINUTES_PER_DAY)
    return _Instrument(name, _stable_key(name), float(np.log(price)), sigma_1m, rho, quote_volume)


_MARKET_KEY = _stable_key("demo-market-factor")


def _rng(*entropy: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([_SALT, *entropy]))


def _circular_bump(minutes: np.ndarray, center_hour: float, width_hours: float) -> np.ndarray:
    delta = (minutes / 60.0 - center_hour + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (delta / width_hours) ** 2)


def _season_profiles() -> tuple[np.ndarray, np.ndarray]:
    """(7, 1440) volatility and volume multipliers by weekday and minute of day (UTC).

    Crypto trades 24/7 but its activity follows the TradFi clock: Asia and Europe opens,
    a large US-session hump (13:30-16:00 UTC), a quiet late-US evening, quieter weekends
    and a spike at the top of each hour when scheduled orders fire.
    """
    minutes = np.arange(_MINUTES_PER_DAY, dtype=np.float64)
    intraday = (
        1.0
        + 0.25 * _circular_bump(minutes, 1.0, 1.0)
        + 0.20 * _circular_bump(minutes, 8.5, 1.0)
        + 0.85 * _circular_bump(minutes, 14.75, 1.1)
        - 0.25 * _circular_bump(minutes, 21.5, 2.0)
    )
    intraday = intraday * np.where(minutes % 60 == 0, 1.3, 1.0)
    weekday = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.7, 0.7])  # Monday first
    vol = weekday[:, None] * intraday[None, :]
    vol = vol / np.sqrt(np.mean(vol**2))  # average variance is set by the instrument's sigma
    volume = vol**1.3
    volume = volume / volume.mean()
    return vol, volume


_VOL_SEASON, _VOLUME_SEASON = _season_profiles()
_EPOCH_WEEKDAY = DEMO_EPOCH.weekday()


def _regime_log_mult(x: np.ndarray) -> np.ndarray:
    return _REGIME_LOG_MULT / (1.0 + np.exp(-5.0 * (x - _REGIME_THRESHOLD)))


def _half_log_mean_exp2(values: np.ndarray, weights: np.ndarray) -> float:
    return 0.5 * float(np.log(np.sum(weights * np.exp(2.0 * values))))


def _day_level_offset() -> float:
    """Centre the day-level log-vol so that its mean variance multiplier is exactly one."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    weights = weights / weights.sum()
    regime = _half_log_mean_exp2(_regime_log_mult(nodes), weights)
    return regime + _DAY_LEVEL[1] ** 2


def _event_offset() -> float:
    """0.5 log E[exp(2 * burst)] for the compound-Poisson bursts (Campbell's formula)."""
    lo, hi = _EVENT_SIZE
    decay = _EVENT_PHI ** np.arange(2_000, dtype=np.float64)
    # expm1 keeps the far tail (tiny decay) free of cancellation.
    mean_exp = (np.expm1(2.0 * decay * hi) - np.expm1(2.0 * decay * lo)) / (2.0 * decay * (hi - lo))
    rate = _EVENTS_PER_DAY / _MINUTES_PER_DAY
    return 0.5 * rate * float(np.sum(mean_exp - 1.0))


_DAY_OFFSET = _day_level_offset()
_MINUTE_OFFSET = (
    _MKT_FAST[1] ** 2 + _MKT_SLOW[1] ** 2 + _IDIO_FAST[1] ** 2 + _IDIO_SLOW[1] ** 2
) + _event_offset()


def _abs_t_mean() -> float:
    """E|e| of a unit-variance t innovation, to centre volume's response to move size."""
    nu = _T_DF
    log_mean = 0.5 * np.log(nu) + gammaln((nu - 1) / 2) - 0.5 * np.log(np.pi) - gammaln(nu / 2)
    return float(np.exp(log_mean)) * _T_SCALE


_ABS_T_MEAN = _abs_t_mean()


def _ar1(innovations: np.ndarray, phi: float, sd: float, init: np.ndarray) -> np.ndarray:
    """Stationary AR(1) along the last axis; `init` is a standard-normal starting state."""
    zi = (phi * sd * np.asarray(init, dtype=np.float64))[..., None]
    out, _ = lfilter([sd * np.sqrt(1.0 - phi**2)], [1.0, -phi], innovations, axis=-1, zi=zi)
    return out


def _daily_draws(key: int, n_days: int, n_normal: int, n_t: int) -> tuple[np.ndarray, ...]:
    """Day-level draws from chunked seeds, so a longer history only appends to a shorter one."""
    n_chunks = max(1, -(-n_days // _DAILY_CHUNK))
    normals, student = [], []
    for chunk in range(n_chunks):
        rng = _rng(key, _KIND_DAILY, chunk)
        normals.append(rng.standard_normal((n_normal, _DAILY_CHUNK)))
        student.append(rng.standard_t(_T_DF, (n_t, _DAILY_CHUNK)) * _T_SCALE)
    init = _rng(key, _KIND_DAILY_INIT).standard_normal(n_normal)
    return (
        np.concatenate(normals, axis=1)[:, :n_days],
        np.concatenate(student, axis=1)[:, :n_days],
        init,
    )


@dataclass
class _MarketDays:
    log_level: np.ndarray  # (n_days,) market day-level log-vol, days 0..n_days-1
    shock: np.ndarray  # (n_days,) unit-variance daily market return shock


def _market_days(n_days: int) -> _MarketDays:
    normals, student, init = _daily_draws(_MARKET_KEY, n_days, 2, 1)
    regime_driver = _ar1(normals[0], _REGIME_PHI, 1.0, init[0])
    level = _ar1(normals[1], *_DAY_LEVEL, init[1])
    log_level = level + _regime_log_mult(regime_driver) - _DAY_OFFSET
    return _MarketDays(log_level=log_level, shock=student[0])


def _interpolate_days(log_level: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Piecewise-linear between day centres, so day-level changes don't jump at midnight."""
    position = (np.arange(_MINUTES_PER_DAY) + 0.5) / _MINUTES_PER_DAY - 0.5
    current = log_level[days][:, None]
    previous = log_level[np.maximum(days - 1, 0)][:, None]
    following = log_level[days + 1][:, None]
    before = current + position * (current - previous)
    after = current + position * (following - current)
    return np.where(position < 0.0, before, after)


def _with_preroll(innovations: np.ndarray) -> np.ndarray:
    """Prefix each day with the previous day's last minutes (row 0 is the extra day before)."""
    return np.concatenate([innovations[:-1, -_PREROLL:], innovations[1:]], axis=1)


@dataclass
class _MarketMinutes:
    shock: np.ndarray  # (n, 1440) unit-variance market innovations
    log_vol: np.ndarray  # (n, 1440) market minute-level log-vol deviation


def _market_minutes(first_day: int, last_day: int) -> _MarketMinutes:
    """Market innovations and volatility for days first_day..last_day (shared by instruments)."""
    n = last_day - first_day + 1
    sv = np.empty((2, n + 1, _MINUTES_PER_DAY))
    bursts = np.zeros((n + 1, _MINUTES_PER_DAY))
    init = np.empty((2, n + 1))
    shock = np.empty((n + 1, _MINUTES_PER_DAY))
    lo, hi = _EVENT_SIZE
    for row, day in enumerate(range(first_day - 1, last_day + 1)):
        rng = _rng(_MARKET_KEY, _KIND_INTRADAY, day + 1)
        # Draw order is part of the data: pre-roll inputs first, so the extra day stops early.
        sv[:, row] = rng.standard_normal((2, _MINUTES_PER_DAY))
        count = rng.poisson(_EVENTS_PER_DAY)
        np.add.at(bursts[row], rng.integers(0, _MINUTES_PER_DAY, count), rng.uniform(lo, hi, count))
        if row == 0:
            continue
        init[:, row] = rng.standard_normal(2)
        shock[row] = rng.standard_t(_T_DF, _MINUTES_PER_DAY) * _T_SCALE
    fast = _ar1(_with_preroll(sv[0]), *_MKT_FAST, init[0, 1:])
    slow = _ar1(_with_preroll(sv[1]), *_MKT_SLOW, init[1, 1:])
    burst = lfilter([1.0], [1.0, -_EVENT_PHI], _with_preroll(bursts), axis=-1)
    log_vol = (fast + slow + burst)[:, _PREROLL:]
    return _MarketMinutes(shock=shock[1:], log_vol=log_vol)


@dataclass
class _Minutes:
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


@dataclass
class _InstrumentDays:
    log_level: np.ndarray  # (n_history,) day-level log-vol (market + idiosyncratic)
    day_return: np.ndarray  # (n_history,) total log return of each day
    open_log: np.ndarray  # (n_history + 1,) log price at each day's 00:00 UTC


def _instrument_days(inst: _Instrument, market_days: _MarketDays) -> _InstrumentDays:
    """Day-level state from the epoch: O(days) and cheap, it never touches minutes."""
    n_history = len(market_days.log_level)
    normals, student, init_daily = _daily_draws(inst.key, n_history, 1, 1)
    idio_level = _ar1(normals[0], *_IDIO_DAY_LEVEL, init_daily[0]) - _IDIO_DAY_LEVEL[1] ** 2
    log_level = market_days.log_level + idio_level
    weekday = (_EPOCH_WEEKDAY + np.arange(n_history)) % 7
    season_norm = np.sqrt(np.sum(_VOL_SEASON**2, axis=1))[weekday]
    day_sigma = inst.sigma_1m * np.exp(log_level) * season_norm
    shock = inst.rho * market_days.shock + np.sqrt(1.0 - inst.rho**2) * student[0]
    day_return = day_sigma * shock
    open_log = inst.log_p0 + np.concatenate([[0.0], np.cumsum(day_return)])
    return _InstrumentDays(log_level=log_level, day_return=day_return, open_log=open_log)


def _instrument_minutes(
    inst: _Instrument,
    first_day: int,
    last_day: int,
    state: _InstrumentDays,
    market: _MarketMinutes,
) -> _Minutes:
    """1m OHLCV, shape (n_days, 1440), for one instrument over whole UTC days."""
    n = last_day - first_day + 1
    day_log_level, day_return, day_open_log = state.log_level, state.day_return, state.open_log
    rho_idio = np.sqrt(1.0 - inst.rho**2)

    sv = np.empty((2, n + 1, _MINUTES_PER_DAY))
    init = np.empty((3, n + 1))
    shock = np.empty((n + 1, _MINUTES_PER_DAY))
    wicks = np.empty((2, n + 1, _MINUTES_PER_DAY))
    volume_noise = np.empty((n + 1, _MINUTES_PER_DAY))
    for row, day in enumerate(range(first_day - 1, last_day + 1)):
        rng = _rng(inst.key, _KIND_INTRADAY, day + 1)
        sv[:, row] = rng.standard_normal((2, _MINUTES_PER_DAY))
        if row == 0:
            continue
        init[:, row] = rng.standard_normal(3)
        shock[row] = rng.standard_t(_T_DF, _MINUTES_PER_DAY) * _T_SCALE
        wicks[:, row] = rng.standard_exponential((2, _MINUTES_PER_DAY))
        volume_noise[row] = rng.standard_normal(_MINUTES_PER_DAY)
    fast = _ar1(_with_preroll(sv[0]), *_IDIO_FAST, init[0, 1:])[:, _PREROLL:]
    slow = _ar1(_with_preroll(sv[1]), *_IDIO_SLOW, init[1, 1:])[:, _PREROLL:]

    days = np.arange(first_day, last_day + 1)
    weekday = (_EPOCH_WEEKDAY + days) % 7
    log_vol = _interpolate_days(day_log_level, days) + market.log_vol + fast + slow - _MINUTE_OFFSET
    sigma = inst.sigma_1m * np.exp(log_vol) * _VOL_SEASON[weekday]
    innovation = inst.rho * market.shock + rho_idio * shock[1:]
    returns = sigma * innovation

    # Bridge in business time: the gap to the day's drawn total return is spread in proportion
    # to each minute's variance, so the day ends exactly where the day-level series starts the
    # next one, yet increments stay uncorrelated (a uniform spread would leak a drift that
    # past returns could predict in calm minutes).
    path = np.cumsum(returns, axis=1)
    target = day_return[days]
    variance = sigma**2
    business_time = np.cumsum(variance, axis=1) / np.sum(variance, axis=1, keepdims=True)
    path += (target - path[:, -1])[:, None] * business_time
    close_log = day_open_log[days][:, None] + path
    close_log[:, -1] = day_open_log[days + 1]  # bit-identical to the next day's open
    open_log = np.concatenate([day_open_log[days][:, None], close_log[:, :-1]], axis=1)

    high_log = np.maximum(open_log, close_log) + _WICK_SCALE * sigma * wicks[0, 1:]
    low_log = np.minimum(open_log, close_log) - _WICK_SCALE * sigma * wicks[1, 1:]

    noise = _ar1(volume_noise[1:], *_VOLUME_NOISE, init[2, 1:])
    log_quote_volume = (
        np.log(inst.quote_volume * _VOLUME_SEASON[weekday])
        + _VOLUME_VOL_ELASTICITY * log_vol
        + _VOLUME_MOVE_LOADING * (np.abs(innovation) - _ABS_T_MEAN)
        + noise
        - 0.5 * _VOLUME_NOISE[1] ** 2
    )
    volume = np.exp(log_quote_volume - 0.5 * (open_log + close_log))  # base-currency units
    return _Minutes(
        open=np.exp(open_log),
        high=np.exp(high_log),
        low=np.exp(low_log),
        close=np.exp(close_log),
        volume=volume,
    )


def _aggregate(minutes: _Minutes, per_bar: int) -> _Minutes:
    """Whole-day 1m blocks to coarser bars: first open, max high, min low, last close, sum."""

    def blocks(values: np.ndarray) -> np.ndarray:
        return values.reshape(values.shape[0], -1, per_bar)

    return _Minutes(
        open=blocks(minutes.open)[:, :, 0].ravel(),
        high=blocks(minutes.high).max(axis=2).ravel(),
        low=blocks(minutes.low).min(axis=2).ravel(),
        close=blocks(minutes.close)[:, :, -1].ravel(),
        volume=blocks(minutes.volume).sum(axis=2).ravel(),
    )


def _as_utc(ts: pd.Timestamp | str) -> pd.Timestamp:
    """Naive timestamps are read as UTC, matching the frame contract's clock."""
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def latest_closed_bar_open(now: pd.Timestamp, bar: str) -> pd.Timestamp:
    """Open time of the newest bar already closed at `now`: the frontier a poller may fetch.

    Bars are on a grid anchored at DEMO_EPOCH (midnight UTC), so a bar opening at t closes
    at t + duration; the one in progress at `now` is never returned.
    """
    step = bar_duration(bar).value
    now_ns = _as_utc(now).value
    floored = DEMO_EPOCH.value + ((now_ns - DEMO_EPOCH.value) // step) * step
    return pd.Timestamp(floored - step, tz="UTC")


def demo_candles(
    instruments: list[str], bar: str, start: pd.Timestamp, end: pd.Timestamp
) -> pd.DataFrame:
    """Demo bars with start <= ts < end, a pure function of (instrument, bar open time).

    Pure on purpose: the pipeline has one clock (possibly frozen), so callers make every bar
    a closed one by bounding `end` with latest_closed_bar_open(now, bar) + bar duration.
    `start` before DEMO_EPOCH is clipped to it; naive timestamps are taken as UTC.
    Raises ValueError on an invalid instrument id or bar code.
    """
    names = sorted({validate_instrument_id(name) for name in instruments})
    step = bar_duration(bar)
    per_bar, remainder = divmod(step.value, _NS_PER_MINUTE)
    if remainder or _MINUTES_PER_DAY % per_bar:
        raise ValueError(f"demo source needs a bar that divides a day, got {bar!r}")
    start_ns = max(_as_utc(start).value, DEMO_EPOCH.value)
    end_ns = _as_utc(end).value
    if not names or start_ns >= end_ns:
        return empty_candles()

    day_ns = _MINUTES_PER_DAY * _NS_PER_MINUTE
    first_day = (start_ns - DEMO_EPOCH.value) // day_ns
    last_day = (end_ns - 1 - DEMO_EPOCH.value) // day_ns
    market_days = _market_days(last_day + 2)  # +1 for the interpolation to the next day
    params = [_instrument(name) for name in names]
    states = [_instrument_days(inst, market_days) for inst in params]

    columns = ("open", "high", "low", "close", "volume")
    pieces: list[dict[str, list[np.ndarray]]] = [{c: [] for c in columns} for _ in names]
    timestamps: list[np.ndarray] = []
    # Days are independent given day-level state, so blocks bound memory without changing bars.
    for block_first in range(first_day, last_day + 1, _BLOCK_DAYS):
        block_last = min(block_first + _BLOCK_DAYS - 1, last_day)
        market = _market_minutes(block_first, block_last)
        n_bars = (block_last - block_first + 1) * (_MINUTES_PER_DAY // per_bar)
        ts_ns = block_first * day_ns + np.arange(n_bars, dtype=np.int64) * step.value
        ts_ns += DEMO_EPOCH.value
        keep = (ts_ns >= start_ns) & (ts_ns < end_ns)
        timestamps.append(ts_ns[keep])
        for inst, state, piece in zip(params, states, pieces, strict=True):
            minutes = _instrument_minutes(inst, block_first, block_last, state, market)
            bars = _aggregate(minutes, per_bar)
            for column in columns:
                piece[column].append(getattr(bars, column)[keep])

    ts_all = np.concatenate(timestamps)
    frame = pd.DataFrame(
        {
            "inst_id": np.repeat(np.array(names, dtype=object), len(ts_all)),
            "ts": pd.to_datetime(np.tile(ts_all, len(names)), utc=True),
            **{c: np.concatenate([np.concatenate(p[c]) for p in pieces]) for c in columns},
        }
    )
    return frame[CANDLE_COLUMNS]
