"""Labels for the five models, plus the persistence baselines each is judged against.

With r_k = ln(close_k / close_k-1), horizon H and the trailing reference scale
sigma_t = std(r_t-1439 .. r_t) (sample std, ddof=1; known at t):

* target_direction  = 1 if close[t+H] > close[t] else 0.  A sign is scale-free by nature.
* target_price      = close[t+H].  The only price-level target; the training code is free to
  model it as a log return to close[t] (REFERENCE_COLUMNS in the features table).
* target_volatility = sqrt(sum r_k^2, k = t+1..t+H): forward realised volatility, a
  dimensionless log-return quantity, not annualised.
* target_risk       = 100 * logistic(2 * ln(target_volatility / (sigma_t * sqrt(H))))
                    = 100 * v^2 / (v^2 + H * sigma_t^2)   (v = target_volatility).
  Forward volatility measured in units of the instrument's *own* last day, so 50 means
  "as volatile as usual for this coin": a quiet BTC hour and a quiet memecoin hour both read
  low, which is what lets one model pool instruments.  It is bounded, so no outlier drives
  the loss.
* target_momentum   = z = (ln(close[t+H]/close[t]) - ln(close[t]/close[t-H])) / (sigma_t *
  sqrt(2H)); 0 (decelerating) if z < -MOMENTUM_THRESHOLD, 2 (accelerating) if
  z > MOMENTUM_THRESHOLD, else 1.  Under a random walk z ~ N(0, 1), so the classes come out
  about 31/38/31 without any tuning.
* naive_volatility  = sqrt(sum r_k^2, k = t-H+1..t): the same quantity over the last H bars
  (persistence; identical to the rv_5 feature when H = 5), naive_risk = the same logistic
  transform of it, naive_price = close[t].
* naive_volatility_level = sigma_t * sqrt(H) and naive_risk_level = 50: the "usual level"
  forecast.  Persistence of a 5-bar realised vol is noisy, so on a market without volatility
  clustering the day level is the stronger naive forecast.
* naive_direction_last_h = 1 if close[t] > close[t-H], naive_direction_last_bar = 1 if
  close[t] > close[t-1]: direction persistence, the rule a trending market rewards.
* naive_momentum_zero_forward = the momentum class with the forward return set to 0.  The
  momentum label is forward minus trailing return, and the trailing half is known at t, so on
  a random walk this rule alone predicts the label far better than the class shares do: it is
  the rule a momentum model must beat.
Training judges each model against the strongest of its rules on the test rows (metrics.py).

Why a trailing sigma_t and not quantiles or a z-score over the whole history: any statistic
over the full series (global quantile bins, global mean/std) would put future information
into past labels and would move every old label whenever new data arrives.  sigma_t uses
only bars <= t, labels use only bars t+1..t+H on top of it, so a label never changes once
written.  Rows without a label (the last H of each instrument) and rows whose sigma_t is not
yet defined (the first RISK_REFERENCE_BARS) are dropped, never filled.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from blofin_assets.market.contract import empty_keyed_frame
from blofin_assets.ml.blocks import check_prices, first_output_rows, instrument_blocks, run_blocks
from blofin_assets.ml.series import log_returns, realised_volatility, rolling_sum

TARGET_COLUMNS: list[str] = [
    "target_direction",
    "target_risk",
    "target_price",
    "target_momentum",
    "target_volatility",
]
NAIVE_COLUMNS: list[str] = [
    "naive_risk",
    "naive_price",
    "naive_volatility",
    "naive_risk_level",
    "naive_volatility_level",
    "naive_direction_last_h",
    "naive_direction_last_bar",
    "naive_momentum_zero_forward",
]
OUTPUT_COLUMNS: list[str] = ["inst_id", "ts", *TARGET_COLUMNS, *NAIVE_COLUMNS]
INTEGER_COLUMNS: tuple[str, ...] = ("target_direction", "target_momentum")

RISK_REFERENCE_BARS = 1440
MOMENTUM_THRESHOLD = 0.5

_EPS = 1e-12  # keeps 0/0 out of the momentum z-score on a flat market
_EPS_SQUARED = 1e-30  # the same guard for the risk score, in squared-volatility units


def risk_score(volatility: np.ndarray, sigma: np.ndarray, horizon: int) -> np.ndarray:
    """100 * logistic(2 * ln(vol / (sigma * sqrt(H)))), written as 100 * v^2 / (v^2 + H s^2).

    The algebraic form needs no exp/log and cannot overflow.  The epsilon lives in squared
    units (1e-30, i.e. a volatility of 1e-15), so it changes no real value, keeps the score
    above 0 for a flat horizon, and makes a completely flat market read 50.
    """
    num = volatility * volatility + _EPS_SQUARED
    return 100.0 * num / (num + horizon * sigma * sigma + _EPS_SQUARED)


def empty_targets() -> pd.DataFrame:
    """A typed empty targets table, so an empty candle batch flows through unchanged."""
    frame = empty_keyed_frame(OUTPUT_COLUMNS)
    for column in INTEGER_COLUMNS:
        frame[column] = frame[column].astype("int64")
    return frame


def momentum_class(z: np.ndarray) -> np.ndarray:
    """0 decelerating, 1 neutral, 2 accelerating, by the momentum z-score's side of the band."""
    classes = np.ones(len(z), dtype=np.int64)
    classes[z < -MOMENTUM_THRESHOLD] = 0
    classes[z > MOMENTUM_THRESHOLD] = 2
    return classes


def _block_targets(
    close: np.ndarray,
    horizon: int,
    out: dict[str, np.ndarray],
    first_row: int = RISK_REFERENCE_BARS,
) -> None:
    """Fill the label/baseline arrays (rows first_row..n-H-1) of one instrument."""
    n = len(close)
    h = horizon
    t = slice(first_row, n - h)  # rows with a reference scale and a full horizon
    ahead = slice(first_row + h, n)  # row t + H
    behind = slice(first_row - h, n - 2 * h)  # row t - H

    log_close = np.log(close)
    returns = log_returns(close)
    squared = returns * returns
    trailing_vol = realised_volatility(squared, h)  # sqrt(sum r^2, t-H+1..t)

    # sigma_t from running sums over r_t-1439..r_t; the sum of r telescopes to a log return.
    m = RISK_REFERENCE_BARS
    sum_r = np.full(n, np.nan)
    sum_r[m:] = log_close[m:] - log_close[:-m]
    sum_r2 = rolling_sum(squared, m)
    variance = np.maximum((sum_r2 - sum_r * sum_r / m) / (m - 1), 0.0)
    sigma = np.sqrt(variance)[t]

    forward_return = log_close[ahead] - log_close[t]
    backward_return = log_close[t] - log_close[behind]
    forward_vol = trailing_vol[ahead]  # sqrt(sum r^2, t+1..t+H)
    naive_vol = trailing_vol[t]

    scale = sigma * np.sqrt(2 * h) + _EPS
    momentum = momentum_class((forward_return - backward_return) / scale)

    out["target_direction"] = (close[ahead] > close[t]).astype(np.int64)
    out["target_risk"] = risk_score(forward_vol, sigma, h)
    out["target_price"] = close[ahead]
    out["target_momentum"] = momentum
    out["target_volatility"] = forward_vol
    out["naive_risk"] = risk_score(naive_vol, sigma, h)
    out["naive_price"] = close[t]
    out["naive_volatility"] = naive_vol
    out["naive_volatility_level"] = sigma * np.sqrt(h)
    out["naive_risk_level"] = risk_score(sigma * np.sqrt(h), sigma, h)
    # Direction persistence: the next H bars go the way the last H bars (or the last bar) went.
    out["naive_direction_last_h"] = (backward_return > 0).astype(np.float64)
    out["naive_direction_last_bar"] = (returns[t] > 0).astype(np.float64)
    # The momentum class if the forward return were zero: only its known trailing half.
    out["naive_momentum_zero_forward"] = momentum_class(-backward_return / scale).astype(np.float64)


def compute_targets(
    candles: pd.DataFrame, horizon: int = 5, start: pd.Timestamp | None = None
) -> pd.DataFrame:
    """Labels built from candles t+1..t+H (plus the trailing reference scale), per instrument.

    Output columns inst_id, ts, *TARGET_COLUMNS, *NAIVE_COLUMNS, sorted by (inst_id, ts);
    the first RISK_REFERENCE_BARS and last `horizon` rows of each instrument are dropped, and
    so are rows before `start` (never computed).
    """
    if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer) or horizon < 1:
        raise ValueError(f"horizon must be a positive integer number of bars, got {horizon!r}")
    horizon = int(horizon)
    if horizon > RISK_REFERENCE_BARS:
        raise ValueError(f"horizon {horizon} exceeds RISK_REFERENCE_BARS={RISK_REFERENCE_BARS}")
    candles, starts = instrument_blocks(candles)
    n = len(candles)
    if n == 0:
        return empty_targets()
    check_prices(candles, ("close",), volume=False)
    close = candles["close"].to_numpy(dtype=np.float64)

    ends = np.append(starts[1:], n)
    first_rows = first_output_rows(
        candles["ts"].array.asi8, starts, ends, RISK_REFERENCE_BARS, start
    )
    blocks = [i for i in range(len(starts)) if ends[i] - horizon > first_rows[i]]
    if not blocks:  # no row has a reference scale, a full horizon and ts >= start
        return empty_targets()
    results: dict[int, dict[str, np.ndarray]] = {i: {} for i in blocks}

    def block(i: int) -> None:
        lo = starts[i]
        _block_targets(close[lo : ends[i]], horizon, results[i], first_row=int(first_rows[i] - lo))

    run_blocks(block, blocks, n)
    rows = np.concatenate([np.arange(first_rows[i], ends[i] - horizon) for i in blocks])
    # The float columns as one block, built from its transpose (no pandas re-stacking); the
    # integer labels, ts and inst_id are then inserted at their places in OUTPUT_COLUMNS.
    floats = [c for c in TARGET_COLUMNS + NAIVE_COLUMNS if c not in INTEGER_COLUMNS]
    table = np.empty((len(floats), len(rows)), dtype=np.float64)
    for k, column in enumerate(floats):
        np.concatenate([results[i][column] for i in blocks], out=table[k])
    frame = pd.DataFrame(table.T, columns=floats, copy=False)
    for column in INTEGER_COLUMNS:
        labels = np.concatenate([results[i][column] for i in blocks])
        frame.insert(OUTPUT_COLUMNS.index(column) - 2, column, labels)
    frame.insert(0, "ts", candles["ts"].array[rows])
    frame.insert(0, "inst_id", candles["inst_id"].to_numpy()[rows])
    return frame
