"""The space an estimator fits its target in, and every naive forecast with it: prices as log
returns from the bar's close, volatility floored for its log transform, the rest as is."""

from __future__ import annotations

import numpy as np
import pandas as pd

from blofin_assets.ml.specs import ModelSpec

# Realised volatility can be exactly 0 on a flat market; log needs a floor.
VOLATILITY_FLOOR = 1e-8


def in_model_space(spec: ModelSpec, values: np.ndarray, frame: pd.DataFrame) -> np.ndarray:
    """Target-unit values (a label or a naive forecast of it) in the space the estimator fits:
    prices as log returns from the bar's close, volatility floored for its log transform."""
    if spec.target_transform == "log_return":
        return np.log(values / frame["close"].to_numpy(dtype="float64"))
    if spec.target_transform == "log":
        return np.maximum(values, VOLATILITY_FLOOR)
    return values


def model_target(spec: ModelSpec, frame: pd.DataFrame) -> np.ndarray:
    """The array the estimator is asked to predict (before its own inner transforms)."""
    return in_model_space(spec, frame[spec.target].to_numpy(dtype="float64"), frame)


def naive_prediction(column: str, spec: ModelSpec, frame: pd.DataFrame) -> np.ndarray:
    """A naive forecast known at t, in the same space as model_target."""
    return in_model_space(spec, frame[column].to_numpy(dtype="float64"), frame)
