"""Trailing-window arithmetic on one instrument's series, shared by features and targets so a
naive baseline and the feature it mirrors are the same number."""

from __future__ import annotations

import numpy as np

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
