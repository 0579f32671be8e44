"""Is a model better than a naive rule beyond noise, on the same rows?

H-bar labels overlap (the labels of t and t+1 share H-1 bars), and the rows of several
instruments at one time move together, so the per-row loss differences are autocorrelated
and a plain t-test would call noise skill. The Diebold-Mariano test regresses the loss
differential on a constant with a HAC (Newey-West) variance whose bandwidth spans the overlap:
statsmodels' OLS with ``cov_type="HAC"`` is that test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import statsmodels.api as sm
from scipy.stats import norm

# One-sided: the model must beat the rule; 5 % is the conventional line.
SIGNIFICANCE_LEVEL = 0.05


@dataclass(frozen=True)
class Comparison:
    mean_loss_difference: float  # baseline loss - model loss, per row: > 0 favours the model
    statistic: float
    p_value: float  # one-sided, H1: the model's loss is lower
    lag: int
    rows: int

    @property
    def significant(self) -> bool:
        return bool(self.p_value < SIGNIFICANCE_LEVEL)


def overlap_lag(horizon: int, instruments: int) -> int:
    """The HAC bandwidth for rows sorted by (ts, inst_id): their labels share bars up to about
    (H-1) * instruments rows apart. Bartlett weights shrink linearly to zero at the bandwidth,
    so a bandwidth of just the overlap under-weights those lags and calls noise skill too often;
    twice the overlap keeps the test near its nominal level (test_significance measures it)."""
    overlap = (horizon - 1) * max(instruments, 1) + instruments - 1
    return max(1, 2 * overlap)


def diebold_mariano(loss_model: np.ndarray, loss_baseline: np.ndarray, lag: int) -> Comparison:
    """One-sided test that the model's mean loss is below the baseline's on the same rows."""
    difference = np.asarray(loss_baseline, dtype="float64") - np.asarray(
        loss_model, dtype="float64"
    )
    rows = len(difference)
    mean = float(difference.mean()) if rows else float("nan")
    if rows < 2 or not np.isfinite(difference).all():
        return Comparison(mean, float("nan"), 1.0, lag, rows)
    if np.allclose(difference, difference[0]):
        # No variation: identical forecasts prove nothing; a model better on every row does.
        return Comparison(mean, float("nan"), 0.0 if mean > 0 else 1.0, lag, rows)
    fit = sm.OLS(difference, np.ones(rows)).fit(
        cov_type="HAC", cov_kwds={"maxlags": min(lag, rows - 1)}
    )
    statistic = float(fit.tvalues[0])
    return Comparison(mean, statistic, float(norm.sf(statistic)), lag, rows)
