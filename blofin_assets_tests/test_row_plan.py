"""A capped model reads only its planned rows, and is the model the whole frame gives: the
same split, the same rows kept, the same fit and metrics; a plan is refused for other caps or
for a frame that is not the plan's rows."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from blofin_assets.defs.resources import BlofinSettings
from blofin_assets.ml.specs import SPECS_BY_NAME, ModelSpec
from blofin_assets.ml.tables import feature_table, target_table
from blofin_assets.ml.training import (
    DEFAULT_TEST_FRACTION,
    TrainingDataError,
    train_model,
    training_columns,
)
from blofin_assets.storage.candles import insert_new_candles
from blofin_assets.storage.connection import connect
from blofin_assets.storage.derived import refresh_table
from blofin_assets.storage.training_rows import (
    read_model_rows,
    read_training_frame,
    read_training_keys,
)
from blofin_assets_tests.derived_markets import BAR, DAYS, T0, market

HORIZON = 5


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plan") / "warehouse.duckdb"
    settings = BlofinSettings(training_days=DAYS, bar="1m", horizon=HORIZON)
    with connect(path) as con:
        insert_new_candles(con, market(T0 + pd.Timedelta(hours=12)), source="demo", bar="1m")
        for table in (feature_table(settings), target_table(settings)):
            refresh_table(con, table, training_days=DAYS, bar=BAR)
    return path


def capped(name: str, **caps: object) -> ModelSpec:
    spec = SPECS_BY_NAME[name]
    quick = {k: 5 for k in ("n_estimators", "max_iter") if k in spec.params}
    return replace(spec, params={**spec.params, **quick}, **caps)


def read_both(path: Path, spec: ModelSpec):
    with connect(path, read_only=True) as con:
        full = read_training_frame(con, training_columns(spec))
        planned, plan = read_model_rows(
            con, spec, training_columns(spec), horizon=HORIZON, test_fraction=DEFAULT_TEST_FRACTION
        )
    return full, planned, plan


@pytest.mark.parametrize(
    ("name", "caps"),
    [
        ("direction_predictor", {"max_train_rows": 1_500, "row_sampling": "even"}),
        ("risk_scorer", {"max_train_rows": 2_000, "row_sampling": "recent"}),
        ("volatility_regressor", {"max_train_rows": 800, "max_test_rows": 1_000}),
    ],
)
def test_the_planned_read_trains_the_model_the_whole_frame_gives(
    warehouse: Path, name: str, caps: dict[str, object]
) -> None:
    spec = capped(name, **caps)
    full, planned, plan = read_both(warehouse, spec)
    assert plan is not None
    assert len(planned) == len(plan.positions) < len(full) // 2  # the caps did cut the read
    pd.testing.assert_frame_equal(
        planned.reset_index(drop=True), full.iloc[plan.positions].reset_index(drop=True)
    )
    from_plan = train_model(spec, planned, horizon=HORIZON, plan=plan)
    from_full = train_model(spec, full, horizon=HORIZON)
    assert from_plan.train_rows == from_full.train_rows == spec.max_train_rows
    assert from_plan.test_rows == from_full.test_rows
    assert from_plan.data_window == from_full.data_window
    assert from_plan.instruments == from_full.instruments
    assert from_plan.split.test_start == from_full.split.test_start
    assert from_plan.split.purged_rows == from_full.split.purged_rows > 0
    assert from_plan.evaluation.metrics == from_full.evaluation.metrics
    assert from_plan.evaluation.baselines == from_full.evaluation.baselines
    assert from_plan.train_metrics == from_full.train_metrics


def test_caps_that_keep_nearly_every_row_read_once_without_a_plan(warehouse: Path) -> None:
    spec = capped("direction_predictor", max_train_rows=10_000_000, row_sampling="even")
    full, planned, plan = read_both(warehouse, spec)
    assert plan is None
    pd.testing.assert_frame_equal(planned, full)
    # A cap just under the row count: the read plans, keeps > 90 % and reads once, no plan.
    spec = capped("direction_predictor", max_train_rows=len(full) - 1, row_sampling="even")
    full, planned, plan = read_both(warehouse, spec)
    assert plan is None
    pd.testing.assert_frame_equal(planned, full)
    uncapped = SPECS_BY_NAME["price_predictor"]
    assert read_both(warehouse, replace(uncapped, max_train_rows=None))[2] is None


def test_a_plan_is_refused_for_other_caps_or_another_frame(warehouse: Path) -> None:
    spec = capped("direction_predictor", max_train_rows=1_500, row_sampling="even")
    _, planned, plan = read_both(warehouse, spec)
    assert plan is not None
    other = replace(spec, max_train_rows=1_400)
    with pytest.raises(ValueError, match="row plan made for caps"):
        train_model(other, planned, horizon=HORIZON, plan=plan)
    with pytest.raises(TrainingDataError, match=f"keeps {len(plan.positions)} rows"):
        train_model(spec, planned.iloc[1:], horizon=HORIZON, plan=plan)


def test_a_key_with_no_labelled_row_is_an_error_not_a_shorter_frame(warehouse: Path) -> None:
    with connect(warehouse, read_only=True) as con:
        keys = read_training_keys(con).iloc[:100].copy()
        assert keys["ts"].is_monotonic_increasing
        keys.loc[keys.index[0], "ts"] = keys["ts"].iloc[0] - pd.Timedelta(days=365)
        with pytest.raises(ValueError, match="100 planned training rows, 99 found"):
            read_training_frame(con, ["inst_id", "ts", "close"], keys=keys)


def test_even_caps_keep_each_instrument_in_proportion(warehouse: Path) -> None:
    spec = capped("direction_predictor", max_train_rows=1_500, row_sampling="even")
    full, planned, plan = read_both(warehouse, spec)
    kept = planned.iloc[: len(plan.train_positions)]["inst_id"].value_counts()
    assert kept.max() - kept.min() <= 1 and len(kept) == full["inst_id"].nunique()
    spread = np.diff(np.sort(plan.train_positions))
    assert spread.min() >= 1  # no row twice
