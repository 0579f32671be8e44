"""Model inputs: scale-free, strictly trailing indicators computed per instrument.

Why these choices:

* Every feature is *scale-free* (log returns, ratios to the close, z-scores, bounded
  oscillators, calendar sin/cos), so BTC at 60000 and SOL at 150 live on the same axes and
  can be pooled in one model; no feature depends on the price level or the volume unit.
* Every feature at row ``t`` uses candles ``<= t`` only: trailing windows, recursive
  TA-Lib filters run forward from the first bar, no centered windows, no back-fill, no
  normalisation over the whole series.  Appending or changing later candles never changes
  an earlier row, so training rows are exactly what serving would have seen.
* Every feature at row ``t`` is a function of a bounded window of candles ending at ``t``
  that fits in FEATURE_WARMUP_BARS (the recursive filters to rounding, see below), never of
  a running statistic such as "the smallest volume seen so far": a row does not depend on
  where the read started, so an hourly append equals a rebuild.
* Instruments are computed one block at a time, so one instrument never leaks into another.
* Rows without a full window (the first FEATURE_WARMUP_BARS bars of each instrument) are
  dropped, never filled: a filled value would be a number the model never sees in serving.
  FEATURE_WARMUP_BARS is also far longer than the memory of the recursive (Wilder/EMA)
  indicators (their seed weight is below 1e-40 after it), so features computed on only the
  last FEATURE_WARMUP_BARS + 1 bars reproduce the full-history row: serving needs no more.
* Bars are indexed by position: a gap in the candle stream is treated as adjacent bars.
* Degenerate windows get a neutral value instead of inf/NaN: zero range -> body 0, flat
  Bollinger window -> %B 0.5, identical volumes -> z 0, a zero-volume bar -> the quietest
  traded bar of its volume window (no trade in the window -> z 0).  TA-Lib's own conventions
  are kept for its oscillators (a 14-bar window with no price movement gives Stoch %K and
  MFI 0).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import talib

from blofin_assets.market.contract import empty_keyed_frame
from blofin_assets.ml.blocks import check_prices, first_output_rows, instrument_blocks, run_blocks
from blofin_assets.ml.series import log_returns, realised_volatility

REFERENCE_COLUMNS: list[str] = ["close"]

RETURN_WINDOWS: tuple[int, ...] = (1, 5, 15, 60)
VOLATILITY_WINDOWS: tuple[int, ...] = (5, 15, 60, 1440)
VOLUME_Z_WINDOW = 60

# Order is the model input order forever: append new features at the end, never reorder.
FEATURE_COLUMNS: list[str] = [
    "ret_1",  # ln(close_t / close_t-1)
    "ret_5",  # ln(close_t / close_t-5)
    "ret_15",  # ln(close_t / close_t-15)
    "ret_60",  # ln(close_t / close_t-60)
    "rv_5",  # sqrt(sum of squared 1-bar log returns, t-4..t)
    "rv_15",  # same over 15 bars
    "rv_60",  # same over 60 bars
    "rv_1440",  # same over 1440 bars (one day of 1m bars)
    "vol_ratio_5_60",  # per-bar rv_5 / per-bar rv_60: volatility expanding (>1) or calming
    "vol_ratio_60_1440",  # per-bar rv_60 / per-bar rv_1440
    "volume_z_60",  # z-score of log volume against its trailing 60 bars
    "range_rel",  # (high - low) / close
    "body_to_range",  # (close - open) / (high - low), 0 for a zero-range bar
    "rsi_14",  # Wilder RSI(14), 0..100
    "atr_14_rel",  # ATR(14) / close
    "macd_hist_rel",  # MACD(12, 26, 9) histogram / close
    "bb_pctb_20",  # Bollinger %B (20, 2): where close sits in the bands
    "bb_width_20",  # Bollinger band width (upper - lower) / middle
    "adx_14",  # ADX(14), trend strength 0..100
    "stoch_k_14",  # slow stochastic %K (14, 3), 0..100
    "mfi_14",  # money flow index (14), 0..100
    "cci_20",  # commodity channel index (20)
    "tod_sin",  # time of day of the bar open, sin
    "tod_cos",  # time of day of the bar open, cos
    "dow_sin",  # day of week of the bar open, sin
    "dow_cos",  # day of week of the bar open, cos
]

# Longest trailing window: rv_1440 needs 1440 returns, i.e. the bar itself plus 1440 before.
FEATURE_WARMUP_BARS: int = max(VOLATILITY_WINDOWS)

OUTPUT_COLUMNS: list[str] = ["inst_id", "ts", *REFERENCE_COLUMNS, *FEATURE_COLUMNS]

_EPS = 1e-12  # guards divisions by a zero volatility / range; far below any real value
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)


def _window_sums(values: np.ndarray, window: int) -> np.ndarray:
    """Sums of every full run of `window` consecutive values, from one cumulative sum."""
    total = np.concatenate(([0.0], np.cumsum(values)))
    return total[window:] - total[:-window]


def _volume_z(volume: np.ndarray, tail: slice) -> np.ndarray:
    """z-score of log volume against its own trailing VOLUME_Z_WINDOW bars, for the tail rows.

    A zero-volume bar has no log: inside a row's window it counts as the quietest traded bar
    of that same window.  So the row depends on its window alone (never on where the read
    started: an hourly append equals a rebuild) and stays unit-free; a window without any
    trade has nothing to compare against and reads z 0.  Centring the logs on the first
    traded bar keeps the running sums precise and changes no z-score (shift-invariant).
    """
    w = VOLUME_Z_WINDOW
    bars = volume[tail.start - w + 1 : tail.stop]  # every bar a tail row's window reads
    traded = bars > 0
    logs = np.log(bars, out=np.zeros(len(bars)), where=traded)
    if traded.any():
        logs[traded] -= logs[np.argmax(traded)]
    own = logs[w - 1 :]
    sums, sums_sq = _window_sums(logs, w), _window_sums(logs * logs, w)
    untraded = _window_sums(~traded, w)  # zero bars per window, each adding 0 to the sums
    if untraded.any():
        quietest = pd.Series(np.where(traded, logs, np.nan)).rolling(w, min_periods=1).min()
        # No trade in the window: every bar is the same (any) value, here 0, and z is 0.
        fill = np.nan_to_num(quietest.to_numpy()[w - 1 :], nan=0.0)
        sums = sums + untraded * fill
        sums_sq = sums_sq + untraded * fill * fill
        own = np.where(traded[w - 1 :], own, fill)
    mean = sums / w
    std = np.sqrt(np.maximum(sums_sq / w - mean * mean, 0.0))
    # A window of identical volumes has no spread: the bar is exactly typical, z = 0.  The
    # 1e-6 cut sits above the running-sum rounding noise and far below any real spread.
    return _safe_ratio(own - mean, std, 0.0, tiny=1e-6)


_COLUMN_INDEX = {name: i for i, name in enumerate(FEATURE_COLUMNS)}


def _block_features(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    out: np.ndarray,
    first_row: int = FEATURE_WARMUP_BARS,
) -> None:
    """Write the features of rows first_row.. (>= FEATURE_WARMUP_BARS) of one instrument.

    `out` is (n_features, n - first_row).  Numpy features are evaluated on those rows only;
    TA-Lib runs over the whole block (its filters need the history) and is cut.
    """
    tail = slice(first_row, len(close))
    _return_features(close, out, tail)
    _volume_and_range_features(open_, high, low, close, volume, out, tail)
    _talib_features(high, low, close, volume, out, tail)


def _return_features(close: np.ndarray, out: np.ndarray, tail: slice) -> None:
    """Trailing log returns, realised volatilities and their ratios."""
    col, w0, n = _COLUMN_INDEX, tail.start, tail.stop
    log_close = np.log(close)
    returns = log_returns(close)
    squared = returns * returns
    for k in RETURN_WINDOWS:
        np.subtract(log_close[tail], log_close[w0 - k : n - k], out=out[col[f"ret_{k}"]])
    per_bar: dict[int, np.ndarray] = {}
    for k in VOLATILITY_WINDOWS:
        rv = out[col[f"rv_{k}"]]
        rv[:] = realised_volatility(squared, k)[tail]
        per_bar[k] = rv / np.sqrt(k)
    # (a + eps) / (b + eps): a flat market reads as "no change in volatility" (1), not inf.
    out[col["vol_ratio_5_60"]] = (per_bar[5] + _EPS) / (per_bar[60] + _EPS)
    out[col["vol_ratio_60_1440"]] = (per_bar[60] + _EPS) / (per_bar[1440] + _EPS)


def _volume_and_range_features(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    out: np.ndarray,
    tail: slice,
) -> None:
    """Volume z-score over its trailing window, and the bar's shape relative to its price."""
    col = _COLUMN_INDEX
    out[col["volume_z_60"]] = _volume_z(volume, tail)
    close_t = close[tail]
    bar_range = high[tail] - low[tail]
    out[col["range_rel"]] = bar_range / close_t
    out[col["body_to_range"]] = _safe_ratio(close_t - open_[tail], bar_range, 0.0)


def _talib_features(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    out: np.ndarray,
    tail: slice,
) -> None:
    """TA-Lib's indicators over the whole block, cut to the tail, made scale-free."""
    col = _COLUMN_INDEX
    close_t = close[tail]
    out[col["rsi_14"]] = talib.RSI(close, timeperiod=14)[tail]
    out[col["atr_14_rel"]] = talib.ATR(high, low, close, timeperiod=14)[tail] / close_t
    _, _, hist = talib.MACD(close, fastperiod=12, slowperiod=26, signalperiod=9)
    out[col["macd_hist_rel"]] = hist[tail] / close_t
    # Bands are translation-equivariant: centring on the first close keeps TA-Lib's running
    # sums small (better precision for low-volatility pairs) without changing the result.
    anchor = close[0]
    upper, middle, lower = talib.BBANDS(close - anchor, timeperiod=20, nbdevup=2, nbdevdn=2)
    width = upper[tail] - lower[tail]
    # A flat 20-bar window has no band: the close sits in the middle of it.
    out[col["bb_pctb_20"]] = _safe_ratio(
        close_t - anchor - lower[tail], width, 0.5, tiny=1e-9 * close_t
    )
    out[col["bb_width_20"]] = width / (middle[tail] + anchor)
    out[col["adx_14"]] = talib.ADX(high, low, close, timeperiod=14)[tail]
    slowk, _ = talib.STOCH(
        high, low, close, fastk_period=14, slowk_period=3, slowk_matype=0, slowd_period=3
    )
    out[col["stoch_k_14"]] = slowk[tail]
    out[col["mfi_14"]] = talib.MFI(high, low, close, volume, timeperiod=14)[tail]
    out[col["cci_20"]] = talib.CCI(high, low, close, timeperiod=20)[tail]


def _safe_ratio(
    num: np.ndarray, den: np.ndarray, default: float, tiny: float | np.ndarray = _EPS
) -> np.ndarray:
    """num / den, with `default` where |den| <= tiny instead of inf/NaN or rounding noise."""
    ok = np.abs(den) > tiny
    return np.where(ok, num / np.where(ok, den, 1.0), default)


# Bar open times are whole seconds, so the calendar encodings are table look-ups.
_SECONDS_PER_DAY = 86_400
_DAY_ANGLE = 2 * np.pi * np.arange(_SECONDS_PER_DAY) / _SECONDS_PER_DAY
_WEEK_ANGLE = 2 * np.pi * np.arange(7) / 7
_CALENDAR_TABLES: dict[str, tuple[np.ndarray, bool]] = {
    "tod_sin": (np.sin(_DAY_ANGLE), False),
    "tod_cos": (np.cos(_DAY_ANGLE), False),
    "dow_sin": (np.sin(_WEEK_ANGLE), True),
    "dow_cos": (np.cos(_WEEK_ANGLE), True),
}


def _calendar_features(ts_ns: np.ndarray, out: np.ndarray) -> None:
    """Time of day / day of week (Monday = 0) on a circle, so 23:59 sits next to 00:00."""
    seconds = ts_ns // 10**9
    second_of_day = seconds % _SECONDS_PER_DAY
    weekday = (seconds // _SECONDS_PER_DAY + _EPOCH_WEEKDAY) % 7
    for name, (table, weekly) in _CALENDAR_TABLES.items():
        out[FEATURE_COLUMNS.index(name)] = table[weekday if weekly else second_of_day]


def empty_features() -> pd.DataFrame:
    """A typed empty features table, so an empty candle batch flows through unchanged."""
    return empty_keyed_frame(OUTPUT_COLUMNS)


def compute_features(candles: pd.DataFrame, start: pd.Timestamp | None = None) -> pd.DataFrame:
    """Features for every candle with a full trailing history: inst_id, ts, close, features.

    One row per input candle from its instrument's FEATURE_WARMUP_BARS-th bar on and, given
    `start`, from `start` on; earlier rows are dropped (not filled) and never computed, so
    the warm-up bars cost TA-Lib time only.  Sorted by (inst_id, ts), float64, no NaN or inf.
    """
    candles, starts = instrument_blocks(candles)
    n = len(candles)
    if n == 0:
        return empty_features()
    check_prices(candles)

    open_ = candles["open"].to_numpy(dtype=np.float64)
    high = candles["high"].to_numpy(dtype=np.float64)
    low = candles["low"].to_numpy(dtype=np.float64)
    close = candles["close"].to_numpy(dtype=np.float64)
    volume = candles["volume"].to_numpy(dtype=np.float64)

    ends = np.append(starts[1:], n)
    ts_ns = candles["ts"].array.asi8
    first_rows = first_output_rows(ts_ns, starts, ends, FEATURE_WARMUP_BARS, start)
    lengths = np.maximum(ends - first_rows, 0)
    rows = np.concatenate([np.arange(a, a + m) for a, m in zip(first_rows, lengths, strict=True)])
    # One float block: row 0 is the reference close, then the features in model order.
    # Building the frame from its transpose avoids pandas re-stacking 27 columns.
    table = np.empty((1 + len(FEATURE_COLUMNS), len(rows)), dtype=np.float64)
    table[0] = close[rows]
    feats = table[1:]
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))

    def block(i: int) -> None:
        if lengths[i] == 0:
            return  # no row to produce: skip TA-Lib on the block entirely
        part = slice(starts[i], ends[i])
        _block_features(
            open_[part], high[part], low[part], close[part], volume[part],
            feats[:, offsets[i] : offsets[i] + lengths[i]],
            first_row=int(first_rows[i] - starts[i]),
        )  # fmt: skip

    run_blocks(block, range(len(starts)), n)
    _calendar_features(ts_ns[rows], feats)

    if not np.isfinite(table.sum()):  # defensive: a row with an undefined feature is dropped
        finite = np.isfinite(table).all(axis=0)
        rows, table = rows[finite], table[:, finite]
    if len(rows) == 0:
        return empty_features()
    frame = pd.DataFrame(table.T, columns=OUTPUT_COLUMNS[2:], copy=False)
    frame.insert(0, "ts", candles["ts"].array[rows])
    frame.insert(0, "inst_id", candles["inst_id"].to_numpy()[rows])
    return frame
