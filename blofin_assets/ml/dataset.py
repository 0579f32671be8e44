"""From stored candles to the feature and target tables, over the training window only.

The window ends at the newest stored candle (not the wall clock), so a historical file trains
exactly like live data; warm-up bars before the window are read for the trailing indicators
and dropped again, never filled.
"""

from __future__ import annotations

import pandas as pd

from blofin_assets.ml.features import FEATURE_WARMUP_BARS, compute_features
from blofin_assets.ml.targets import RISK_REFERENCE_BARS, compute_targets

WARMUP_BARS = max(FEATURE_WARMUP_BARS, RISK_REFERENCE_BARS)


def window_start(newest_ts: pd.Timestamp, training_days: int) -> pd.Timestamp:
    return newest_ts - pd.Timedelta(days=training_days)


def read_start(newest_ts: pd.Timestamp, training_days: int, bar: pd.Timedelta) -> pd.Timestamp:
    """First candle to read: the window start minus the warm-up the indicators need."""
    return window_start(newest_ts, training_days) - WARMUP_BARS * bar


def feature_table(candles: pd.DataFrame, start: pd.Timestamp) -> pd.DataFrame:
    return compute_features(candles, start=start)


def target_table(candles: pd.DataFrame, start: pd.Timestamp, horizon: int) -> pd.DataFrame:
    return compute_targets(candles, horizon=horizon, start=start)


def training_frame(features: pd.DataFrame, targets: pd.DataFrame) -> pd.DataFrame:
    """Rows that have both features and labels; labels and features never share a name."""
    overlap = (set(features.columns) & set(targets.columns)) - {"inst_id", "ts"}
    if overlap:
        raise ValueError(f"feature and target tables share columns {sorted(overlap)}")
    return features.merge(targets, on=["inst_id", "ts"], how="inner", validate="one_to_one")
