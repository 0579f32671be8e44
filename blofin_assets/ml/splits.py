"""Chronological train/test split of pooled multi-instrument data, purged per instrument.

The test block starts at one instant for every instrument: all rows from the test start on.
A label at row t reads its own instrument's next H rows (targets are positional), so what a
training row must not overlap is *its instrument's* H-th next row, not H pooled timestamps:
when one instrument has an outage across the boundary while the others trade on, its last
bars before the outage label themselves with bars inside the test block.  So a row trains
only if its instrument's H-th next row is present and strictly before the test start; every
other row before the test start is purged.  scikit-learn's ``TimeSeriesSplit(gap=...)``
purges pooled positions, which is exactly the leak, so it is not used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class PurgedSplit:
    train_index: np.ndarray  # positional indices into the frame that was split, ascending
    test_index: np.ndarray
    train_end: pd.Timestamp  # last training timestamp
    test_start: pd.Timestamp  # first test timestamp
    purge_bars: int  # the label horizon H: a training row's H-th next row precedes test_start
    purged_rows: int  # rows before test_start left out because their label may reach the test


def purged_split(
    timestamps: pd.Series | np.ndarray,
    instruments: pd.Series | np.ndarray,
    *,
    test_fraction: float,
    horizon: int,
) -> PurgedSplit:
    """Train on rows whose label ends before the test block, test on the last timestamps.

    The test block is every row at or after the first of the last ``test_fraction`` of the
    distinct timestamps.  A row before it trains only if the row ``horizon`` places later in
    its own instrument's rows (time order) exists and is earlier than the test start; a row
    without that proof (an instrument's last H rows before the test, or before its outage)
    is purged, since its label may read bars inside the test block.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if horizon < 0:
        raise ValueError(f"horizon must be >= 0, got {horizon}")
    # int64 nanoseconds: np.asarray of tz-aware values makes Python objects (slow on millions).
    # DuckDB hands back microseconds: without as_unit the boundaries read as 1970.
    ts = pd.DatetimeIndex(pd.to_datetime(timestamps, utc=True)).as_unit("ns").asi8
    codes, _ = pd.factorize(np.asarray(instruments))
    if len(codes) != len(ts):
        raise ValueError(f"{len(ts)} timestamps but {len(codes)} instruments")
    unique_ts = np.unique(ts)
    test_size = round(len(unique_ts) * test_fraction)
    if test_size < 1 or test_size >= len(unique_ts):
        raise ValueError(_too_little(len(unique_ts), test_fraction, horizon))
    test_start = unique_ts[len(unique_ts) - test_size]

    train = _label_ends_before(ts, codes, horizon, test_start)
    before_test = ts < test_start
    if not train.any():
        raise ValueError(_too_little(len(unique_ts), test_fraction, horizon))
    train_index = np.flatnonzero(train)
    return PurgedSplit(
        train_index=train_index,
        test_index=np.flatnonzero(~before_test),
        train_end=pd.Timestamp(ts[train].max(), tz="UTC"),
        test_start=pd.Timestamp(test_start, tz="UTC"),
        purge_bars=horizon,
        purged_rows=int(before_test.sum()) - len(train_index),
    )


def _label_ends_before(
    ts: np.ndarray, codes: np.ndarray, horizon: int, test_start: np.int64
) -> np.ndarray:
    """Mask of rows whose own instrument's ``horizon``-th next row exists and is < test_start.

    One stable sort by (instrument, ts) puts each instrument's rows in time order, so the
    H-th next row is H places on, if it belongs to the same instrument.
    """
    order = np.lexsort((ts, codes))
    sorted_ts, sorted_codes = ts[order], codes[order]
    ok = np.zeros(len(ts), dtype=bool)
    n_ahead = len(ts) - horizon
    if n_ahead > 0:
        same = sorted_codes[horizon:] == sorted_codes[:n_ahead]
        ok[:n_ahead] = same & (sorted_ts[horizon:] < test_start)
    train = np.empty(len(ts), dtype=bool)
    train[order] = ok
    return train


def _too_little(n_unique: int, test_fraction: float, horizon: int) -> str:
    return (
        f"too little data for a purged split: {n_unique} distinct timestamps, "
        f"test_fraction={test_fraction}, horizon={horizon}"
    )
