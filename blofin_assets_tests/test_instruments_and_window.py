"""The training window holds the configured instruments and says how much of the asked window
the history covers: an instrument removed from BLOFIN_INSTRUMENTS leaves features, targets and
the predictions (its candles stay stored), and a window longer than the history trains on what
exists with a WARN saying so."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from dagster import AssetCheckSeverity, DagsterInstance, ExecuteInProcessResult
from threadpoolctl import threadpool_limits

from blofin_assets.defs.resources import BlofinSettings
from blofin_assets.market.sources.demo import demo_candles
from blofin_assets.ml.ensemble import ENSEMBLE_SPEC
from blofin_assets.ml.features import FEATURE_WARMUP_BARS
from blofin_assets.ml.specs import MODEL_SPECS
from blofin_assets.ml.tables import feature_table, target_table
from blofin_assets.quality.tables import training_window_covered
from blofin_assets.storage.candles import insert_new_candles
from blofin_assets.storage.connection import connect, query_frame
from blofin_assets.storage.derived import Refresh, refresh_table
from blofin_assets_tests.conftest import Project

INSTRUMENTS = ["BTC-USDT", "ETH-USDT", "SOL-USDT"]
END = pd.Timestamp("2026-11-20T12:00", tz="UTC")
BAR = pd.Timedelta(minutes=1)


def settings(instruments: list[str], training_days: int = 2) -> BlofinSettings:
    return BlofinSettings(
        instruments=",".join(instruments), training_days=training_days, bar="1m", horizon=5
    )


def store(path: Path, instruments: list[str], days: int = 3) -> None:
    candles = demo_candles(instruments, "1m", END - pd.Timedelta(days=days), END)
    with connect(path) as con:
        insert_new_candles(con, candles, source="demo", bar="1m")


def refresh(path: Path, spec, instruments: list[str], training_days: int = 2) -> Refresh:
    with connect(path) as con:
        table = spec(settings(instruments, training_days))
        return refresh_table(con, table, training_days=training_days, bar=BAR)


def read(path: Path, table: str) -> pd.DataFrame:
    with connect(path, read_only=True) as con:
        return query_frame(con, f"SELECT * FROM {table} ORDER BY inst_id, ts")


# ---- plain: the derived tables follow the list -------------------------------------------------
def test_a_removed_instrument_leaves_the_tables_and_its_candles_stay(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    store(path, INSTRUMENTS)
    for spec in (feature_table, target_table):
        assert refresh(path, spec, INSTRUMENTS).mode == "rebuild"
        kept = refresh(path, spec, INSTRUMENTS[:2])
        assert kept.mode == "rebuild"
        assert kept.reason == (
            "settings changed: instruments ['BTC-USDT', 'ETH-USDT', 'SOL-USDT'] -> "
            "['BTC-USDT', 'ETH-USDT']"
        )
        name = spec(settings(INSTRUMENTS)).name
        table = read(path, name)
        assert sorted(set(table["inst_id"])) == INSTRUMENTS[:2]
        # The same rows a file holding only the kept instruments builds.
        alone = tmp_path / f"alone-{spec.__name__}.duckdb"
        store(alone, INSTRUMENTS[:2])
        refresh(alone, spec, INSTRUMENTS[:2])
        pd.testing.assert_frame_equal(table, read(alone, name))
        assert refresh(path, spec, INSTRUMENTS[:2]).mode == "append"
    with connect(path, read_only=True) as con:
        assert con.execute(
            "SELECT count(*) FROM candles WHERE inst_id = 'SOL-USDT'"
        ).fetchall() == [(3 * 1440,)]


def test_the_order_of_the_list_rebuilds_nothing(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    store(path, INSTRUMENTS)
    refresh(path, feature_table, INSTRUMENTS)
    assert refresh(path, feature_table, INSTRUMENTS[::-1]).mode == "append"


def test_the_window_coverage_verdict(tmp_path: Path) -> None:
    """Three days stored: a 3-day window is covered (its first day is the warm-up), a 30-day
    one is not, and the verdict says how much of it was there."""
    path = tmp_path / "w.duckdb"
    store(path, INSTRUMENTS[:2])
    verdicts = {}
    for days in (1, 3, 30):
        refresh(path, feature_table, INSTRUMENTS[:2], training_days=days)
        with connect(path, read_only=True) as con:
            verdicts[days] = training_window_covered(
                con, "features", training_days=days, bar=BAR, warmup_bars=FEATURE_WARMUP_BARS
            )
    assert verdicts[1].passed and verdicts[1].description == "trained on 1.0 of the 1 days asked"
    assert verdicts[3].passed and verdicts[3].description.startswith(
        "trained on 2.0 of the 3 days asked: the history covers the window, its first 1.0 days"
    )
    wide = verdicts[30]
    assert not wide.passed and wide.severity == "WARN"
    assert wide.description.startswith("trained on 2.0 of the 30 days asked (BTC-USDT)")
    assert wide.metadata["window_days_asked"] == 30
    assert wide.metadata["window_days_covered"] == 2.0
    assert wide.metadata["covered_days_per_instrument"] == {"BTC-USDT": 2.0, "ETH-USDT": 2.0}


# ---- in Dagster ------------------------------------------------------------------------------
def materialized(result: ExecuteInProcessResult, asset: str) -> dict:
    (event,) = result.asset_materializations_for_node(asset)
    return {key: value.value for key, value in event.metadata.items()}


def check(result: ExecuteInProcessResult, name: str):
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def test_an_instrument_removed_from_the_list_leaves_training_and_predictions(
    project: Project, instance: DagsterInstance
) -> None:
    with threadpool_limits(1):
        first = project.run(instance)
    assert first.success
    covered = check(first, "training_window_covered")
    assert covered.passed and covered.description.startswith("trained on 2.0 of the 3 days asked")
    assert materialized(first, "features")["instruments"] == INSTRUMENTS

    project.set_env(BLOFIN_INSTRUMENTS="ETH-USDT,BTC-USDT", BLOFIN_AS_OF="2026-11-20T12:10:30Z")
    later = project.run(instance, ["candles", "features", "targets", "model_predictions"])
    assert later.success
    assert materialized(later, "candles")["new_rows"] == 2 * 10  # SOL-USDT is not fetched
    assert check(later, "fresh").passed  # and its old candles are not "stale"
    for name in ("features", "targets"):
        meta = materialized(later, name)
        assert meta["write_mode"] == "rebuild" and "instruments" in meta["write_reason"], meta
        assert meta["instruments"] == ["BTC-USDT", "ETH-USDT"]
        assert project.query(f"SELECT DISTINCT inst_id FROM {name} ORDER BY 1") == [
            ("BTC-USDT",),
            ("ETH-USDT",),
        ]
    assert project.query("SELECT count(*) FROM candles WHERE inst_id = 'SOL-USDT'") == [(3 * 1440,)]
    newest = project.query(
        "SELECT DISTINCT inst_id FROM model_predictions WHERE ts = "
        "(SELECT max(ts) FROM model_predictions) ORDER BY 1"
    )
    assert newest == [("BTC-USDT",), ("ETH-USDT",)]
    assert project.query("SELECT max(ts) FROM model_predictions WHERE inst_id = 'SOL-USDT'")[0][
        0
    ] < pd.Timestamp("2026-11-20T12:00:00Z")


def test_a_window_longer_than_the_history_trains_on_what_exists_and_says_so(
    project: Project, instance: DagsterInstance
) -> None:
    project.set_env(BLOFIN_TRAINING_DAYS="30")  # three days are stored
    with threadpool_limits(1):
        result = project.run(instance)
    assert result.success
    recorded = project.query("SELECT model_name FROM ml_model_results ORDER BY model_name")
    # One row each: the five and the ensemble stacked on them.
    assert [row[0] for row in recorded] == sorted(
        [*(spec.name for spec in MODEL_SPECS), ENSEMBLE_SPEC.name]
    )
    for name in ("features", "targets"):
        meta = materialized(result, name)
        assert meta["window_days_asked"] == 30
        assert round(meta["window_days_covered"], 1) == 2.0
        assert meta["window_coverage"].startswith("trained on 2.0 of the 30 days asked")
    covered = check(result, "training_window_covered")
    assert not covered.passed and covered.severity == AssetCheckSeverity.WARN
    assert covered.description.startswith("trained on 2.0 of the 30 days asked")
