"""Model inputs: scale-free, strictly trailing indicators computed per instrument.

Why these choices:

* Every feature is *scale-free* (log returns, ratios to the close, z-scores, bounded
  oscillators, calendar sin/cos), so BTC at 60000 and SOL at 150 live on the same axes and
  can be pooled in one model; no feature depends on the price level or the volume unit.
* Every feature at row ``t`` uses candles ``<= t`` only: trailing windows, recursive
  TA-Lib filters run forward from the first bar, no centered windows, no back-fill, no
  normalisation over the whole series.  Appending or changing later candles never changes
  an earlier row, so training rows are exactly what serving would have seen.
* Instruments are computed one block at a time, so one instrument never leaks into another.
* Rows without a full window (the first FEATURE_WARMUP_BARS bars of each instrument) are
  dropped, never filled: a filled value would be a number the model never sees in serving.
  FEATURE_WARMUP_BARS is also far longer than the memory of the recursive (Wilder/EMA)
  indicators (their seed weight is below 1e-40 after it), so features computed on only the
  last FEATURE_WARMUP_BARS + 1 bars reproduce the full-history row: serving needs no more.
* Bars are indexed by position: a gap in the candle stream is treated as adjacent bars.
* Degenerate windows get a neutral value instead of inf/NaN: zero range -> body 0, flat
  Bollinger window -> %B 0.5, identical volumes -> z 0.  TA-Lib's own conventions are kept
  for its oscillators (a 14-bar window with no price movement gives Stoch %K and MFI 0).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import talib

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


_DIRECT_SUM_MAX = 16  # windows up to this are summed term by term, longer ones by cumsum


def rolling_sum(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing window sum, NaN before the window is full; O(n) numpy, no Python per row.

    Short windows add `window` shifted slices: exact to rounding of the window itself, so a
    tiny 5-bar volatility after a volatile day keeps its relative precision and does not
    depend on where the series starts.  Long windows use one cumulative sum.
    """
    n = len(values)
    out = np.full(values.shape, np.nan)
    if n < window:
        return out
    if window <= _DIRECT_SUM_MAX:
        acc = values[window - 1 :].copy()
        for lag in range(1, window):
            acc += values[window - 1 - lag : n - lag]
        out[window - 1 :] = acc
    else:
        total = np.cumsum(values)
        out[window - 1] = total[window - 1]
        out[window:] = total[window:] - total[:-window]
    return out


def log_returns(close: np.ndarray) -> np.ndarray:
    """1-bar log returns of one instrument; r[0] is 0 (no previous bar, always in warm-up)."""
    log_close = np.log(close)
    returns = np.empty_like(log_close)
    returns[0:1] = 0.0
    returns[1:] = np.diff(log_close)
    return returns


def realised_volatility(squared_returns: np.ndarray, window: int) -> np.ndarray:
    """sqrt(sum of the last `window` squared 1-bar log returns, t-window+1..t).

    Shared with targets.py so the naive volatility baseline is the same number as rv_5.
    """
    return np.sqrt(np.maximum(rolling_sum(squared_returns, window), 0.0))


def _scan_blocks(candles: pd.DataFrame) -> tuple[np.ndarray, bool, bool]:
    """Block starts, whether the input is sorted, and whether a (inst_id, ts) repeats."""
    inst = candles["inst_id"].to_numpy()
    change = np.flatnonzero(inst[1:] != inst[:-1]) + 1
    starts = np.concatenate(([0], change)).astype(np.int64)
    step = np.diff(candles["ts"].array.asi8)
    step[change - 1] = 1  # block boundaries are not time steps
    blocks_sorted = bool(np.all(inst[starts[:-1]] < inst[starts[1:]]))
    return starts, blocks_sorted and bool(np.all(step > 0)), bool(np.any(step == 0))


def instrument_blocks(candles: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Return candles sorted by (inst_id, ts) and the start offset of each instrument block.

    The contract already promises sorted input, so the common path only verifies it cheaply
    (O(n), no sort); unsorted input is sorted.  Duplicate (inst_id, ts) bars are refused: a
    bar is closed once, and a duplicate would silently shift every trailing window.
    """
    ts = candles["ts"]
    if str(ts.dtype) != "datetime64[ns, UTC]":
        candles = candles.assign(ts=pd.to_datetime(ts, utc=True).astype("datetime64[ns, UTC]"))
    if len(candles) == 0:
        return candles, np.zeros(0, dtype=np.int64)
    starts, is_sorted, _ = _scan_blocks(candles)
    if not is_sorted:
        candles = candles.sort_values(["inst_id", "ts"], kind="stable", ignore_index=True)
        starts, is_sorted, has_duplicates = _scan_blocks(candles)
        if has_duplicates or not is_sorted:
            raise ValueError("candles contain duplicate (inst_id, ts) bars")
    return candles, starts


def check_prices(
    candles: pd.DataFrame,
    columns: tuple[str, ...] = ("open", "high", "low", "close"),
    *,
    volume: bool = True,
) -> None:
    """Log returns need positive finite prices; one bad bar would poison every later window.

    min/max propagate NaN, so two reductions per column check everything without a copy.
    """
    for column in columns:
        values = candles[column].to_numpy(dtype=np.float64)
        if not (values.min() > 0 and values.max() < np.inf):
            raise ValueError(f"candle {column} must be finite and > 0")
    if volume:
        values = candles["volume"].to_numpy(dtype=np.float64)
        if not (values.min() >= 0 and values.max() < np.inf):
            raise ValueError("candle volume must be finite and >= 0")


def _log_volume(volume: np.ndarray) -> np.ndarray:
    """Log volume, causal and unit-free, centred on its first bar.

    A zero-volume bar counts as the smallest positive volume seen so far (no absolute floor,
    which would depend on the volume unit); before any trade it is a flat constant.  The
    centring keeps the E[x^2] - E[x]^2 running sums precise on long series and does not
    change a z-score (shift-invariant).
    """
    positive = volume > 0
    if positive.all():
        log_volume = np.log(volume)
    else:
        smallest = np.minimum.accumulate(np.where(positive, volume, np.inf))
        filled = np.where(positive, volume, smallest)
        log_volume = np.log(np.where(np.isfinite(filled), filled, 1.0))
    return log_volume - log_volume[0]


def _tail_window_sum(total: np.ndarray, window: int, start: int) -> np.ndarray:
    """Window sums for rows start.. from a cumulative sum (total[i] = sum x[0..i])."""
    n = len(total)
    return total[start:] - total[start - window : n - window]


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
    col = {name: i for i, name in enumerate(FEATURE_COLUMNS)}
    w0 = first_row
    n = len(close)
    tail = slice(w0, n)
    close_t = close[tail]
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

    log_volume = _log_volume(volume)
    w = VOLUME_Z_WINDOW
    mean = _tail_window_sum(np.cumsum(log_volume), w, w0) / w
    mean_sq = _tail_window_sum(np.cumsum(log_volume * log_volume), w, w0) / w
    std = np.sqrt(np.maximum(mean_sq - mean * mean, 0.0))
    # A window of identical volumes has no spread: the bar is exactly typical, z = 0.  The
    # 1e-6 cut sits above the running-sum rounding noise and far below any real spread.
    out[col["volume_z_60"]] = _safe_ratio(log_volume[tail] - mean, std, 0.0, tiny=1e-6)

    bar_range = high[tail] - low[tail]
    out[col["range_rel"]] = bar_range / close_t
    out[col["body_to_range"]] = _safe_ratio(close_t - open_[tail], bar_range, 0.0)

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
    frame = pd.DataFrame({column: pd.Series(dtype="float64") for column in OUTPUT_COLUMNS})
    frame["inst_id"] = frame["inst_id"].astype("object")
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


# Below this many candles a thread pool costs more than it saves (an hourly append is ~15k).
PARALLEL_MIN_CANDLES = 200_000


def worker_count() -> int:
    """Cores this process may use (the affinity mask, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_blocks(work: Callable[[int], None], blocks: Iterable[int], candles: int) -> None:
    """Run ``work`` for every instrument block, on all cores for a large input.

    TA-Lib and numpy release the GIL on whole arrays and each block writes only its own
    slice of the output, so threads give the same bytes as a loop (measured: 2 cores, ~1.8x).
    """
    workers = min(worker_count(), 8)
    if candles < PARALLEL_MIN_CANDLES or workers < 2:
        for block in blocks:
            work(block)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="blofin-block") as pool:
        for _ in pool.map(work, blocks):
            pass  # re-raises the first block's exception


def first_output_rows(
    ts_ns: np.ndarray, starts: np.ndarray, ends: np.ndarray, warmup: int, start: pd.Timestamp | None
) -> np.ndarray:
    """Per instrument block, the first row that has `warmup` bars before it and ts >= start."""
    first = starts + warmup
    if start is not None:
        start_ns = pd.Timestamp(start).as_unit("ns").value
        for i, (lo, hi) in enumerate(zip(starts, ends, strict=True)):
            first[i] = max(first[i], lo + np.searchsorted(ts_ns[lo:hi], start_ns, side="left"))
    return first


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
