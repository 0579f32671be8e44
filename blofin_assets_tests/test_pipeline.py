"""The whole graph, materialized in-process through the real definitions, into a temp DuckDB
file and models dir, on the demo market."""

from __future__ import annotations

import json

import joblib
import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, DefaultScheduleStatus, Definitions, FloatMetadataValue

from blofin_assets.ml.specs import MODEL_SPECS
from blofin_assets.ml.store import sha256_file
from blofin_assets.storage.fingerprints import RECORDED
from blofin_assets_tests.conftest import Project

MODEL_NAMES = [spec.name for spec in MODEL_SPECS]
ENSEMBLE = "direction_ensemble"  # the sixth model, stacked on the five (ml/ensemble.py)
SEED_QUERY = "SELECT id, model_name, train_accuracy FROM ml_model_results ORDER BY id DESC LIMIT 5"


def materialization(result, asset: str):
    events = result.asset_materializations_for_node(asset)
    assert len(events) == 1
    return events[0].metadata


def test_materialize_all_builds_every_table_and_model(project: Project, instance) -> None:
    result = project.run(instance)
    assert result.success

    candles, instruments, duplicates = project.query(
        "SELECT count(*), count(DISTINCT inst_id), count(*) - count(DISTINCT (inst_id, ts)) "
        "FROM candles"
    )[0]
    assert (candles, instruments, duplicates) == (3 * 3 * 1440, 3, 0)
    tables = {row[0] for row in project.query("SELECT table_name FROM information_schema.tables")}
    assert {"candles", "features", "targets", "ml_model_results"} <= tables
    # Synthetic data is labelled on every materialization it flows into, and in model files.
    for asset in ["candles", "features", "targets", *MODEL_NAMES, ENSEMBLE, "model_predictions"]:
        assert materialization(result, asset)["synthetic"].value is True, asset
        assert materialization(result, asset)["data_label"].value == "SYNTHETIC demo market"
    # Candle fingerprints come from the insert's record, not from re-hashing every candle.
    for asset in ["candles", "features", "targets"]:
        assert materialization(result, asset)["candle_fingerprints"].value == RECORDED, asset
    assert {row[0] for row in project.query("SELECT data_sources FROM ml_model_results")} == {
        "demo"
    }

    rows = project.query(
        "SELECT model_name, status, train_accuracy, test_accuracy, r2, mae, primary_value, "
        "baseline_value, skill, feature_count FROM ml_model_results ORDER BY model_name"
    )
    assert [row[0] for row in rows] == sorted([*MODEL_NAMES, ENSEMBLE])
    for name, status, train_acc, test_acc, r2, mae, primary, baseline, skill, n_features in rows:
        # The ensemble is served only when it beats its members; on the demo it does not.
        assert status == ("rejected" if name == ENSEMBLE else "promoted"), name
        assert primary is not None and baseline is not None and skill is not None
        assert n_features >= 15
        if name in ("direction_predictor", "momentum_classifier", ENSEMBLE):
            assert train_acc is not None and test_acc is not None and r2 is None and mae is None
        else:  # a metric that does not apply is NULL, never 0
            assert train_acc is None and test_acc is None and r2 is not None and mae is not None


def test_served_files_load_and_predict_from_features(project: Project, instance) -> None:
    project.run(instance)
    for model_name in MODEL_NAMES:
        folder = project.models_dir / f"model_{model_name}"
        config = json.loads((folder / "config.json").read_text())
        metadata = json.loads((folder / "metadata.json").read_text())
        for key in ("features", "target", "model_type", "params"):
            assert key in config
        for key in ("version", "trained_at", "train_rows", "test_rows", "data_window", "metrics",
                    "baseline", "skill", "sha256"):  # fmt: skip
            assert key in metadata
        assert metadata["sha256"]["model.pkl"] == sha256_file(folder / "model.pkl")
        assert metadata["synthetic_data"] is True and metadata["data_sources"] == ["demo"]
        assert metadata["sha256"]["scaler.pkl"] == sha256_file(folder / "scaler.pkl")

        model = joblib.load(folder / "model.pkl")
        scaler = joblib.load(folder / "scaler.pkl")
        rows = pd.DataFrame(
            project.query(f"SELECT {', '.join(config['features'])} FROM features LIMIT 50"),
            columns=config["features"],
        )
        predictions = model.predict(scaler.transform(rows[config["features"]].to_numpy()))
        assert predictions.shape == (50,), model_name
        assert np.isfinite(predictions).all(), model_name


def test_model_materializations_carry_metrics_baselines_and_importances(
    project: Project, instance
) -> None:
    result = project.run(instance)
    direction = materialization(result, "direction_predictor")
    assert isinstance(direction["test_accuracy"], FloatMetadataValue)
    assert isinstance(direction["baseline_accuracy"], FloatMetadataValue)
    assert isinstance(direction["skill"], FloatMetadataValue)
    assert "| feature | importance |" in direction["feature_importances"].value
    assert direction["train_rows"].value > direction["test_rows"].value > 0
    assert "purge 5 bars" in direction["data_window"].value
    assert direction["served_version"].value == direction["version"].value
    assert str(project.models_dir) in direction["model_path"].value
    volatility = materialization(result, "volatility_regressor")
    assert volatility["train_rows"].value == 5_000  # the SVR row cap, recorded
    assert "| feature | importance |" in volatility["feature_importances"].value  # SVR too


def test_rerun_adds_exactly_six_results_and_no_candles(project: Project, instance) -> None:
    project.run(instance)
    first = project.query(SEED_QUERY)
    project.run(instance)
    assert project.query("SELECT count(*) FROM candles")[0][0] == 3 * 3 * 1440
    assert project.query("SELECT count(*) FROM ml_model_results")[0][0] == 12
    assert (
        project.query(
            "SELECT count(*) FROM (SELECT model_name, version FROM ml_model_results "
            "GROUP BY ALL HAVING count(*) > 1)"
        )[0][0]
        == 0
    )
    latest = project.query(SEED_QUERY)  # the seed's query, verbatim
    # The seed's five newest rows: the ensemble trains last, so it is among them.
    assert [row[0] for row in latest] == [12, 11, 10, 9, 8]
    assert latest[0][1] == ENSEMBLE and len({row[1] for row in latest}) == 5
    assert [row[0] for row in first] == [6, 5, 4, 3, 2]
    # Every version stays on disk; the newest promoted one is served.
    for name in [*MODEL_NAMES, ENSEMBLE]:
        assert len(list((project.models_dir / f"model_{name}" / "history").iterdir())) == 2


def test_the_clock_advancing_adds_only_the_new_bars(project: Project, instance) -> None:
    project.run(instance, ["candles"])
    project.set_env(BLOFIN_AS_OF="2026-11-20T12:10:30Z")
    result = project.run(instance, ["candles"])
    assert materialization(result, "candles")["new_rows"].value == 3 * 10
    assert project.query("SELECT count(*) FROM candles")[0][0] == 3 * 3 * 1440 + 30
    newest = project.query("SELECT max(ts) FROM candles")[0][0]
    assert pd.Timestamp(newest) == pd.Timestamp("2026-11-20T12:09:00Z")  # last *closed* bar


def test_an_hourly_run_appends_features_and_targets_and_says_so(project: Project, instance) -> None:
    """The first run builds the tables; the next hour's run appends the new bars' rows and drops
    those that left the window, and the catalog shows which happened and why."""
    project.set_env(BLOFIN_TRAINING_DAYS="1")  # 3 days of candles cover window + warm-up
    selection = ["candles", "features", "targets"]
    first = project.run(instance, selection)
    for name in ("features", "targets"):
        metadata = materialization(first, name)
        assert metadata["write_mode"].value == "rebuild"
        assert "first build" in metadata["write_reason"].value
    rows_before = project.query("SELECT count(*) FROM features")[0][0]

    project.set_env(BLOFIN_AS_OF="2026-11-20T13:00:30Z")
    hourly = project.run(instance, selection)
    for name in ("features", "targets"):
        metadata = materialization(hourly, name)
        assert metadata["write_mode"].value == "append", metadata["write_reason"].value
        assert metadata["rows_added"].value == 3 * 60
        assert metadata["rows_dropped"].value == 3 * 60  # the 1-day window slid one hour
        # Read: each instrument's 1440-bar warm-up and the new hour (+5 unlabelled bars).
        assert metadata["candles_read"].value <= 3 * (1440 + 60 + 5)
        # Where the step's time went, phase by phase (the benchmark reads these).
        phases = [metadata[f"{p}_seconds"].value for p in ("check", "read", "compute", "write")]
        assert all(seconds >= 0 for seconds in phases) and sum(phases) > 0
        assert (
            metadata["dagster/row_count"].value
            == project.query(f"SELECT count(*) FROM {name}")[0][0]
        )
    assert project.query("SELECT count(*) FROM features")[0][0] == rows_before
    newest = project.query("SELECT max(ts) FROM features")[0][0]
    assert pd.Timestamp(newest) == pd.Timestamp("2026-11-20T12:59:00Z")
    # Same data version when nothing new arrived: no model turns stale for nothing.
    again = project.run(instance, selection)
    assert (
        again.asset_materializations_for_node("features")[0].tags["dagster/data_version"]
        == hourly.asset_materializations_for_node("features")[0].tags["dagster/data_version"]
    )


@pytest.mark.slow
def test_default_demo_market_direction_is_a_coin_flip_and_volatility_is_predictable(
    project: Project, instance
) -> None:
    """The default run (3 instruments x 14 days of 1m bars): what an honest model can do."""
    project.set_env(BLOFIN_LOOKBACK_DAYS="14", BLOFIN_TRAINING_DAYS="14")
    project.run(instance)
    results = dict(
        (name, (accuracy, skill))
        for name, accuracy, skill in project.query(
            "SELECT model_name, test_accuracy, skill FROM ml_model_results"
        )
    )
    direction_accuracy, _ = results["direction_predictor"]
    assert 0.45 <= direction_accuracy <= 0.60
    assert results["volatility_regressor"][1] > 0
    assert results["risk_scorer"][1] > 0
    assert project.query("SELECT count(*) FROM candles")[0][0] == 3 * 14 * 1440


def test_asset_graph_shape(project: Project) -> None:
    graph = project.defs().resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == {
        "candles", "features", "targets", *MODEL_NAMES, ENSEMBLE, "ml_model_results",
        "model_predictions", "prediction_outcomes", "forward_performance",
        *(f"{name}_params" for name in MODEL_NAMES),
    }  # fmt: skip
    for name in MODEL_NAMES:
        node = graph.get(AssetKey(name))
        assert {p.to_user_string() for p in node.parent_keys} == {
            "candles", "features", "targets", f"{name}_params"
        }  # fmt: skip
        assert node.group_name == "models" and node.owners and node.kinds
        assert node.code_version == next(s.code_version for s in MODEL_SPECS if s.name == name)
    assert {p.to_user_string() for p in graph.get(AssetKey("ml_model_results")).parent_keys} == {
        *MODEL_NAMES, ENSEMBLE
    }  # fmt: skip
    ensemble = graph.get(AssetKey(ENSEMBLE))
    assert {p.to_user_string() for p in ensemble.parent_keys} == {
        "candles", "features", "targets", *MODEL_NAMES
    }  # fmt: skip
    outcomes = graph.get(AssetKey("prediction_outcomes"))
    assert {p.to_user_string() for p in outcomes.parent_keys} == {
        "ml_model_results", "features", "targets"
    }  # fmt: skip
    assert outcomes.group_name == "forward_record" and outcomes.owners
    forward = graph.get(AssetKey("forward_performance"))
    assert {p.to_user_string() for p in forward.parent_keys} == {"prediction_outcomes"}
    assert forward.group_name == "forward_record" and forward.owners


def test_definitions_are_loadable_as_dagster_loads_them(project: Project) -> None:
    from blofin_assets.definitions import defs

    Definitions.validate_loadable(defs)
    Definitions.validate_loadable(project.defs())
    schedule = project.defs().resolve_schedule_def("hourly_training_schedule")
    assert schedule.cron_schedule == "5 * * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == DefaultScheduleStatus.RUNNING
