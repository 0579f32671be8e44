"""The beyond-noise test respects the overlap of H-bar labels: on noise it rejects about as
often as its level says, where a test that ignores the overlap calls noise skill."""

import numpy as np
import pytest

from blofin_assets.ml.significance import SIGNIFICANCE_LEVEL, diebold_mariano, overlap_lag


def overlapping_noise(rng: np.random.Generator, rows: int, horizon: int) -> np.ndarray:
    """Loss differences with no true edge whose neighbours share H-1 of H shocks, as the
    losses of overlapping H-bar labels do."""
    shocks = rng.normal(size=rows + horizon)
    return np.convolve(shocks, np.ones(horizon), mode="valid")[:rows]


def test_on_overlapping_noise_the_hac_test_rejects_at_about_its_level_and_lag_zero_does_not():
    rng = np.random.default_rng(7)
    horizon, trials = 10, 300
    hac = naive = 0
    for _ in range(trials):
        difference = overlapping_noise(rng, 2_000, horizon)
        hac_lag = overlap_lag(horizon, instruments=1)
        hac += diebold_mariano(np.zeros_like(difference), difference, lag=hac_lag).significant
        naive += diebold_mariano(np.zeros_like(difference), difference, lag=0).significant
    assert hac / trials <= 1.6 * SIGNIFICANCE_LEVEL
    assert naive / trials > 3 * SIGNIFICANCE_LEVEL  # what ignoring the overlap would claim


def test_a_real_edge_is_significant_and_its_sign_matters() -> None:
    rng = np.random.default_rng(3)
    baseline_loss = np.abs(rng.normal(size=5_000))
    better = baseline_loss * 0.9
    worse = baseline_loss * 1.1
    assert diebold_mariano(better, baseline_loss, lag=4).significant
    assert not diebold_mariano(worse, baseline_loss, lag=4).significant
    assert diebold_mariano(better, baseline_loss, lag=4).mean_loss_difference > 0


def test_identical_forecasts_prove_nothing() -> None:
    loss = np.abs(np.random.default_rng(0).normal(size=100))
    result = diebold_mariano(loss, loss.copy(), lag=3)
    assert not result.significant
    assert result.p_value == pytest.approx(1.0)


def test_the_lag_covers_the_overlap_of_every_instrument() -> None:
    assert overlap_lag(horizon=5, instruments=3) == 2 * (4 * 3 + 2)
    assert overlap_lag(horizon=1, instruments=1) == 1
