"""The promotion gate in a real run: a candidate failing an ERROR check is kept and recorded as
rejected, and serving stays on the last good version."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import joblib
import pandas as pd

from blofin_assets.market.sources.demo import demo_candles
from blofin_assets.ml.publish import target_definition
from blofin_assets.ml.specs import SPECS_BY_NAME
from blofin_assets.ml.store import ModelStore
from blofin_assets.storage.results import append_results, migrate_results, promoted_skills
from blofin_assets_tests.conftest import Project
from blofin_assets_tests.markets import periodic_market

END = pd.Timestamp("2026-11-20T12:00", tz="UTC")


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    out = frame.copy()
    out["ts"] = out["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.to_csv(path, index=False)


def test_leaky_candidate_is_rejected_and_the_last_good_model_stays_served(
    project: Project, instance, tmp_path: Path
) -> None:
    instruments = ["BTC-USDT", "ETH-USDT"]
    honest = demo_candles(instruments, "1m", END - pd.Timedelta(days=3), END)
    csv = tmp_path / "candles.csv"
    write_csv(honest, csv)
    project.set_env(
        BLOFIN_SOURCE="file",
        BLOFIN_CANDLES_FILE=str(csv),
        BLOFIN_INSTRUMENTS=",".join(instruments),
        BLOFIN_AS_OF=str(END + pd.Timedelta(days=3, minutes=1)),
    )
    project.run(instance)
    store = ModelStore(project.models_dir)
    good = store.served_version("direction_predictor")

    # Three more days in which price is a perfect sine: direction becomes "predictable".
    periodic = periodic_market(3 * 1440)
    periodic["ts"] = periodic["ts"] - periodic["ts"].min() + END
    write_csv(pd.concat([honest, periodic]), csv)
    result = project.run(instance)
    assert result.success  # a failing check does not fail the run: the asset gates serving

    status, reason, version = project.query(
        "SELECT status, status_reason, version FROM ml_model_results "
        "WHERE model_name = 'direction_predictor' ORDER BY id DESC LIMIT 1"
    )[0]
    assert status == "rejected" and "leakage_alarm" in reason and "LEAKAGE" in reason
    assert version != good
    assert store.served_version("direction_predictor") == good
    served_metadata = json.loads(
        (project.models_dir / "model_direction_predictor" / "metadata.json").read_text()
    )
    assert served_metadata["version"] == good and served_metadata["status"] == "promoted"
    candidate = store.read_metadata("direction_predictor", version)
    assert candidate["status"] == "rejected" and candidate["metrics"]["accuracy"] > 0.75

    (materialization,) = result.asset_materializations_for_node("direction_predictor")
    assert materialization.metadata["status"].value == "rejected"
    assert materialization.metadata["served_version"].value == good
    leakage = next(
        e
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == "direction_predictor" and e.check_name == "leakage_alarm"
    )
    assert not leakage.passed and leakage.severity.value == "ERROR"
    # Predictions come from the served (good) version, never from the rejected candidate.
    versions = {
        row[0]
        for row in project.query(
            "SELECT DISTINCT model_version FROM model_predictions "
            "WHERE model_name = 'direction_predictor'"
        )
    }
    assert versions == {good}


def test_a_promotion_cut_short_is_relabelled_and_never_counts_as_promoted(
    project: Project, instance, tmp_path: Path
) -> None:
    """The on-disk state of a run killed between saving a passing version and serving it."""
    project.set_env(BLOFIN_AS_OF=str(END + pd.Timedelta(minutes=1)))
    project.run(instance)
    store = ModelStore(project.models_dir)
    name = "volatility_regressor"
    served = store.served_version(name)
    metadata = store.read_metadata(name, served)
    cut_short = "29990101T000000Z-deadbeef"  # newer than anything a run can have made
    estimator = joblib.load(store.version_dir(name, served) / "model.pkl")
    scaler = joblib.load(store.version_dir(name, served) / "scaler.pkl")
    config = json.loads((store.version_dir(name, served) / "config.json").read_text())
    store.save_version(
        name,
        cut_short,
        estimator=estimator,
        scaler=scaler,
        config=config,
        metadata={**metadata, "trained_at": "2999-01-01T00:00:00+00:00", "skill": 0.99},
    )
    # ...and the process died here, before store.promote(): nothing else happened.

    project.set_env(BLOFIN_AS_OF=str(END + pd.Timedelta(minutes=61)))
    result = project.run(instance, [name, "ml_model_results"])
    assert result.success
    relabelled = store.read_metadata(name, cut_short)
    assert relabelled["status"] == "interrupted" and served in relabelled["status_reason"]
    status, reason = project.query(
        f"SELECT status, status_reason FROM ml_model_results WHERE version = '{cut_short}'"
    )[0]
    assert status == "interrupted" and "stopped before serving" in reason
    newest = store.served_version(name)
    assert newest not in (served, cut_short)
    assert store.read_metadata(name, newest)["status"] == "promoted"
    # The regression gate's history holds only versions that were served.
    with duckdb.connect(str(project.db_path), read_only=True) as con:
        definition = store.read_metadata(name, newest)["target_definition"]
        assert len(promoted_skills(con, name, definition, 10)) == 2


def test_the_regression_history_holds_only_versions_of_the_same_target_definition(
    tmp_path: Path,
) -> None:
    """BLOFIN_HORIZON 5 -> 30 -> 5: an H=30 candidate is not judged against H=5 skills, and
    the H=5 history resumes where it was; rows from before definitions were recorded (NULL)
    count for neither."""
    spec = SPECS_BY_NAME["risk_scorer"]
    rows = []
    for i, (horizon, skill) in enumerate([(5, 0.15), (5, 0.16), (30, 0.02), (None, 0.9)]):
        rows.append(
            {
                "model_name": spec.name,
                "version": f"v{i}",
                "status": "promoted",
                "trained_at": pd.Timestamp("2026-11-20T12:00Z") + pd.Timedelta(hours=i),
                "skill": skill,
                "horizon": horizon,
                "target_definition": None if horizon is None else target_definition(spec, horizon),
            }
        )
    with duckdb.connect(str(tmp_path / "r.duckdb")) as con:
        migrate_results(con)
        assert append_results(con, rows) == 4
        assert promoted_skills(con, spec.name, target_definition(spec, 5), 10) == [0.16, 0.15]
        assert promoted_skills(con, spec.name, target_definition(spec, 30), 10) == [0.02]
        assert promoted_skills(con, spec.name, target_definition(spec, 60), 10) == []
