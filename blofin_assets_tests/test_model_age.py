"""A served version older than BLOFIN_MODEL_MAX_AGE_HOURS at "now" makes expired
predictions: model_predictions marks them, load_model warns or refuses, and nothing else about
the predictions changes."""

from __future__ import annotations

import warnings
from datetime import timedelta

import duckdb
import pandas as pd
import pytest
from dagster import DagsterInstance

from blofin_assets.defs.assets.models import MODEL_FRESHNESS
from blofin_assets.defs.resources import BlofinSettings
from blofin_assets.market.settings import (
    DEFAULT_MODEL_MAX_AGE_HOURS,
    RETRAIN_INTERVAL_HOURS,
    MarketSettings,
)
from blofin_assets.ml.specs import MODEL_SPECS
from blofin_assets.serving import ModelExpiredError, ModelExpiredWarning, load_model
from blofin_assets.storage.training_rows import latest_feature_rows
from blofin_assets_tests.conftest import Project

MODEL_NAMES = sorted(spec.name for spec in MODEL_SPECS)
SETTINGS = {
    "source": "demo",
    "instruments": "BTC-USDT",
    "bar": "1m",
    "lookback_days": 1,
    "training_days": 1,
    "horizon": 5,
    "api_url": "",
    "candles_file": "",
    "on_bad_rows": "reject",
    "as_of": "",
}


def test_the_limit_is_a_setting_and_the_freshness_policy_follows_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert MarketSettings(**SETTINGS).model_max_age_hours == DEFAULT_MODEL_MAX_AGE_HOURS == 3
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="BLOFIN_MODEL_MAX_AGE_HOURS"):
            MarketSettings(**SETTINGS, model_max_age_hours=bad)
    monkeypatch.setenv("BLOFIN_MODEL_MAX_AGE_HOURS", "6.5")
    assert BlofinSettings().market().model_max_age_hours == 6.5
    # The asset's freshness policy fails one retraining interval before the default expiry.
    assert MODEL_FRESHNESS.fail_window.to_timedelta() == timedelta(
        hours=DEFAULT_MODEL_MAX_AGE_HOURS - RETRAIN_INTERVAL_HOURS
    )


def newest_training(project: Project) -> pd.Timestamp:
    """The newest bar any served version learnt from."""
    return max(load_model(name, project.models_dir).data_until for name in MODEL_NAMES)


def test_predictions_of_an_old_version_are_marked_expired_and_otherwise_unchanged(
    project: Project, instance: DagsterInstance
) -> None:
    project.run(instance, ["candles", "features", "targets", *MODEL_NAMES, "ml_model_results"])
    later = newest_training(project) + pd.Timedelta(hours=DEFAULT_MODEL_MAX_AGE_HOURS + 1)
    project.set_env(BLOFIN_AS_OF=later.isoformat())  # hours on, no retraining since
    result = project.run(instance, ["model_predictions"])
    metadata = result.asset_materializations_for_node("model_predictions")[0].metadata
    assert metadata["expired"].value == 3 * len(MODEL_NAMES)
    assert set(metadata["expired_models"].value) == set(MODEL_NAMES)
    with duckdb.connect(str(project.db_path), read_only=True) as con:
        stored = con.execute("SELECT * FROM model_predictions ORDER BY model_name, inst_id").df()
        latest = latest_feature_rows(con)
    assert stored["expired"].all()
    assert stored["model_age_hours"].between(DEFAULT_MODEL_MAX_AGE_HOURS, 4.5).all()
    assert (pd.to_datetime(stored["predicted_at"], utc=True) == later).all()
    # The same numbers as a version young enough: age changes the flag, not the prediction.
    for name, rows in stored.groupby("model_name"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # young: no warning at all
            model = load_model(name, project.models_dir, now=later, max_age_hours=24)
        fresh = model.predict(latest).assign(inst_id=latest["inst_id"].to_numpy())
        fresh = fresh.sort_values("inst_id")
        assert rows["prediction"].tolist() == pytest.approx(fresh["prediction"].tolist())
        assert rows["outlier_score"].tolist() == pytest.approx(fresh["outlier_score"].tolist())
        assert rows["outlier"].tolist() == fresh["outlier"].tolist()


def test_load_model_warns_about_an_expired_version_or_refuses_it(
    project: Project, instance: DagsterInstance
) -> None:
    project.run(instance, ["candles", "features", "targets", "risk_scorer", "ml_model_results"])
    name = "risk_scorer"
    data_until = load_model(name, project.models_dir).data_until
    served = load_model(name, project.models_dir, now=data_until + pd.Timedelta(hours=2))
    late = data_until + pd.Timedelta(hours=3.5)
    with pytest.warns(ModelExpiredWarning) as caught:
        old = load_model(name, project.models_dir, now=late)
    (message,) = [str(w.message) for w in caught]
    assert served.version in message and "3.50 h before now" in message
    assert "limit of 3 h (BLOFIN_MODEL_MAX_AGE_HOURS)" in message, message
    assert old.version == served.version  # the same version, loaded all the same
    with pytest.raises(ModelExpiredError, match=served.version):
        load_model(name, project.models_dir, now=late, refuse_expired=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_model(name, project.models_dir, now=late, max_age_hours=4, refuse_expired=True)
        project.set_env(BLOFIN_MODEL_MAX_AGE_HOURS="4", BLOFIN_AS_OF=late.isoformat())
        load_model(name, project.models_dir, refuse_expired=True)  # both from the environment
    project.set_env(BLOFIN_MODEL_MAX_AGE_HOURS="3")
    with pytest.raises(ModelExpiredError, match=r"3\.50 h"):
        load_model(name, project.models_dir, refuse_expired=True)
