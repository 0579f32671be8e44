"""Outcome frames with a known truth, for the forward record's tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from blofin_assets.ml.specs import SPECS_BY_NAME
from blofin_assets.storage.outcomes import OUTCOME_COLUMNS

DIRECTION = SPECS_BY_NAME["direction_predictor"]
RISK = SPECS_BY_NAME["risk_scorer"]
MINUTE = pd.Timedelta(minutes=1)
START = pd.Timestamp("2026-11-10T00:00:00Z")


def overlapping_sums(rng: np.random.Generator, bars: int, horizon: int) -> np.ndarray:
    """Sums of the next H shocks: neighbours share H-1 of them, as H-bar labels do."""
    return np.convolve(rng.normal(size=bars + horizon), np.ones(horizon), "valid")[1 : bars + 1]


def outcomes(
    *,
    prediction: ArrayLike,
    realized: ArrayLike,
    baseline: ArrayLike,
    model: str = "direction_predictor",
    probability: np.ndarray | None = None,
    baseline_name: str = "coin_flip",
    inst_id: str = "BTC-USDT",
    horizon: int = 5,
    bar: pd.Timedelta = MINUTE,
    start: pd.Timestamp = START,
    version: str = "v1",
    mode: str = "live",
    realized_return: np.ndarray | None = None,
) -> pd.DataFrame:
    """prediction_outcomes rows of one instrument on consecutive bars."""
    n = len(np.asarray(prediction))
    ts = pd.date_range(start, periods=n, freq=bar)
    return pd.DataFrame(
        {
            "inst_id": inst_id,
            "ts": ts,
            "model_name": model,
            "model_version": version,
            "mode": mode,
            "horizon": horizon,
            "prediction": np.asarray(prediction, dtype="float64"),
            "probability": np.full(n, np.nan) if probability is None else probability,
            "realized": np.asarray(realized, dtype="float64"),
            "baseline": np.broadcast_to(np.asarray(baseline, dtype="float64"), (n,)).copy(),
            "baseline_name": baseline_name,
            "close": 100.0,
            "realized_return": np.zeros(n) if realized_return is None else realized_return,
            "data_until": start - bar,
            "scored_at": ts[-1] + horizon * bar,
            "outlier": pd.array([False] * n, dtype="boolean"),
            "outlier_score": np.ones(n),
        }
    )[OUTCOME_COLUMNS]


def direction_outcomes(
    rng: np.random.Generator, bars: int, *, edge: float, horizon: int = 5, **kwargs: object
) -> pd.DataFrame:
    """Direction outcomes on a random walk; ``edge`` > 0 lets the probability see the future."""
    forward = overlapping_sums(rng, bars, horizon)
    signal = edge * forward + overlapping_sums(rng, bars, horizon)
    probability = 1 / (1 + np.exp(-signal))
    return outcomes(
        prediction=(probability > 0.5).astype(float),
        probability=probability,
        realized=(forward > 0).astype(float),
        baseline=0.5,
        horizon=horizon,
        realized_return=forward * 1e-3,
        **kwargs,  # type: ignore[arg-type]
    )
