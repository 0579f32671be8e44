"""The demo market's statistical model: seeded day-level and minute-level draws, 1m OHLCV.

The demo data must carry the structure that makes ML on candles meaningful (and hard) on real
markets: fat tails, volatility clustering with unpredictable direction, intraday seasonality,
a common market factor, calm/turbulent regimes and volume that follows volatility.

Every bar is a pure function of (instrument, day index, minute of day): day 0 is the demo
epoch, and only ``demo.py`` maps days to calendar time. To stay cheap, state is split in two
levels:

* day level (one draw per day since day 0, in fixed-size seeded chunks): regime, volatility
  level and the day's total log return, so the price at any day start is a cumulative sum of
  daily draws, not of every minute since the epoch;
* minute level (one RNG per (instrument, UTC day)): student-t innovations under a stochastic
  log-volatility made of AR(1) components, shaped into a bridge that ends exactly at the
  day's drawn total return. The slow components are warmed up on the previous day's
  innovations so volatility carries over midnight without any chain back to the epoch.

Bars coarser than 1m are aggregated from the 1m bars of the same day (every supported bar
divides a day), so they agree with 1m exactly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter
from scipy.special import gammaln

MINUTES_PER_DAY = 1440

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


@dataclass(frozen=True)
class Instrument:
    """What the model needs to know about one instrument; demo.py derives it from the name."""

    key: int  # seeds every draw of the instrument
    log_p0: float
    sigma_1m: float
    rho: float
    quote_volume: float


def stable_key(text: str) -> int:
    """64-bit seed key from a name; hashlib, because hash() is salted per process."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, person=b"demo-key").digest()
    return int.from_bytes(digest, "little")


_MARKET_KEY = stable_key("demo-market-factor")


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
    minutes = np.arange(MINUTES_PER_DAY, dtype=np.float64)
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
    rate = _EVENTS_PER_DAY / MINUTES_PER_DAY
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
class MarketDays:
    log_level: np.ndarray  # (n_days,) market day-level log-vol, days 0..n_days-1
    shock: np.ndarray  # (n_days,) unit-variance daily market return shock


def market_days(n_days: int) -> MarketDays:
    """Market-wide day-level state: one series, so every instrument shares its regimes."""
    normals, student, init = _daily_draws(_MARKET_KEY, n_days, 2, 1)
    regime_driver = _ar1(normals[0], _REGIME_PHI, 1.0, init[0])
    level = _ar1(normals[1], *_DAY_LEVEL, init[1])
    log_level = level + _regime_log_mult(regime_driver) - _DAY_OFFSET
    return MarketDays(log_level=log_level, shock=student[0])


def _interpolate_days(log_level: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Piecewise-linear between day centres, so day-level changes don't jump at midnight."""
    position = (np.arange(MINUTES_PER_DAY) + 0.5) / MINUTES_PER_DAY - 0.5
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
class MarketMinutes:
    shock: np.ndarray  # (n, 1440) unit-variance market innovations
    log_vol: np.ndarray  # (n, 1440) market minute-level log-vol deviation


def market_minutes(first_day: int, last_day: int) -> MarketMinutes:
    """Market innovations and volatility for days first_day..last_day (shared by instruments)."""
    n = last_day - first_day + 1
    sv = np.empty((2, n + 1, MINUTES_PER_DAY))
    bursts = np.zeros((n + 1, MINUTES_PER_DAY))
    init = np.empty((2, n + 1))
    shock = np.empty((n + 1, MINUTES_PER_DAY))
    lo, hi = _EVENT_SIZE
    for row, day in enumerate(range(first_day - 1, last_day + 1)):
        rng = _rng(_MARKET_KEY, _KIND_INTRADAY, day + 1)
        # Draw order is part of the data: pre-roll inputs first, so the extra day stops early.
        sv[:, row] = rng.standard_normal((2, MINUTES_PER_DAY))
        count = rng.poisson(_EVENTS_PER_DAY)
        np.add.at(bursts[row], rng.integers(0, MINUTES_PER_DAY, count), rng.uniform(lo, hi, count))
        if row == 0:
            continue
        init[:, row] = rng.standard_normal(2)
        shock[row] = rng.standard_t(_T_DF, MINUTES_PER_DAY) * _T_SCALE
    fast = _ar1(_with_preroll(sv[0]), *_MKT_FAST, init[0, 1:])
    slow = _ar1(_with_preroll(sv[1]), *_MKT_SLOW, init[1, 1:])
    burst = lfilter([1.0], [1.0, -_EVENT_PHI], _with_preroll(bursts), axis=-1)
    log_vol = (fast + slow + burst)[:, _PREROLL:]
    return MarketMinutes(shock=shock[1:], log_vol=log_vol)


@dataclass
class Bars:  # OHLCV arrays: (n_days, 1440) for minutes, flat once aggregated
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


@dataclass
class InstrumentDays:
    log_level: np.ndarray  # (n_history,) day-level log-vol (market + idiosyncratic)
    day_return: np.ndarray  # (n_history,) total log return of each day
    open_log: np.ndarray  # (n_history + 1,) log price at each day's 00:00 UTC
    weekday: np.ndarray  # (n_history,) 0 = Monday, the row of the seasonal profiles


def instrument_days(inst: Instrument, market: MarketDays, epoch_weekday: int) -> InstrumentDays:
    """Day-level state from day 0: O(days) and cheap, it never touches minutes."""
    n_history = len(market.log_level)
    normals, student, init_daily = _daily_draws(inst.key, n_history, 1, 1)
    idio_level = _ar1(normals[0], *_IDIO_DAY_LEVEL, init_daily[0]) - _IDIO_DAY_LEVEL[1] ** 2
    log_level = market.log_level + idio_level
    weekday = (epoch_weekday + np.arange(n_history)) % 7
    season_norm = np.sqrt(np.sum(_VOL_SEASON**2, axis=1))[weekday]
    day_sigma = inst.sigma_1m * np.exp(log_level) * season_norm
    shock = inst.rho * market.shock + np.sqrt(1.0 - inst.rho**2) * student[0]
    day_return = day_sigma * shock
    open_log = inst.log_p0 + np.concatenate([[0.0], np.cumsum(day_return)])
    return InstrumentDays(log_level, day_return, open_log, weekday)


@dataclass
class _InstrumentDraws:
    sv: np.ndarray  # (2, n + 1, 1440) log-vol innovations; row 0 is the pre-roll day
    init: np.ndarray  # (3, n) standard-normal starts: fast, slow, volume noise
    shock: np.ndarray  # (n, 1440) unit-variance idiosyncratic return innovations
    wicks: np.ndarray  # (2, n, 1440) exponential excursions above and below
    volume_noise: np.ndarray  # (n, 1440) volume noise innovations


def _instrument_draws(inst: Instrument, first_day: int, last_day: int) -> _InstrumentDraws:
    """One RNG per (instrument, day); the draw order is part of the data, so never reorder."""
    n = last_day - first_day + 1
    sv = np.empty((2, n + 1, MINUTES_PER_DAY))
    init = np.empty((3, n + 1))
    shock = np.empty((n + 1, MINUTES_PER_DAY))
    wicks = np.empty((2, n + 1, MINUTES_PER_DAY))
    volume_noise = np.empty((n + 1, MINUTES_PER_DAY))
    for row, day in enumerate(range(first_day - 1, last_day + 1)):
        rng = _rng(inst.key, _KIND_INTRADAY, day + 1)
        sv[:, row] = rng.standard_normal((2, MINUTES_PER_DAY))
        if row == 0:
            continue
        init[:, row] = rng.standard_normal(3)
        shock[row] = rng.standard_t(_T_DF, MINUTES_PER_DAY) * _T_SCALE
        wicks[:, row] = rng.standard_exponential((2, MINUTES_PER_DAY))
        volume_noise[row] = rng.standard_normal(MINUTES_PER_DAY)
    return _InstrumentDraws(sv, init[:, 1:], shock[1:], wicks[:, 1:], volume_noise[1:])


def _bridge(
    returns: np.ndarray, sigma: np.ndarray, state: InstrumentDays, days: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(open_log, close_log) of each minute, ending every day on its drawn total return.

    Bridge in business time: the gap to the day's drawn total return is spread in proportion
    to each minute's variance, so the day ends exactly where the day-level series starts the
    next one, yet increments stay uncorrelated (a uniform spread would leak a drift that past
    returns could predict in calm minutes).
    """
    path = np.cumsum(returns, axis=1)
    target = state.day_return[days]
    variance = sigma**2
    business_time = np.cumsum(variance, axis=1) / np.sum(variance, axis=1, keepdims=True)
    path += (target - path[:, -1])[:, None] * business_time
    close_log = state.open_log[days][:, None] + path
    close_log[:, -1] = state.open_log[days + 1]  # bit-identical to the next day's open
    open_log = np.concatenate([state.open_log[days][:, None], close_log[:, :-1]], axis=1)
    return open_log, close_log


def _base_volume(
    inst: Instrument,
    log_vol: np.ndarray,
    innovation: np.ndarray,
    open_log: np.ndarray,
    close_log: np.ndarray,
    draws: _InstrumentDraws,
    weekday: np.ndarray,
) -> np.ndarray:
    """Volume in base currency: quote volume follows volatility and the size of the move."""
    noise = _ar1(draws.volume_noise, *_VOLUME_NOISE, draws.init[2])
    log_quote_volume = (
        np.log(inst.quote_volume * _VOLUME_SEASON[weekday])
        + _VOLUME_VOL_ELASTICITY * log_vol
        + _VOLUME_MOVE_LOADING * (np.abs(innovation) - _ABS_T_MEAN)
        + noise
        - 0.5 * _VOLUME_NOISE[1] ** 2
    )
    return np.exp(log_quote_volume - 0.5 * (open_log + close_log))


def instrument_minutes(
    inst: Instrument, first_day: int, last_day: int, state: InstrumentDays, market: MarketMinutes
) -> Bars:
    """1m OHLCV, shape (n_days, 1440), for one instrument over whole UTC days."""
    draws = _instrument_draws(inst, first_day, last_day)
    fast = _ar1(_with_preroll(draws.sv[0]), *_IDIO_FAST, draws.init[0])[:, _PREROLL:]
    slow = _ar1(_with_preroll(draws.sv[1]), *_IDIO_SLOW, draws.init[1])[:, _PREROLL:]

    days = np.arange(first_day, last_day + 1)
    weekday = state.weekday[days]
    log_vol = _interpolate_days(state.log_level, days) + market.log_vol + fast + slow
    log_vol = log_vol - _MINUTE_OFFSET
    sigma = inst.sigma_1m * np.exp(log_vol) * _VOL_SEASON[weekday]
    innovation = inst.rho * market.shock + np.sqrt(1.0 - inst.rho**2) * draws.shock
    open_log, close_log = _bridge(sigma * innovation, sigma, state, days)

    high_log = np.maximum(open_log, close_log) + _WICK_SCALE * sigma * draws.wicks[0]
    low_log = np.minimum(open_log, close_log) - _WICK_SCALE * sigma * draws.wicks[1]
    return Bars(
        open=np.exp(open_log),
        high=np.exp(high_log),
        low=np.exp(low_log),
        close=np.exp(close_log),
        volume=_base_volume(inst, log_vol, innovation, open_log, close_log, draws, weekday),
    )


def aggregate(minutes: Bars, per_bar: int) -> Bars:
    """Whole-day 1m blocks to coarser bars: first open, max high, min low, last close, sum."""

    def blocks(values: np.ndarray) -> np.ndarray:
        return values.reshape(values.shape[0], -1, per_bar)

    return Bars(
        open=blocks(minutes.open)[:, :, 0].ravel(),
        high=blocks(minutes.high).max(axis=2).ravel(),
        low=blocks(minutes.low).min(axis=2).ravel(),
        close=blocks(minutes.close)[:, :, -1].ravel(),
        volume=blocks(minutes.volume).sum(axis=2).ravel(),
    )
