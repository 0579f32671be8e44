"""Expanding-window walk-forward folds over pooled multi-instrument rows, purged per instrument.

The rows' distinct timestamps are cut into a first training stretch and ``n_folds`` later
validation blocks. Fold k validates on block k only and trains on every earlier row whose
label provably ends before the block: its own instrument's H-th next row exists and is strictly
before the block start, the rule of ``splits.purged_split`` (its own mask is reused, so the two
can never drift apart). scikit-learn's ``TimeSeriesSplit(gap=...)`` purges pooled positions
instead, which lets an instrument whose bars stop before a boundary label its last training
rows with bars inside the validation block: the leak splits.py documents, so it is not used.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from blofin_assets.ml.splits import PurgedSplit, _label_ends_before


def walk_forward_folds(
    timestamps: pd.Series | np.ndarray,
    instruments: pd.Series | np.ndarray,
    *,
    n_folds: int,
    horizon: int,
    min_train_fraction: float = 0.4,
) -> list[PurgedSplit]:
    """Folds in time order; indices are positions into the rows given, ascending.

    Each fold's ``test_index`` is its validation block, ``test_start`` that block's first
    timestamp. The first ``min_train_fraction`` of the distinct timestamps only ever trains.
    """
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    if horizon < 0:
        raise ValueError(f"horizon must be >= 0, got {horizon}")
    if not 0.0 < min_train_fraction < 1.0:
        raise ValueError(f"min_train_fraction must be in (0, 1), got {min_train_fraction}")
    ts, codes = _encoded(timestamps, instruments)
    unique_ts = np.unique(ts)
    first = round(len(unique_ts) * min_train_fraction)
    bounds = np.linspace(first, len(unique_ts), n_folds + 1).round().astype(int)
    if first < 1 or np.any(np.diff(bounds) < 1):
        raise ValueError(_too_few(len(unique_ts), n_folds, horizon, min_train_fraction))
    return _expanding_folds(ts, codes, unique_ts, bounds, horizon)


def folds_from(
    timestamps: pd.Series | np.ndarray,
    instruments: pd.Series | np.ndarray,
    *,
    start: pd.Timestamp,
    n_folds: int,
    horizon: int,
) -> list[PurgedSplit]:
    """The rows from ``start`` on cut into ``n_folds`` consecutive blocks (equal counts of
    timestamps), each trained on every earlier row, purged: a walk-forward backtest of a later
    block, such as a purged split's test block."""
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    if horizon < 0:
        raise ValueError(f"horizon must be >= 0, got {horizon}")
    ts, codes = _encoded(timestamps, instruments)
    unique_ts = np.unique(ts)
    first = int(np.searchsorted(unique_ts, pd.Timestamp(start).as_unit("ns").value))
    bounds = np.linspace(first, len(unique_ts), n_folds + 1).round().astype(int)
    if first < 1 or np.any(np.diff(bounds) < 1):
        raise ValueError(
            f"too few timestamps for {n_folds} walk-forward steps from {start}: "
            f"{len(unique_ts) - first} of {len(unique_ts)} distinct timestamps are at or after it"
        )
    return _expanding_folds(ts, codes, unique_ts, bounds, horizon)


def _encoded(
    timestamps: pd.Series | np.ndarray, instruments: pd.Series | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """int64 nanoseconds and instrument codes, as splits.purged_split reads them."""
    ts = pd.DatetimeIndex(pd.to_datetime(timestamps, utc=True)).as_unit("ns").asi8
    codes, _ = pd.factorize(np.asarray(instruments))
    if len(codes) != len(ts):
        raise ValueError(f"{len(ts)} timestamps but {len(codes)} instruments")
    return ts, codes


def _expanding_folds(
    ts: np.ndarray, codes: np.ndarray, unique_ts: np.ndarray, bounds: np.ndarray, horizon: int
) -> list[PurgedSplit]:
    """Block k is unique_ts[bounds[k]:bounds[k + 1]]; it trains on the purged rows before it."""
    folds = []
    for k in range(len(bounds) - 1):
        start = unique_ts[bounds[k]]
        end = unique_ts[bounds[k + 1]] if bounds[k + 1] < len(unique_ts) else None
        train = _label_ends_before(ts, codes, horizon, start)
        if not train.any():
            raise ValueError(
                f"walk-forward block {k + 1} (from {pd.Timestamp(start, tz='UTC')}) has no "
                f"training row whose label ends before it: {int((ts < start).sum())} earlier "
                f"rows, horizon={horizon}"
            )
        validate = (ts >= start) if end is None else (ts >= start) & (ts < end)
        folds.append(
            PurgedSplit(
                train_index=np.flatnonzero(train),
                test_index=np.flatnonzero(validate),
                train_end=pd.Timestamp(ts[train].max(), tz="UTC"),
                test_start=pd.Timestamp(start, tz="UTC"),
                purge_bars=horizon,
                purged_rows=int((ts < start).sum()) - int(train.sum()),
            )
        )
    return folds


def _too_few(n_unique: int, n_folds: int, horizon: int, min_train_fraction: float) -> str:
    return (
        f"too few timestamps for {n_folds} walk-forward folds: {n_unique} distinct timestamps, "
        f"horizon={horizon}, min_train_fraction={min_train_fraction}"
    )
