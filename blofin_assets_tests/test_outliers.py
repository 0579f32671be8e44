"""Every prediction says how far its features lie from its version's training rows: ordinary
rows are rarely flagged, rows far outside the training range always are, the score is
reproducible from reference.npz with numpy and scikit-learn alone, and a version saved
without a reference says "unknown", never "not an outlier"."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance
from sklearn.neighbors import NearestNeighbors

from blofin_assets.forward.backtest import BacktestConfig, run_backtest
from blofin_assets.forward.outcomes import outcome_rows
from blofin_assets.market.settings import MarketSettings
from blofin_assets.ml.reference import build_reference, read_reference
from blofin_assets.ml.specs import MODEL_SPECS, SPECS_BY_NAME
from blofin_assets.ml.store import REFERENCE_FILE, ModelStore, sha256_file
from blofin_assets.ml.training import train_model
from blofin_assets.serving import load_model
from blofin_assets.serving.model import ServedModel
from blofin_assets.storage.candles import insert_new_candles
from blofin_assets.storage.connection import DuckDBFile
from blofin_assets.storage.outcomes import OUTCOMES_DDL, append_outcomes, read_outcomes
from blofin_assets.storage.predictions import append_predictions
from blofin_assets_tests.conftest import Project
from blofin_assets_tests.markets import iid_market, labelled_rows

HORIZON = 5
MODEL_NAMES = sorted(spec.name for spec in MODEL_SPECS)
ORDINARY_SHARE = 0.01  # at most this share of a held-out block from the training distribution


def block_after_training(model: ServedModel, rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of its test block: after training, never seen by the estimator."""
    start = pd.Timestamp(model.metadata["data_window"]["test_start"])
    return rows[pd.to_datetime(rows["ts"], utc=True) >= start].reset_index(drop=True)


def far_rows(model: ServedModel, rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Rows built far outside the training range: every feature x10, or shifted by 5 training
    standard deviations (the scaler's own), up or down."""
    features = model.features
    spread = model.scaler.scale_
    built = {}
    for name, change in (
        ("x10", lambda v: v * 10),
        ("+5 sd", lambda v: v + 5 * spread),
        ("-5 sd", lambda v: v - 5 * spread),
    ):
        frame = rows.copy()
        frame[features] = change(rows[features].to_numpy(dtype="float64"))
        built[name] = frame
    return built


def test_ordinary_rows_are_rarely_flagged_and_rows_far_outside_always() -> None:
    """An i.i.d. market: its test block has the training block's distribution."""
    rows = labelled_rows(iid_market(4 * 1440), horizon=HORIZON)
    spec = SPECS_BY_NAME["risk_scorer"]
    trained = train_model(spec, rows, horizon=HORIZON)
    model = ServedModel(
        name=spec.name,
        version="v-test",
        estimator=trained.estimator,
        scaler=trained.scaler,
        config={"task": spec.task, "features": list(spec.features), "target": spec.target},
        metadata={"data_window": {"test_start": trained.split.test_start.isoformat()}},
        reference=trained.reference,
    )
    held_out = block_after_training(model, rows)
    assert len(held_out) > 2000
    scored = model.predict(held_out)
    assert scored["outlier"].dtype == "boolean" and not scored["outlier"].isna().any()
    assert scored["outlier"].mean() <= ORDINARY_SHARE, scored["outlier_score"].describe()
    assert 0.7 < scored["outlier_score"].median() < 1.5  # a typical row scores about 1
    for name, frame in far_rows(model, held_out).items():
        far = model.predict(frame)
        assert far["outlier"].all(), (name, far["outlier_score"].describe())
        # The prediction itself is untouched by the flag: the same estimator output.
        pd.testing.assert_series_equal(
            far["prediction"],
            pd.Series(
                trained.estimator.predict(
                    trained.scaler.transform(frame[model.features].to_numpy())
                ),
                name="prediction",
            ).clip(0, 100),
            check_index=False,
        )


def test_the_threshold_flags_the_quantile_it_names_of_the_training_rows() -> None:
    """Built on standard normal rows, the reference flags 0.1 % of its own training rows and
    about as few of fresh rows from the same distribution; the score's scale is its median."""
    rng = np.random.default_rng(3)
    train = rng.normal(size=(30_000, 6))
    reference = build_reference(train, [f"f{i}" for i in range(6)])
    assert reference.rows.shape == (2000, 6)
    own = reference.flags(reference.scores(train[1::7]))  # mostly rows outside the sample
    fresh = reference.scores(rng.normal(size=(20_000, 6)))
    assert own.mean() <= 0.003 and reference.flags(fresh).mean() <= 0.003
    assert abs(np.median(fresh) - 1) < 0.05
    assert reference.flags(reference.scores(rng.normal(size=(500, 6)) + 6)).all()
    with pytest.raises(ValueError, match="6 features"):
        reference.scores(train[:5, :4])


def test_the_reference_file_holds_plain_arrays_and_is_hashed(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    reference = build_reference(rng.normal(size=(5000, 3)), ["a", "b", "c"])
    store = ModelStore(tmp_path)
    directory = store.save_version(
        "m",
        "v1",
        estimator={"not": "a model"},
        scaler=None,
        config={},
        metadata={},
        reference=reference.arrays(),
    )
    path = directory / REFERENCE_FILE
    assert json.loads((directory / "metadata.json").read_text())["sha256"][
        REFERENCE_FILE
    ] == sha256_file(path)
    with np.load(path, allow_pickle=False) as arrays:  # no pickle needed to read it
        assert set(arrays.files) == set(reference.arrays())
    loaded = read_reference(path)
    x = rng.normal(size=(100, 3)) * 3
    np.testing.assert_allclose(loaded.scores(x), reference.scores(x), rtol=1e-12)
    assert loaded.threshold == reference.threshold and loaded.features == ("a", "b", "c")
    with pytest.raises(ValueError, match="Python objects"):
        store.save_version(
            "m",
            "v2",
            estimator=1,
            scaler=1,
            config={},
            metadata={},
            reference={"x": np.array([{}, 1], dtype=object)},
        )
    assert store.version_names("m") == ["v1"]  # the failed write left nothing


def consumer_scores(directory: Path, model: ServedModel, rows: pd.DataFrame) -> np.ndarray:
    """What any program computes from the version folder, per its docs: numpy, scikit-learn."""
    with np.load(directory / REFERENCE_FILE, allow_pickle=False) as arrays:
        reference_rows = arrays["rows"].astype("float64")
        k, scale = int(arrays["neighbours"]), float(arrays["scale"])
        features = [str(f) for f in arrays["features"]]
    index = NearestNeighbors(n_neighbors=k).fit(reference_rows)
    distances, _ = index.kneighbors(model.scaler.transform(rows[features].to_numpy("float64")))
    return distances.mean(axis=1) / scale


def test_served_predictions_carry_the_flag_and_a_consumer_reproduces_it(
    project: Project, instance: DagsterInstance
) -> None:
    result = project.run(instance)
    stored = project.query(
        "SELECT model_name, outlier, outlier_score, expired, model_age_hours FROM model_predictions"
    )
    assert len(stored) == 3 * len(MODEL_NAMES)
    thresholds = {n: load_model(n, project.models_dir).reference.threshold for n in MODEL_NAMES}
    for name, outlier, score, expired, age in stored:
        assert outlier is not None and score > 0, name
        assert outlier == (score > thresholds[name])
        assert expired == (age > 3), name  # the default limit, BLOFIN_MODEL_MAX_AGE_HOURS
    metadata = result.asset_materializations_for_node("model_predictions")[0].metadata
    assert metadata["outliers"].value == sum(row[1] for row in stored)
    assert metadata["outlier_unknown"].value == 0
    with duckdb.connect(str(project.db_path), read_only=True) as con:
        rows = con.execute("SELECT * FROM features ORDER BY ts, inst_id").df()
    store = ModelStore(project.models_dir)
    for name in MODEL_NAMES:
        model = load_model(name, project.models_dir)
        directory = store.served_dir(name)
        summary = model.metadata["outlier_reference"]
        assert summary["threshold"] == model.reference.threshold and summary["rows"] <= 2000
        held_out = block_after_training(model, rows)
        scored = model.predict(held_out)
        np.testing.assert_allclose(
            consumer_scores(directory, model, held_out), scored["outlier_score"], rtol=1e-9
        )
        # The demo market's test block: later than training, never seen by the estimator.
        assert scored["outlier"].mean() <= ORDINARY_SHARE, (name, scored["outlier"].mean())
        for built, frame in far_rows(model, held_out.iloc[::25]).items():
            assert model.predict(frame)["outlier"].all(), (name, built)


def test_outcomes_carry_the_version_flag_and_old_tables_gain_the_columns(
    project: Project, instance: DagsterInstance
) -> None:
    """A prediction_outcomes from before the flag: rows kept (NULL: unknown), columns added;
    live outcomes scored by a loaded version carry its score."""
    project.run(instance, ["candles", "features", "targets", "risk_scorer", "ml_model_results"])
    old_ddl = OUTCOMES_DDL.replace("outlier BOOLEAN,", "").replace("outlier_score DOUBLE,", "")
    with duckdb.connect(str(project.db_path)) as con:
        con.execute(old_ddl)
        assert "outlier" not in str(con.execute("DESCRIBE prediction_outcomes").fetchall())
        con.execute(
            "INSERT INTO prediction_outcomes VALUES ('BTC-USDT', '2025-01-01 00:05:00+00', "
            "'risk_scorer', 'legacy', 'live', 5, 50, NULL, 40, 45, 'persistence', 100, 0.01, "
            "'2025-01-01 00:00:00+00', '2025-01-01 01:00:00+00')"
        )
        rows = con.execute(
            "SELECT * FROM features JOIN targets USING (inst_id, ts) ORDER BY ts, inst_id"
        ).df()
    model = load_model("risk_scorer", project.models_dir)
    later = block_after_training(model, rows)
    data_until = pd.Timestamp(later["ts"].min()) - pd.Timedelta(minutes=1)
    outcomes = outcome_rows(
        model, later, mode="live", data_until=data_until, scored_at=pd.Timestamp.now(tz="UTC")
    )
    # A caller that states nothing about outliers (written before them): NULL, unknown.
    unstated = outcomes.iloc[:1].drop(columns=["outlier", "outlier_score"])
    unstated = unstated.assign(model_version="unstated")
    with DuckDBFile(str(project.db_path)).connect() as con:
        assert append_outcomes(con, outcomes) == len(later)
        assert append_outcomes(con, unstated) == 1
        stored = read_outcomes(con)
    legacy = stored["model_version"].isin(["legacy", "unstated"])
    assert legacy.sum() == 2
    assert stored.loc[legacy, ["outlier", "outlier_score"]].isna().all().all()
    np.testing.assert_allclose(
        stored.loc[~legacy, "outlier_score"], model.predict(later)["outlier_score"]
    )
    assert stored.loc[~legacy, "outlier"].notna().all()


def test_a_version_saved_without_a_reference_has_unknown_outliers(tmp_path: Path) -> None:
    rows = labelled_rows(iid_market(2 * 1440), horizon=HORIZON)
    spec = SPECS_BY_NAME["volatility_regressor"]
    trained = train_model(spec, rows, horizon=HORIZON)
    model = ServedModel(
        name=spec.name,
        version="v-old",
        estimator=trained.estimator,
        scaler=trained.scaler,
        config={"task": spec.task, "features": list(spec.features), "target": spec.target},
        metadata={},
    )
    scored = model.predict(rows.iloc[:10])
    assert scored["outlier"].isna().all() and scored["outlier_score"].isna().all()
    with_reference = dataclasses.replace(model, reference=trained.reference).predict(rows[:10])
    pd.testing.assert_series_equal(scored["prediction"], with_reference["prediction"])
    frame = pd.DataFrame(
        {
            "inst_id": "BTC-USDT",
            "ts": rows["ts"].iloc[:10],
            "model_name": spec.name,
            "model_version": model.version,
            "prediction": scored["prediction"],
            "probability": None,
            "class_probabilities": None,
            "predicted_at": pd.Timestamp.now(tz="UTC"),
            "horizon": HORIZON,
            "prediction_label": None,
            "outlier": scored["outlier"],
            "outlier_score": scored["outlier_score"],
            "expired": False,
            "model_age_hours": 0.5,
        }
    )
    with duckdb.connect(str(tmp_path / "p.duckdb")) as con:
        assert append_predictions(con, frame) == 10
        assert con.execute(
            "SELECT count(*), count(outlier), count(outlier_score) FROM model_predictions"
        ).fetchall() == [(10, 0, 0)]


def test_backtest_outcomes_are_scored_against_each_retrain_points_rows(tmp_path: Path) -> None:
    # Four days: each retrain point's two-day window covers every hour of the day, so the
    # bars it scores bring no time of day it never saw (three days would not: tod_* flag).
    candles = iid_market(4 * 1440)
    db = DuckDBFile(str(tmp_path / "market.duckdb"))
    with db.connect() as con:
        insert_new_candles(con, candles, source="file", bar="1m")
    market = MarketSettings(
        source="file",
        instruments="BTC-USDT,ETH-USDT,SOL-USDT",
        bar="1m",
        lookback_days=4,
        training_days=2,
        horizon=HORIZON,
        api_url="",
        candles_file=str(tmp_path / "unused.csv"),
        on_bad_rows="reject",
        as_of=(candles["ts"].max() + pd.Timedelta(minutes=1)).isoformat(),
    )
    spec = SPECS_BY_NAME["risk_scorer"]
    for refit in (False, True):
        config = BacktestConfig(days=1, step_hours=12, refit_on_whole_window=refit)
        run_backtest(db, market, config, specs=[spec])
    with db.connect(read_only=True) as con:
        stored = read_outcomes(con, mode="backtest")
    assert len(stored) == 2 * 1440 * 3
    assert stored["outlier_score"].notna().all() and stored["outlier"].notna().all()
    shares = stored.groupby("model_version")["outlier"].mean()
    assert (shares <= ORDINARY_SHARE).all(), shares
