"""ml_model_results and model_predictions explain themselves: one naming rule for train and
test metrics, the headline with its unit and verdict, every column described in DuckDB and in
the catalog, classes named; older tables, and versions written before units, still read."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import duckdb
import pytest
from dagster import DagsterInstance, ExecuteInProcessResult, instance_for_test

from blofin_assets.ml.ensemble import ENSEMBLE_SPEC
from blofin_assets.ml.result_rows import METRIC_NAMES
from blofin_assets.ml.significance import SIGNIFICANCE_LEVEL
from blofin_assets.ml.specs import MODEL_SPECS, SPECS_BY_NAME, ModelSpec, metric_unit
from blofin_assets.ml.store import ModelStore
from blofin_assets.storage.predictions import PREDICTION_COLUMNS, PREDICTION_DESCRIPTIONS
from blofin_assets.storage.results import RESULTS_COLUMNS, RESULTS_DESCRIPTIONS, SEED_TEST_NAMES
from blofin_assets_tests.conftest import FROZEN_NOW, Project

MODEL_NAMES = [spec.name for spec in MODEL_SPECS]
ENSEMBLE = ENSEMBLE_SPEC.name
# A run records a row for each of the five and for the ensemble (trained last, highest id);
# on the demo market the ensemble is rejected, so it is not served and predicts nothing.
TRAINED: dict[str, ModelSpec] = {**SPECS_BY_NAME, ENSEMBLE: ENSEMBLE_SPEC}
CLASSIFIERS = {name for name, s in TRAINED.items() if s.task == "classification"}
SERVED_CLASSIFIERS = CLASSIFIERS - {ENSEMBLE}
SEED_QUERY = "SELECT id, model_name, train_accuracy FROM ml_model_results ORDER BY id DESC LIMIT 5"
TABLES = {"ml_model_results": RESULTS_DESCRIPTIONS, "model_predictions": PREDICTION_DESCRIPTIONS}


def configure(project: Project) -> None:
    """The conftest `project` fixture's environment, for a run shared by this module's tests."""
    for name in ("BLOFIN_SOURCE", "BLOFIN_CANDLES_FILE", "BLOFIN_API_URL", "BLOFIN_BAR"):
        project.monkeypatch.delenv(name, raising=False)
    project.set_env(
        BLOFIN_DUCKDB_PATH=str(project.db_path),
        BLOFIN_MODELS_DIR=str(project.models_dir),
        BLOFIN_AS_OF=FROZEN_NOW,
        BLOFIN_LOOKBACK_DAYS="3",
        BLOFIN_TRAINING_DAYS="3",
        BLOFIN_INSTRUMENTS="BTC-USDT,ETH-USDT,SOL-USDT",
    )


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Iterator[tuple[Project, ExecuteInProcessResult]]:
    """One whole-graph run on the demo market, read by the tests that only look."""
    root = tmp_path_factory.mktemp("results_table")
    with pytest.MonkeyPatch.context() as monkeypatch, instance_for_test() as instance:
        project = Project(root, root / "data" / "blofin.duckdb", root / "models", monkeypatch)
        configure(project)
        yield project, project.run(instance)


def frame(project: Project, sql: str):
    with duckdb.connect(str(project.db_path), read_only=True) as con:
        return con.execute(sql).df()


def comments(project: Project, table: str) -> dict[str, str | None]:
    return dict(
        project.query(
            "SELECT column_name, comment FROM duckdb_columns() "
            f"WHERE table_name = '{table}' ORDER BY column_index"
        )
    )


def materialized(result: ExecuteInProcessResult, asset: str) -> dict:
    (event,) = result.asset_materializations_for_node(asset)
    return {key: value.value for key, value in event.metadata.items()}


def assert_described(project: Project, result: ExecuteInProcessResult) -> None:
    """Every stored column has its description as a DuckDB comment, and the catalog's column
    schema lists exactly the stored columns with those descriptions and types."""
    for table, descriptions in TABLES.items():
        stored = comments(project, table)
        assert stored == {column: descriptions[column] for column in stored}, table
        assert all(text and len(text) > 10 for text in stored.values()), table
        schema = materialized(result, table)["dagster/column_schema"]
        types = dict(
            project.query(
                f"SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = '{table}'"
            )
        )
        assert [c.name for c in schema.columns] == list(stored), table
        for column in schema.columns:
            assert column.description == descriptions[column.name], (table, column.name)
            assert column.type == types[column.name], (table, column.name)


def test_the_seeds_query_works_verbatim_and_says_why_regressors_have_no_accuracy(
    fresh: tuple[Project, ExecuteInProcessResult],
) -> None:
    project, _ = fresh
    rows = project.query(SEED_QUERY)
    assert [row[0] for row in rows] == [6, 5, 4, 3, 2]  # one run: six rows, the newest five
    assert rows[0][1] == ENSEMBLE  # trained last
    names = [row[1] for row in rows]
    assert len(set(names)) == 5 and set(names) <= set(TRAINED), names
    for _, name, train_accuracy in rows:
        assert (train_accuracy is not None) == (name in CLASSIFIERS), name
    assert (
        "NULL for regressors: it is not defined for them"
        in comments(project, "ml_model_results")["train_accuracy"]
    )


def test_every_metric_is_stored_as_test_and_train_under_one_rule(
    fresh: tuple[Project, ExecuteInProcessResult],
) -> None:
    project, _ = fresh
    results = frame(project, "SELECT * FROM ml_model_results ORDER BY id")
    assert list(results.columns) == list(RESULTS_COLUMNS)
    assert sorted(results["model_name"]) == sorted(TRAINED)
    store = ModelStore(project.models_dir)
    for row in results.to_dict("records"):
        metadata = store.read_metadata(row["model_name"], row["version"])
        blocks = {"test": metadata["metrics"], "train": metadata["train_metrics"]}
        for metric in METRIC_NAMES:
            for block, reported in blocks.items():
                value = row[f"{block}_{metric}"]
                if metric in reported:
                    assert value == pytest.approx(reported[metric]), (
                        row["model_name"],
                        block,
                        metric,
                    )
                else:
                    assert value != value or value is None, (row["model_name"], block, metric)
        for metric in SEED_TEST_NAMES:  # the seed's names hold the test value
            assert row[metric] == row[f"test_{metric}"] or row[metric] != row[metric], metric
        if row["model_name"] in CLASSIFIERS:
            assert row["train_accuracy"] == row["train_accuracy"]
            assert row["train_f1"] == row["train_f1"] and row["test_mae"] != row["test_mae"]
        else:
            for metric in ("mae", "rmse", "r2"):
                assert row[f"train_{metric}"] == row[f"train_{metric}"], metric
                assert row[f"test_{metric}"] == row[f"test_{metric}"], metric
            assert row["train_accuracy"] != row["train_accuracy"]
    for name in ("direction_predictor", ENSEMBLE):  # both give P(up): probability metrics
        direction = results[results["model_name"] == name].iloc[0]
        assert direction["test_log_loss"] > 0 and 0 < direction["test_brier"] < 1, name


def test_the_headline_names_its_unit_rule_and_verdict(
    fresh: tuple[Project, ExecuteInProcessResult],
) -> None:
    project, result = fresh
    rows = frame(
        project,
        "SELECT model_name, version, primary_metric, metric_unit, target_unit, skill, "
        "skill_p_value, beyond_noise, baseline_name, class_names FROM ml_model_results",
    ).set_index("model_name")
    assert sorted(rows.index) == sorted(TRAINED)
    units = rows["metric_unit"].to_dict()
    assert units["risk_scorer"] == "risk score points (0-100)"
    assert "log return" in units["price_predictor"]
    assert "volatility" in units["volatility_regressor"]
    assert len({units["risk_scorer"], units["price_predictor"], units["volatility_regressor"]}) == 3
    assert (
        units["direction_predictor"]
        == units["momentum_classifier"]
        == units[ENSEMBLE]
        == "share of rows right (0-1)"
    )
    store = ModelStore(project.models_dir)
    for name, row in rows.iterrows():
        spec = TRAINED[name]
        assert row["metric_unit"] == metric_unit(spec, row["primary_metric"])
        assert row["target_unit"] == spec.target_unit
        expected = bool(row["skill"] > 0 and row["skill_p_value"] < SIGNIFICANCE_LEVEL)
        assert bool(row["beyond_noise"]) is expected, name
        # The five serve this run's version; the rejected ensemble serves none.
        served = store.served_version(name)
        assert served == (None if name == ENSEMBLE else row["version"]), name
        metadata = store.read_metadata(name, row["version"])
        assert bool(row["beyond_noise"]) is metadata["checks"]["beats_baseline"]["passed"]
        if name in CLASSIFIERS:
            assert json.loads(row["class_names"]) == list(spec.class_names)
        else:
            assert row["class_names"] is None
    preview = materialized(result, "ml_model_results")["latest"]
    risk_baseline = rows["baseline_name"]["risk_scorer"]
    for text in ("| model", "| unit", "risk score points (0-100)", risk_baseline):
        assert text in preview, text
    for number in re.findall(r"\d+\.\d+", preview):  # rounded to 4 digits, not 16
        assert len(number.replace(".", "").lstrip("0")) <= 4, number


def test_every_column_is_described_in_duckdb_and_in_the_catalog(
    fresh: tuple[Project, ExecuteInProcessResult],
) -> None:
    project, result = fresh
    assert set(RESULTS_DESCRIPTIONS) == set(RESULTS_COLUMNS)
    assert set(PREDICTION_DESCRIPTIONS) == set(PREDICTION_COLUMNS)
    assert_described(project, result)


def test_predictions_name_the_class_they_predict(
    fresh: tuple[Project, ExecuteInProcessResult],
) -> None:
    project, result = fresh
    rows = frame(project, "SELECT * FROM model_predictions")
    assert len(rows) == 3 * len(MODEL_NAMES)
    for row in rows.to_dict("records"):
        probabilities = json.loads(row["class_probabilities"] or "{}")
        if row["model_name"] == "momentum_classifier":
            names = SPECS_BY_NAME["momentum_classifier"].class_names
            assert row["prediction_label"] == names[int(row["prediction"])]
            likeliest = max(probabilities, key=probabilities.get)
            assert row["prediction_label"] == names[int(likeliest)]
        elif row["model_name"] == "direction_predictor":
            assert row["prediction_label"] == ("up" if row["prediction"] > 0.5 else "down")
        else:
            assert row["prediction_label"] is None, row["model_name"]
    labels = set(rows["prediction_label"].dropna())
    assert labels <= {"down", "up", "decelerating", "neutral", "accelerating"} and labels
    preview = materialized(result, "model_predictions")["latest"]
    for label in labels:
        assert label in preview, label


def test_tables_from_an_older_release_are_migrated_in_place_and_described(
    project: Project, instance: DagsterInstance
) -> None:
    """The seed release's ml_model_results (no baselines, units or test_/train_ twins) and a
    model_predictions without horizon or labels: rows kept as they were, columns appended,
    every column commented."""
    project.db_path.parent.mkdir(parents=True)
    seed_columns = list(RESULTS_COLUMNS)[: list(RESULTS_COLUMNS).index("recorded_at") + 1]
    with duckdb.connect(str(project.db_path)) as con:
        con.execute(
            "CREATE TABLE ml_model_results ("
            + ", ".join(f'"{c}" {RESULTS_COLUMNS[c]}' for c in seed_columns)
            + ")"
        )
        con.execute(
            "INSERT INTO ml_model_results (id, model_name, version, status, train_accuracy, "
            "test_accuracy, mae, trained_at) VALUES (1, 'direction_predictor', 'legacy-1', "
            "'promoted', 0.61, 0.51, NULL, '2025-01-01 00:00:00+00'), (2, 'risk_scorer', "
            "'legacy-2', 'promoted', NULL, NULL, 15.1, '2025-01-01 00:00:00+00')"
        )
        con.execute(
            "CREATE TABLE model_predictions (inst_id VARCHAR NOT NULL, ts TIMESTAMPTZ NOT NULL, "
            "model_name VARCHAR NOT NULL, model_version VARCHAR NOT NULL, prediction DOUBLE NOT "
            "NULL, probability DOUBLE, class_probabilities VARCHAR, predicted_at TIMESTAMPTZ NOT "
            "NULL, PRIMARY KEY (inst_id, ts, model_name, model_version))"
        )
        con.execute(
            "INSERT INTO model_predictions VALUES ('BTC-USDT', '2025-01-01 00:00:00+00', "
            "'momentum_classifier', 'legacy-1', 2.0, 0.7, '{\"0\": 0.1, \"1\": 0.2, \"2\": 0.7}', "
            "'2025-01-01 00:00:30+00')"
        )
    result = project.run(instance)
    assert project.query(
        "SELECT id, version, train_accuracy, test_accuracy, mae, test_mae, metric_unit, "
        "beyond_noise FROM ml_model_results WHERE id <= 2 ORDER BY id"
    ) == [
        (1, "legacy-1", 0.61, 0.51, None, None, None, None),
        (2, "legacy-2", None, None, 15.1, 15.1, None, None),  # the seed's mae is test_mae
    ]
    assert project.query("SELECT min(id), max(id), count(*) FROM ml_model_results WHERE id > 2")[
        0
    ] == (3, 8, 6)  # the five and the ensemble
    assert [c for c in comments(project, "ml_model_results")] == list(RESULTS_COLUMNS)
    assert project.query(
        "SELECT prediction, horizon, prediction_label FROM model_predictions "
        "WHERE model_version = 'legacy-1'"
    ) == [(2.0, None, None)]
    labelled = project.query("SELECT count(prediction_label) FROM model_predictions")[0][0]
    assert labelled == 3 * len(SERVED_CLASSIFIERS)
    assert_described(project, result)


def test_versions_written_before_units_and_class_names_still_read(
    project: Project, instance: DagsterInstance
) -> None:
    """Model files of the release before units and class names: class names come from the
    spec (their coding never changed); units from the spec only while it measures the same
    target definition, else NULL; no beyond_noise without the noise test's p-value."""
    project.run(instance, ["candles", "features", "targets", *MODEL_NAMES])
    store = ModelStore(project.models_dir)
    for name in MODEL_NAMES:
        (version,) = store.version_names(name)
        metadata = store.read_metadata(name, version)
        for key in ("target_unit", "metric_units", "class_names"):
            del metadata[key]
        if name == "risk_scorer":  # a label since redefined: its unit is not guessed
            metadata["target_definition"] = metadata["target_definition"].replace(
                "targets-", "targets-old-"
            )
        if name == "price_predictor":  # from before the noise test
            del metadata["skill_p_value"]
        # Files of an older release: no pickle-free copies, no hash of config.json.
        for newer in ("config.json", "model.skops", "model.ubj", "scaler.skops"):
            metadata["sha256"].pop(newer, None)
        store.rewrite_metadata(name, version, metadata)
        config_path = store.version_dir(name, version) / "config.json"
        config = json.loads(config_path.read_text())
        del config["class_names"]
        config_path.write_text(json.dumps(config))
    with duckdb.connect(str(project.db_path)) as con:  # nor a training-time hash record
        con.execute("DELETE FROM model_file_hashes")
    project.run(instance, ["ml_model_results", "model_predictions"])
    rows = {
        name: (unit, target_unit, beyond, names)
        for name, unit, target_unit, beyond, names in project.query(
            "SELECT model_name, metric_unit, target_unit, beyond_noise, class_names "
            "FROM ml_model_results"
        )
    }
    assert rows["risk_scorer"][:2] == (None, None)
    assert rows["volatility_regressor"][0] == metric_unit(
        SPECS_BY_NAME["volatility_regressor"], "mae"
    )
    assert rows["price_predictor"][2] is None and rows["volatility_regressor"][2] is not None
    assert json.loads(rows["momentum_classifier"][3]) == ["decelerating", "neutral", "accelerating"]
    assert json.loads(rows["direction_predictor"][3]) == ["down", "up"]
    assert rows["risk_scorer"][3] is None
    labels = dict(
        project.query(
            "SELECT model_name, count(prediction_label) FROM model_predictions GROUP BY ALL"
        )
    )
    assert labels == {name: 3 if name in SERVED_CLASSIFIERS else 0 for name in MODEL_NAMES}
