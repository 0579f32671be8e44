"""Is direction_predictor's signal worth anything after costs? One documented rule, priced.

The rule: at the close of each scored bar t, long when the predicted probability of up
p > 0.5 + m, short when p < 0.5 - m, flat otherwise (m = ``margin``). Each bar's signal
opens a sub-position of 1/H of a unit, held for the H bars its label covers and closed at the
close of t+H. Overlapping sub-positions add up, so an instrument's position after bar j is
the mean of the last H signals: never more than one unit long or short, and a signal that
stays the same costs nothing to keep. Capital is split equally over the instruments.

Costs: a taker fee per side on the notional traded, ``fee_bps`` basis points of every change
of position. Default 6 bps: BloFin's standard perpetual-futures taker fee (0.06 %) as the
ccxt library's BloFin exchange definition records it (ccxt/ccxt ts/src/blofin.ts,
``fees.swap.taker = 0.0006``); BloFin's own fee page could not be read from here, so the
figure is not verified against BloFin's publication. Funding payments are not charged.

Accounting, per unit of capital and without compounding: a sub-position's return is
s/H * (exp(R) - 1) with R = realized_return = ln(close[t+H] / close[t]), booked at its exit
bar t+H; fees are booked on the bar they are paid. The same engine prices always-long (a
+1 signal on every scored bar: its H-bar legs net to one unit held, one entry and one exit)
and always-flat, on the same rows. The annualised Sharpe is the mean net return per bar over
its long-run (Newey-West, lag H) standard deviation, times sqrt(bars per year) with 365 days
a year (crypto trades every day): the long-run deviation, because H-bar trades overlap and a
plain per-bar deviation would overstate the Sharpe by about sqrt(H).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

DEFAULT_MARGIN = 0.02
DEFAULT_TAKER_FEE_BPS = 6.0
FEE_SOURCE = "ccxt's BloFin definition, fees.swap.taker = 0.0006; not verified on BloFin's page"
DAYS_PER_YEAR = 365.0
STRATEGIES = ("rule", "always_long", "always_flat")


@dataclass(frozen=True)
class TradingRule:
    margin: float = DEFAULT_MARGIN
    fee_bps: float = DEFAULT_TAKER_FEE_BPS

    def __post_init__(self) -> None:
        if not 0 <= self.margin < 0.5 or self.fee_bps < 0:
            raise ValueError(f"need 0 <= margin < 0.5 and fee_bps >= 0, got {self}")


@dataclass(frozen=True)
class StrategyResult:
    name: str
    net_return: float  # per unit of capital, after fees
    gross_return: float
    fees: float
    hit_rate: float  # share of non-flat signals whose H-bar trade made money before fees
    turnover: float  # units of capital traded (sum of |position change|)
    trades: int  # non-flat signals (sub-positions opened)
    sharpe: float  # annualised, see the module docstring
    max_drawdown: float  # largest fall of the equity curve from its running peak, >= 0
    equity: pd.Series = field(compare=False, repr=False)  # cumulative net, by bar

    def figures(self, prefix: str) -> dict[str, float | int]:
        names = ("net_return", "gross_return", "fees", "hit_rate", "turnover", "trades")
        return {f"{prefix}_{name}": getattr(self, name) for name in (*names, "sharpe")} | {
            f"{prefix}_max_drawdown": self.max_drawdown
        }


def rule_signals(probability: np.ndarray, margin: float) -> np.ndarray:
    """+1 long, -1 short, 0 flat; a missing probability is flat."""
    p = np.asarray(probability, dtype="float64")
    return np.where(p > 0.5 + margin, 1.0, np.where(p < 0.5 - margin, -1.0, 0.0))


def long_run_variance(returns: np.ndarray, lag: int) -> float:
    """Newey-West (Bartlett) variance per observation of an autocorrelated series."""
    centred = returns - returns.mean()
    n = len(centred)
    variance = float(centred @ centred) / n
    for k in range(1, min(lag, n - 1) + 1):
        variance += 2 * (1 - k / (lag + 1)) * float(centred[k:] @ centred[:-k]) / n
    return max(variance, 0.0)


def annualised_sharpe(returns: np.ndarray, lag: int, bar: pd.Timedelta) -> float:
    variance = long_run_variance(returns, lag) if len(returns) > 1 else 0.0
    if not variance > 1e-24:
        return float("nan")
    bars_per_year = pd.Timedelta(days=DAYS_PER_YEAR) / bar
    return float(returns.mean() / np.sqrt(variance) * np.sqrt(bars_per_year))


def max_drawdown(equity: np.ndarray) -> float:
    """From a running peak that starts at 0 (the capital before the first trade)."""
    if not len(equity):
        return 0.0
    peak = np.maximum.accumulate(np.maximum(equity, 0.0))
    return float(np.max(peak - equity))


def bar_grid(
    rows: pd.DataFrame, bar: pd.Timedelta, horizon: int
) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    """The bars from the first row to the last exit, and each row's (instrument, bar) cell."""
    start = rows["ts"].min()
    steps = ((rows["ts"] - start) / bar).round().astype(int).to_numpy()
    codes = np.unique(rows["inst_id"].to_numpy(), return_inverse=True)[1]
    length = int(steps.max()) + horizon + 1
    return pd.date_range(start, periods=length, freq=bar), codes, steps


def simulate(
    rows: pd.DataFrame,
    signals: np.ndarray,
    *,
    horizon: int,
    bar: pd.Timedelta,
    fee_bps: float,
    name: str,
) -> StrategyResult:
    """Price ``signals`` (one per row of ``rows``: inst_id, ts, realized_return) as above."""
    if rows.empty:  # nothing scored: no figure, rather than a return of zero
        nan, empty = float("nan"), pd.Series(dtype="float64")
        return StrategyResult(name, nan, nan, 0.0, nan, 0.0, 0, nan, nan, empty)
    times, codes, steps = bar_grid(rows, bar, horizon)
    instruments = int(codes.max()) + 1
    signal = np.zeros((instruments, len(times)))
    signal[codes, steps] = signals
    trade_return = signals * np.expm1(rows["realized_return"].to_numpy(dtype="float64"))
    gross = np.zeros_like(signal)
    gross[codes, steps + horizon] = trade_return / horizon
    # Position after bar j: the mean of the signals of bars j-H+1 .. j.
    cumulative = np.cumsum(signal, axis=1)
    lagged = np.pad(cumulative, ((0, 0), (horizon, 0)))[:, : len(times)]
    position = (cumulative - lagged) / horizon
    change = np.abs(np.diff(position, axis=1, prepend=0.0))
    fees = change * fee_bps / 10_000
    net = (gross - fees).sum(axis=0) / instruments
    traded = signals != 0
    hits = trade_return[traded] > 0
    return StrategyResult(
        name=name,
        net_return=float(net.sum()),
        gross_return=float(gross.sum() / instruments),
        fees=float(fees.sum() / instruments),
        hit_rate=float(hits.mean()) if traded.any() else float("nan"),
        turnover=float(change.sum() / instruments),
        trades=int(traded.sum()),
        sharpe=annualised_sharpe(net, horizon, bar),
        max_drawdown=max_drawdown(np.cumsum(net)),
        equity=pd.Series(np.cumsum(net), index=times, name=name),
    )


def strategies(
    rows: pd.DataFrame, rule: TradingRule, *, bar: pd.Timedelta
) -> dict[str, StrategyResult]:
    """The rule, always-long and always-flat on the same direction_predictor rows (one per
    bar and instrument, of one horizon)."""
    rows = rows[rows["probability"].notna()] if len(rows) else rows
    horizon = int(rows["horizon"].iloc[-1]) if len(rows) else 1
    signals = {
        "rule": rule_signals(rows["probability"].to_numpy(dtype="float64"), rule.margin),
        "always_long": np.ones(len(rows)),
        "always_flat": np.zeros(len(rows)),
    }
    return {
        name: simulate(rows, values, horizon=horizon, bar=bar, fee_bps=rule.fee_bps, name=name)
        for name, values in signals.items()
    }
