"""Chronological train/test splits with a purge gap, for pooled multi-instrument data.

Rows of several instruments share timestamps, so the split is made on the sorted unique
timestamps (scikit-learn's ``TimeSeriesSplit`` with ``gap``): every instrument's test block
starts at the same instant and no training label (which looks H bars ahead) can overlap it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import TimeSeriesSplit


@dataclass(frozen=True)
class PurgedSplit:
    train_index: np.ndarray  # positional indices into the frame that was split
    test_index: np.ndarray
    train_end: pd.Timestamp  # last training timestamp
    test_start: pd.Timestamp  # first test timestamp
    purge_bars: int


def purged_split(
    timestamps: pd.Series | np.ndarray, *, test_fraction: float, purge_bars: int
) -> PurgedSplit:
    """Train on the past, test on the later block, leave ``purge_bars`` timestamps unused between.

    ``purge_bars`` must be at least the label horizon H: a label at t reads closes up to t+H, so
    with a gap of H the last training label ends strictly before the first test row.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if purge_bars < 0:
        raise ValueError(f"purge_bars must be >= 0, got {purge_bars}")
    # Keep datetime64: np.asarray of tz-aware values makes Python objects (seconds on a long window).
    ts_values = pd.DatetimeIndex(pd.to_datetime(timestamps, utc=True))
    unique_ts = ts_values.unique().sort_values()
    n_unique = len(unique_ts)
    test_size = round(n_unique * test_fraction)
    if test_size < 1 or n_unique - test_size - purge_bars < 1:
        raise ValueError(
            f"too little data for a purged split: {n_unique} distinct timestamps, "
            f"test_fraction={test_fraction}, purge_bars={purge_bars}"
        )
    splitter = TimeSeriesSplit(n_splits=2, test_size=test_size, gap=purge_bars)
    # The last fold of a TimeSeriesSplit is 'all history before the gap' vs 'the final block'.
    *_, (train_pos, test_pos) = splitter.split(np.arange(n_unique))
    train_end = unique_ts[train_pos[-1]]
    test_start = unique_ts[test_pos[0]]
    return PurgedSplit(
        train_index=np.flatnonzero(ts_values <= train_end),
        test_index=np.flatnonzero(ts_values >= test_start),
        train_end=train_end,
        test_start=test_start,
        purge_bars=purge_bars,
    )
