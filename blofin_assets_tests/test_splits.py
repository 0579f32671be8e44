import numpy as np
import pandas as pd
import pytest

from blofin_assets.ml.splits import purged_split


def pooled_timestamps(n_bars: int, instruments: int) -> pd.Series:
    ts = pd.date_range("2025-03-01", periods=n_bars, freq="min", tz="UTC")
    return pd.Series(np.tile(ts, instruments)).sample(frac=1.0, random_state=0)


@pytest.mark.parametrize("horizon", [1, 5, 30])
def test_purge_gap_separates_train_and_test_by_at_least_h_bars(horizon: int) -> None:
    ts = pooled_timestamps(1000, 3)
    split = purged_split(ts, test_fraction=0.2, purge_bars=horizon)
    train_ts = ts.iloc[split.train_index]
    test_ts = ts.iloc[split.test_index]
    gap_bars = (test_ts.min() - train_ts.max()) / pd.Timedelta(minutes=1)
    # Index form of the rule: max train index + H < min test index (per instrument, bar units).
    assert gap_bars == horizon + 1
    assert train_ts.max() + horizon * pd.Timedelta(minutes=1) < test_ts.min()
    assert set(split.train_index).isdisjoint(split.test_index)


def test_split_is_chronological_and_sized_as_asked() -> None:
    ts = pooled_timestamps(1000, 2)
    split = purged_split(ts, test_fraction=0.25, purge_bars=5)
    assert len(split.test_index) == 2 * 250
    assert len(split.train_index) == 2 * (1000 - 250 - 5)
    assert ts.iloc[split.train_index].max() < ts.iloc[split.test_index].min()
    # Every instrument starts its test block at the same instant.
    assert split.test_start == ts.iloc[split.test_index].min()


def test_single_series_index_rule() -> None:
    ts = pd.Series(pd.date_range("2025-01-01", periods=500, freq="5min", tz="UTC"))
    split = purged_split(ts, test_fraction=0.2, purge_bars=5)
    assert split.train_index.max() + 5 < split.test_index.min()


def test_too_little_data_is_an_error() -> None:
    ts = pd.Series(pd.date_range("2025-01-01", periods=10, freq="min", tz="UTC"))
    with pytest.raises(ValueError, match="too little data"):
        purged_split(ts, test_fraction=0.5, purge_bars=5)
    with pytest.raises(ValueError, match="test_fraction"):
        purged_split(ts, test_fraction=1.5, purge_bars=1)
