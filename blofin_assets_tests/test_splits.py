"""The purged split: no training label reads a bar of the test block, per instrument.

A label at row t reads its own instrument's next H rows (targets are positional), so the
reference below is each row's own instrument's H-th next timestamp, computed with a pandas
group shift, independently of the module's sort.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from blofin_assets.ml.splits import purged_split

BAR = pd.Timedelta(minutes=1)
T0 = pd.Timestamp("2025-03-01", tz="UTC")


def pooled_frame(n_bars: int, instruments: int) -> pd.DataFrame:
    ts = pd.date_range(T0, periods=n_bars, freq="min")
    frame = pd.DataFrame(
        {"ts": np.tile(ts, instruments), "inst_id": np.repeat(np.arange(instruments), n_bars)}
    )
    return frame.sample(frac=1.0, random_state=0)


def training_order(frame: pd.DataFrame) -> pd.DataFrame:
    """The order split_blocks hands to purged_split: by (ts, inst_id)."""
    return frame.sort_values(["ts", "inst_id"], kind="stable").reset_index(drop=True)


def label_end(frame: pd.DataFrame, horizon: int) -> pd.Series:
    """The timestamp of each row's own instrument's H-th next row (NaT if it has none)."""
    return frame.groupby("inst_id", sort=False)["ts"].shift(-horizon)


def pooled_purge_train(frame: pd.DataFrame, test_fraction: float, horizon: int) -> np.ndarray:
    """The old rule, for comparison: purge H pooled timestamps before the test start."""
    unique_ts = np.sort(frame["ts"].unique())
    test_pos = len(unique_ts) - round(len(unique_ts) * test_fraction)
    return np.flatnonzero(frame["ts"].to_numpy() <= unique_ts[test_pos - horizon - 1])


@pytest.mark.parametrize("horizon", [1, 5, 30])
def test_purge_gap_separates_train_and_test_by_at_least_h_bars(horizon: int) -> None:
    frame = pooled_frame(1000, 3)
    ts = frame["ts"]
    split = purged_split(ts, frame["inst_id"], test_fraction=0.2, horizon=horizon)
    train_ts = ts.iloc[split.train_index]
    test_ts = ts.iloc[split.test_index]
    gap_bars = (test_ts.min() - train_ts.max()) / pd.Timedelta(minutes=1)
    # Index form of the rule: max train index + H < min test index (per instrument, bar units).
    assert gap_bars == horizon + 1
    assert train_ts.max() + horizon * pd.Timedelta(minutes=1) < test_ts.min()
    assert set(split.train_index).isdisjoint(split.test_index)


def test_split_is_chronological_and_sized_as_asked() -> None:
    frame = pooled_frame(1000, 2)
    ts = frame["ts"]
    split = purged_split(ts, frame["inst_id"], test_fraction=0.25, horizon=5)
    assert len(split.test_index) == 2 * 250
    assert len(split.train_index) == 2 * (1000 - 250 - 5)
    assert split.purged_rows == 2 * 5
    assert ts.iloc[split.train_index].max() < ts.iloc[split.test_index].min()
    # Every instrument starts its test block at the same instant.
    assert split.test_start == ts.iloc[split.test_index].min()
    assert split.train_end == ts.iloc[split.train_index].max()


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_boundaries_are_real_times_whatever_the_timestamp_unit(unit: str) -> None:
    """DuckDB returns microsecond timestamps; the reported boundaries once read as 1970."""
    frame = pooled_frame(1000, 2)
    ts = frame["ts"].astype(f"datetime64[{unit}, UTC]")
    split = purged_split(ts, frame["inst_id"], test_fraction=0.25, horizon=5)
    assert split.test_start == frame["ts"].iloc[split.test_index].min()
    assert split.train_end == frame["ts"].iloc[split.train_index].max()


def test_single_series_index_rule() -> None:
    ts = pd.Series(pd.date_range("2025-01-01", periods=500, freq="5min", tz="UTC"))
    split = purged_split(ts, np.zeros(len(ts)), test_fraction=0.2, horizon=5)
    assert split.train_index.max() + 5 < split.test_index.min()


def test_too_little_data_is_an_error() -> None:
    ts = pd.Series(pd.date_range("2025-01-01", periods=10, freq="min", tz="UTC"))
    inst = np.zeros(len(ts))
    with pytest.raises(ValueError, match="too little data"):
        purged_split(ts, inst, test_fraction=0.5, horizon=5)
    with pytest.raises(ValueError, match="test_fraction"):
        purged_split(ts, inst, test_fraction=1.5, horizon=1)


def test_an_outage_across_the_purge_gap_no_longer_leaks_into_the_test_block() -> None:
    """The issue's case: ETH stops trading for 3 h 40 min across the boundary, BTC and SOL go
    on.  The pooled purge kept ETH's last 5 bars before the outage, whose labels read ETH's
    first bars after it, inside the test block; the per-instrument purge keeps none."""
    bars = pd.date_range(T0, periods=3000, freq="min")
    outage = (bars >= bars[2300]) & (bars < bars[2520])
    frame = training_order(
        pd.concat(
            [
                pd.DataFrame({"ts": bars, "inst_id": "BTC-USDT"}),
                pd.DataFrame({"ts": bars[~outage], "inst_id": "ETH-USDT"}),
                pd.DataFrame({"ts": bars, "inst_id": "SOL-USDT"}),
            ]
        )
    )
    horizon, test_fraction = 5, 0.2
    ends = label_end(frame, horizon)
    split = purged_split(
        frame["ts"], frame["inst_id"], test_fraction=test_fraction, horizon=horizon
    )
    assert split.test_start == bars[2400]

    pooled = pooled_purge_train(frame, test_fraction, horizon)
    leaking = frame.iloc[pooled].loc[ends.iloc[pooled] >= split.test_start]
    assert len(leaking) == 5 and set(leaking["inst_id"]) == {"ETH-USDT"}
    assert list(leaking["ts"]) == list(bars[2295:2300])

    assert not (ends.iloc[split.train_index] >= split.test_start).any()
    assert not ends.iloc[split.train_index].isna().any()
    # Purged: BTC's and SOL's last 5 bars before the test, and ETH's last 5 before its outage.
    train = np.zeros(len(frame), dtype=bool)
    train[split.train_index] = True
    purged = frame.loc[~train & (frame["ts"] < split.test_start)]
    assert split.purged_rows == len(purged) == 15
    assert list(purged.loc[purged["inst_id"] == "ETH-USDT", "ts"]) == list(bars[2295:2300])
    assert split.train_end == bars[2394]


def random_market(rng: np.random.Generator) -> tuple[pd.DataFrame, int, float]:
    """Instruments of different lengths with random gaps, and an outage on one of them before,
    across or after the boundary; sorted as split_blocks sorts."""
    n_bars = int(rng.integers(150, 600))
    horizon = int(rng.integers(1, 13))
    test_fraction = float(rng.uniform(0.1, 0.4))
    boundary = round(n_bars * (1.0 - test_fraction))  # about where the test block starts
    bars = pd.date_range(T0, periods=n_bars, freq="min")
    pieces = []
    for k in range(int(rng.integers(2, 6))):
        present = np.zeros(n_bars, dtype=bool)
        # Different listing and (some) delisting times, a few random missing bars.
        first, last = int(rng.integers(0, n_bars // 4)), int(rng.integers(n_bars * 3 // 4, n_bars))
        present[first : last + 1] = True
        present &= rng.random(n_bars) >= rng.uniform(0.0, 0.15)
        if k == 0:  # the outage
            width = int(rng.integers(1, 4 * horizon + 2))
            offset = int(rng.integers(-3 * horizon - width, 3 * horizon + 1))
            lo = max(boundary + offset, 0)
            present[lo : boundary + offset + width] = False
        pieces.append(pd.DataFrame({"ts": bars[present], "inst_id": f"I{k}-USDT"}))
    return training_order(pd.concat(pieces)), horizon, test_fraction


def test_no_training_label_reaches_the_test_block_on_random_markets() -> None:
    leaky_markets = 0
    for seed in range(300):
        frame, horizon, test_fraction = random_market(np.random.default_rng(seed))
        ts = frame["ts"]
        split = purged_split(ts, frame["inst_id"], test_fraction=test_fraction, horizon=horizon)
        unique_ts = np.sort(ts.unique())
        expected_start = unique_ts[len(unique_ts) - round(len(unique_ts) * test_fraction)]
        assert split.test_start == expected_start, seed
        ends = label_end(frame, horizon)

        # The safety property: every training row's own instrument's H-th next row exists
        # and is strictly before the first test timestamp; no test row trains.
        train_ends = ends.iloc[split.train_index]
        assert train_ends.notna().all() and (train_ends < split.test_start).all(), seed
        assert not set(split.train_index) & set(split.test_index)
        # And nothing more is purged: the test block is exactly the rows from the test start
        # on, training exactly the rows with that proof.
        np.testing.assert_array_equal(split.test_index, np.flatnonzero(ts >= split.test_start))
        proven = (ends < split.test_start).to_numpy()  # NaT compares False: no proof
        np.testing.assert_array_equal(
            split.train_index, np.flatnonzero(proven), err_msg=f"seed {seed}"
        )
        assert split.purged_rows == int((ts < split.test_start).sum()) - len(split.train_index)
        assert split.train_end == ts.iloc[split.train_index].max()
        assert split.purge_bars == horizon

        # Deterministic, and a function of the rows, not of their order in the frame.
        again = purged_split(ts, frame["inst_id"], test_fraction=test_fraction, horizon=horizon)
        np.testing.assert_array_equal(again.train_index, split.train_index)
        np.testing.assert_array_equal(again.test_index, split.test_index)
        shuffled = frame.sample(frac=1.0, random_state=seed)
        other = purged_split(
            shuffled["ts"], shuffled["inst_id"], test_fraction=test_fraction, horizon=horizon
        )
        keys = shuffled.iloc[other.train_index].sort_values(["ts", "inst_id"])
        pd.testing.assert_frame_equal(
            keys.reset_index(drop=True), frame.iloc[split.train_index].reset_index(drop=True)
        )

        pooled = pooled_purge_train(frame, test_fraction, horizon)
        leaky_markets += bool((ends.iloc[pooled] >= split.test_start).any())
    # The markets are hard ones: on many of them the pooled purge would have leaked.
    assert leaky_markets >= 150
