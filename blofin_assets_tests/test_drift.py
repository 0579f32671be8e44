"""feature_drift / label_drift, plain: PSI against closed forms, then the verdicts on the real
features and targets tables of a stationary market and of one whose volatility turns tenfold
in its last day, compared with a served version's training block (its data_window)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from blofin_assets.defs.resources import BlofinSettings
from blofin_assets.ml.specs import MODEL_FEATURES, SPECS_BY_NAME
from blofin_assets.ml.tables import feature_table, target_table
from blofin_assets.quality import drift
from blofin_assets.quality.drift import feature_drift, label_drift
from blofin_assets.quality.drift_stats import (
    EMPTY_BIN_SHARE,
    RECENT_WINDOW,
    calibration_days,
    psi,
)
from blofin_assets.storage.candles import insert_new_candles
from blofin_assets.storage.connection import connect, query_frame
from blofin_assets.storage.derived import refresh_table
from blofin_assets_tests.markets import candles_from_closes

DAYS = 7  # one warm-up day, the version's five, the day it is judged on
BAR = pd.Timedelta(minutes=1)
INSTRUMENTS = ("BTC-USDT", "ETH-USDT")


# ---- the statistic ---------------------------------------------------------------------------
def test_psi_is_near_zero_on_one_distribution_and_large_on_a_tenfold_scale() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(0.0, 1.0, 40_000)
    assert psi(reference, rng.normal(0.0, 1.0, 4_000)) < 0.01
    # Ten times wider: most recent rows fall in the two outer deciles.
    assert psi(reference, rng.normal(0.0, 10.0, 4_000)) > 2.0


def test_a_class_label_gets_one_bin_per_class_and_the_closed_form_value() -> None:
    reference = np.r_[np.zeros(500), np.ones(500)]  # 50 % ups
    recent = np.r_[np.zeros(200), np.ones(800)]  # 80 % ups
    expected = (0.8 - 0.5) * np.log(0.8 / 0.5) + (0.2 - 0.5) * np.log(0.2 / 0.5)
    assert psi(reference, recent) == pytest.approx(expected, abs=1e-9)
    # An empty bin costs a finite amount, from the floor.
    assert np.isfinite(psi(reference, np.ones(1000)))
    assert psi(reference, np.ones(1000)) == pytest.approx(
        (1 - 0.5) * np.log(1 / 0.5) + (EMPTY_BIN_SHARE - 0.5) * np.log(EMPTY_BIN_SHARE / 0.5)
    )


def test_calibration_days_are_whole_days_counted_back_from_the_block_end() -> None:
    ts = pd.Series(pd.date_range("2026-01-01", periods=int(2.5 * 1440), freq="min", tz="UTC"))
    days = calibration_days(ts)
    assert len(days) == 2  # the half day at the start is left out
    assert [int(d.sum()) for d in days] == [1440, 1440]
    assert ts[days[0]].max() == ts.max()
    assert ts[days[1]].max() == ts.max() - RECENT_WINDOW


# ---- the verdicts on stored tables -------------------------------------------------------------
def market(last_day_factor: float, seed: int = 3) -> pd.DataFrame:
    """I.i.d. Gaussian 1-bar returns (0.1 %), the last day's scaled by ``last_day_factor``."""
    rng = np.random.default_rng(seed)
    bars = DAYS * 1440
    closes = {}
    for number, inst_id in enumerate(INSTRUMENTS):
        sigma = np.full(bars, 1e-3)
        sigma[-1440:] *= last_day_factor
        closes[inst_id] = 100.0 * (1 + number) * np.exp(np.cumsum(rng.normal(0.0, sigma)))
    return candles_from_closes(closes, start="2026-03-01")


def stored(path: Path, candles: pd.DataFrame) -> Path:
    """The real tables: candles inserted, features and targets built as the assets build them."""
    settings = BlofinSettings(
        instruments=",".join(INSTRUMENTS), training_days=DAYS + 1, bar="1m", horizon=5
    )
    with connect(path) as con:
        insert_new_candles(con, candles, source="file", bar="1m")
        for table in (feature_table, target_table):
            refresh_table(con, table(settings), training_days=DAYS + 1, bar=BAR)
    return path


def served_metadata(path: Path, importances: dict[str, float] | None = None) -> dict[str, Any]:
    """A version trained on the five days before the last one: its training block is the first
    80 % of their rows, as the purged split cuts it."""
    with connect(path, read_only=True) as con:
        ts = query_frame(con, "SELECT DISTINCT ts FROM features ORDER BY ts")["ts"]
    seen = ts[ts <= ts.max() - RECENT_WINDOW]
    return {
        "model_name": "m",
        "version": "20260306T000000Z-test",
        "data_window": {
            "start": seen.iloc[0].isoformat(),
            "train_end": seen.iloc[int(0.8 * len(seen))].isoformat(),
        },
        "feature_importances": importances or {},
    }


@pytest.fixture(scope="module")
def stationary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stored(tmp_path_factory.mktemp("stationary") / "w.duckdb", market(1.0))


@pytest.fixture(scope="module")
def tenfold(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stored(tmp_path_factory.mktemp("tenfold") / "w.duckdb", market(10.0))


def test_a_stationary_market_does_not_drift(stationary: Path) -> None:
    metadata = served_metadata(stationary)
    with connect(stationary, read_only=True) as con:
        verdict = feature_drift(con, metadata, MODEL_FEATURES)
        labels = {name: label_drift(con, metadata, spec) for name, spec in SPECS_BY_NAME.items()}
    assert verdict.passed, verdict.description
    assert verdict.metadata["judged"] and verdict.metadata["drifted_features"] == []
    assert verdict.metadata["calibration_days"] == 4
    # rv_1440 spans a day, so its last day sits in a few deciles even here: the per-feature
    # yardstick (the block's own days) is what keeps it quiet.
    assert verdict.metadata["max_psi"] > 0.25
    assert "| rv_1440 |" in verdict.metadata["per_feature"]
    assert all(v.passed for v in labels.values()), {k: v.description for k, v in labels.items()}
    assert all(v.metadata["psi"] < 0.05 for v in labels.values())


def test_a_large_read_is_thinned_evenly_and_judges_the_same(
    stationary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metadata = served_metadata(stationary)
    with connect(stationary, read_only=True) as con:
        whole = feature_drift(con, metadata, MODEL_FEATURES)
        monkeypatch.setattr(drift, "MAX_ROWS", 2_000)
        thinned = feature_drift(con, metadata, MODEL_FEATURES)
    assert whole.metadata["reference_rows"] > 10_000
    assert 1_000 <= thinned.metadata["reference_rows"] <= 2_000
    assert 1_000 <= thinned.metadata["recent_rows"] <= 2_000
    assert thinned.passed and thinned.metadata["calibration_days"] == 4
    assert thinned.metadata["max_psi_feature"] == whole.metadata["max_psi_feature"]


def test_a_tenfold_volatility_day_drifts_named_most_important_first(tenfold: Path) -> None:
    rng = np.random.default_rng(0)
    importances = dict(zip(rng.permutation(MODEL_FEATURES), np.linspace(0.1, 0.0, 24), strict=True))
    metadata = served_metadata(tenfold, importances)
    with connect(tenfold, read_only=True) as con:
        verdict = feature_drift(con, metadata, MODEL_FEATURES)
    assert not verdict.passed and verdict.severity == "WARN"
    drifted = verdict.metadata["drifted_features"]
    assert {"rv_5", "rv_15", "rv_60", "atr_14_rel", "range_rel", "bb_width_20", "ret_1"} <= set(
        drifted
    )
    assert {"tod_sin", "tod_cos", "rsi_14"}.isdisjoint(drifted)
    assert drifted == [f for f in importances if f in drifted]  # importances: largest first
    assert verdict.description.index(drifted[0]) < verdict.description.index(drifted[1])
    assert verdict.metadata["max_psi"] > 5.0
    assert isinstance(verdict.metadata["max_psi"], float)


def test_a_tenfold_volatility_day_moves_the_scale_labels_not_the_direction(tenfold: Path) -> None:
    metadata = served_metadata(tenfold)
    with connect(tenfold, read_only=True) as con:
        labels = {name: label_drift(con, metadata, spec) for name, spec in SPECS_BY_NAME.items()}
    failed = {name for name, v in labels.items() if not v.passed}
    assert {"volatility_regressor", "price_predictor"} <= failed
    assert "direction_predictor" not in failed
    direction = labels["direction_predictor"].metadata
    assert set(direction["training_base_rates"]) == {"down", "up"}
    assert direction["training_base_rates"]["up"] == pytest.approx(0.5, abs=0.03)
    assert "H-bar log return" in labels["price_predictor"].description
    volatility = labels["volatility_regressor"].metadata
    spread = volatility["recent_base_rates"]["median"] / volatility["training_base_rates"]["median"]
    assert 6.0 < spread < 14.0  # the label moved by the tenfold change


def test_a_young_block_is_not_judged_and_one_no_longer_stored_is_not_measurable(
    tmp_path: Path,
) -> None:
    path = stored(tmp_path / "w.duckdb", market(1.0, seed=5))
    metadata = served_metadata(path)
    train_end = pd.Timestamp(metadata["data_window"]["train_end"])
    young_start = (train_end - pd.Timedelta(hours=36)).isoformat()
    young_metadata = {**metadata, "data_window": {**metadata["data_window"], "start": young_start}}
    with connect(path, read_only=True) as con:
        young = label_drift(con, young_metadata, SPECS_BY_NAME["risk_scorer"])
    assert young.passed and young.metadata["judged"] is False
    assert "not judged" in young.description
    assert "holds 1 whole day(s); the drift yardstick needs 2" in young.description

    with connect(path) as con:  # the tables keep only their last 2.5 days, as a short window would
        for table in ("features", "targets"):
            con.execute(
                f"DELETE FROM {table} WHERE ts < (SELECT max(ts) FROM {table}) - INTERVAL 60 HOUR"
            )
    with connect(path, read_only=True) as con:
        lost = feature_drift(con, metadata, MODEL_FEATURES)
    assert not lost.passed and lost.severity == "WARN" and lost.metadata["judged"] is False
    assert "drift not measurable" in lost.description
    assert "features no longer holds the training block of 20260306T000000Z-test" in (
        lost.description
    )
    assert 0.0 < lost.metadata["block_stored_share"] < 0.5
