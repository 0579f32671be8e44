"""How good direction_predictor's probability of up is, not only its side of one half.

Log loss and Brier score of ``probability`` against two naive probabilities on the same rows:
the coin flip (always 0.5) and the base rate (a constant share of ups). The base rate is each
version's *training* share of ups (``naive_constants.base_rate`` in its metadata.json), known
before any of the rows it is scored on. A version whose metadata is not at hand (a backtest
version has no model files) falls back to the share of ups of the window's own rows: that rule
knows the answer, so it can only flatter the base rate and make the model look worse, never
better; ``base_rate_source`` says which was used.

Calibration: rows binned by predicted probability into equal-count (decile) bins, because a
model near a coin flip predicts within a few points of 0.5 and equal-width bins would put
nearly every row into two of them; per bin the rows, the mean predicted probability and the
realised share of ups, and the count-weighted mean gap between the two (calibration error).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from blofin_assets.ml.metrics import probability_metrics

CALIBRATION_BINS = 10
# Keeps a certain-and-wrong probability's log loss finite, as sklearn's log_loss does.
PROBABILITY_FLOOR = 1e-15


@dataclass(frozen=True)
class CalibrationBin:
    lower: float
    upper: float
    rows: int
    mean_probability: float
    realized_frequency: float


@dataclass(frozen=True)
class ProbabilityScores:
    rows: int  # rows with a probability
    log_loss: float
    brier: float
    coin_flip_log_loss: float
    coin_flip_brier: float
    base_rate_log_loss: float
    base_rate_brier: float
    base_rate_source: str  # 'training', 'window share of ups (in-sample)' or 'mixed'
    calibration: tuple[CalibrationBin, ...]

    @property
    def calibration_error(self) -> float:
        total = sum(b.rows for b in self.calibration)
        if not total:
            return float("nan")
        gaps = (b.rows * abs(b.mean_probability - b.realized_frequency) for b in self.calibration)
        return float(sum(gaps) / total)

    def figures(self) -> dict[str, object]:
        return {
            "probability_rows": self.rows,
            "log_loss": self.log_loss,
            "brier": self.brier,
            "coin_flip_log_loss": self.coin_flip_log_loss,
            "coin_flip_brier": self.coin_flip_brier,
            "base_rate_log_loss": self.base_rate_log_loss,
            "base_rate_brier": self.base_rate_brier,
            "base_rate_source": self.base_rate_source,
            "calibration_error": self.calibration_error,
            "calibration": json.dumps([b.__dict__ for b in self.calibration]),
        }

    @classmethod
    def empty(cls) -> ProbabilityScores:
        nan = float("nan")
        return cls(0, nan, nan, nan, nan, nan, nan, "none", ())


def calibration_bins(
    probability: np.ndarray, realized: np.ndarray, bins: int = CALIBRATION_BINS
) -> tuple[CalibrationBin, ...]:
    """Equal-count bins of the predicted probability (ties may merge bins)."""
    if not len(probability):
        return ()
    codes, edges = pd.qcut(probability, bins, labels=False, retbins=True, duplicates="drop")
    if len(edges) < 2:  # one distinct probability: one bin
        codes, edges = np.zeros(len(probability), dtype=int), np.array([edges[0], edges[0]])
    result = []
    for code in range(len(edges) - 1):
        inside = codes == code
        if inside.any():
            result.append(
                CalibrationBin(
                    lower=float(edges[code]),
                    upper=float(edges[code + 1]),
                    rows=int(inside.sum()),
                    mean_probability=float(probability[inside].mean()),
                    realized_frequency=float(realized[inside].mean()),
                )
            )
    return tuple(result)


def constant_scores(realized: np.ndarray, rate: np.ndarray) -> tuple[float, float]:
    """Log loss and Brier of a per-row constant probability ``rate``."""
    clipped = np.clip(rate, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    log_loss = -np.mean(realized * np.log(clipped) + (1 - realized) * np.log(1 - clipped))
    return float(log_loss), float(np.mean((rate - realized) ** 2))


def base_rates_of(
    rows: pd.DataFrame, base_rates: Mapping[tuple[str, str], float]
) -> tuple[np.ndarray, str]:
    """Each row's base rate and where it came from (see the module docstring)."""
    known = np.array(
        [
            base_rates.get((name, version), np.nan)
            for name, version in zip(rows["model_name"], rows["model_version"], strict=True)
        ],
        dtype="float64",
    )
    in_sample = float(rows["realized"].mean())
    source = "training" if np.isfinite(known).all() else "mixed"
    if not np.isfinite(known).any():
        source = "window share of ups (in-sample)"
    return np.where(np.isfinite(known), known, in_sample), source


def probability_scores(
    rows: pd.DataFrame, base_rates: Mapping[tuple[str, str], float]
) -> ProbabilityScores:
    """The probability's scores on the rows that have one, beside the two naive rules'."""
    rows = rows[rows["probability"].notna()]
    realized = rows["realized"].to_numpy(dtype="float64")
    probability = rows["probability"].to_numpy(dtype="float64")
    model = probability_metrics(realized.astype(int), probability)
    rate, source = base_rates_of(rows, base_rates)
    base_log_loss, base_brier = constant_scores(realized, rate)
    return ProbabilityScores(
        rows=len(rows),
        log_loss=model["log_loss"],
        brier=model["brier"],
        coin_flip_log_loss=math.log(2.0),
        coin_flip_brier=0.25,
        base_rate_log_loss=base_log_loss,
        base_rate_brier=base_brier,
        base_rate_source=source,
        calibration=calibration_bins(probability, realized),
    )
