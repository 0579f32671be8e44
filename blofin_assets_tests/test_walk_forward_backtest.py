"""The walk-forward backtest replays the retraining honestly: each version trains only on rows
whose label was known at its retrain point, scores only the bars after it, never touches the
served models, stores nothing twice, and finds a planted signal but none in noise."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance

from blofin_assets.forward import backtest
from blofin_assets.forward.backtest import (
    BacktestConfig,
    label_ends,
    refit_whole_window,
    retrain_points,
    run_backtest,
    usable_rows,
    variant_scores,
)
from blofin_assets.market.settings import MarketSettings
from blofin_assets.ml.specs import MODEL_SPECS, SPECS_BY_NAME
from blofin_assets.ml.training import train_model
from blofin_assets.storage.candles import insert_new_candles
from blofin_assets.storage.connection import DuckDBFile
from blofin_assets.storage.outcomes import read_outcomes
from blofin_assets_tests.conftest import Project
from blofin_assets_tests.markets import iid_market, labelled_rows, volume_signal_market

HORIZON = 5
SMALL = {"days": 2, "step_hours": 12}  # four retrain points, twelve hours apart


def tree_hash(root: Path) -> str:
    """Every file and link under ``root``: its path, and its bytes or its target."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_symlink():
            digest.update(str(path.readlink()).encode())
        elif path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def run_job(project: Project, instance: DagsterInstance, **config: object) -> None:
    job = project.defs().resolve_job_def("walk_forward_backtest")
    result = job.execute_in_process(
        instance=instance,
        run_config={"ops": {"walk_forward_backtest_op": {"config": config}}},
        raise_on_error=True,
    )
    assert result.success


def stored_label_ends(project: Project) -> pd.DataFrame:
    """Recomputed from candles in SQL, independently of the code under test."""
    with duckdb.connect(str(project.db_path), read_only=True) as con:
        frame = con.execute(
            f"SELECT inst_id, ts, lead(ts, {HORIZON}) OVER (PARTITION BY inst_id ORDER BY ts) "
            "AS label_end FROM candles"
        ).df()
    for column in ("ts", "label_end"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def stored_candles(project: Project) -> pd.DataFrame:
    with duckdb.connect(str(project.db_path), read_only=True) as con:
        frame = con.execute(
            "SELECT inst_id, ts, open, high, low, close, volume FROM candles ORDER BY inst_id, ts"
        ).df()
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).astype("datetime64[ns, UTC]")
    return frame


def outcomes(project: Project) -> pd.DataFrame:
    with duckdb.connect(str(project.db_path), read_only=True) as con:
        return read_outcomes(con, mode="backtest")


def test_the_job_fills_a_span_of_honest_outcomes_and_touches_no_served_model(
    project: Project, instance: DagsterInstance
) -> None:
    project.set_env(BLOFIN_LOOKBACK_DAYS="4", BLOFIN_TRAINING_DAYS="2")
    project.run(instance)  # a normal first build: candles, tables, served models
    models_before = tree_hash(project.models_dir)
    results_before = project.query("SELECT count(*) FROM ml_model_results")
    trained: list[tuple[str, pd.DataFrame]] = []

    def spy(spec, frame, **kwargs):
        trained.append((spec.name, frame.copy()))
        return train_model(spec, frame, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backtest, "train_model", spy)
        run_job(project, instance, **SMALL)

    # The span: every labelled bar of the last two days, once per model.
    labelled = labelled_rows(stored_candles(project), horizon=HORIZON)
    end = labelled["ts"].max()
    points = [end - pd.Timedelta(days=2) + k * pd.Timedelta(hours=12) for k in range(4)]
    expected = labelled[labelled["ts"] > points[0]]
    scored = outcomes(project)
    assert len(scored) == len(expected) * len(MODEL_SPECS)
    assert scored["ts"].min() == expected["ts"].min() and scored["ts"].max() == end
    # Each version scores only the bars after its retrain point, up to the next one.
    data_until = pd.to_datetime(scored["data_until"], utc=True)
    assert sorted(data_until.unique()) == points
    assert (scored["ts"] > data_until).all()
    assert (scored["ts"] <= data_until + pd.Timedelta(hours=12)).all()
    names = {f"backtest-{p.strftime('%Y%m%dT%H%M%S')}Z" for p in points}
    assert set(scored["model_version"]) == names

    # Every training frame: exactly the rows whose label was known at its point, in the window.
    ends = stored_label_ends(project)
    assert len(trained) == len(points) * len(MODEL_SPECS)
    known = labelled[["inst_id", "ts"]].merge(ends, on=["inst_id", "ts"])
    for k, (name, frame) in enumerate(trained):
        at = points[k // len(MODEL_SPECS)]
        assert name == MODEL_SPECS[k % len(MODEL_SPECS)].name
        used = frame[["inst_id", "ts"]].merge(ends, on=["inst_id", "ts"], how="left")
        assert (used["label_end"] <= at).all(), (name, at)
        allowed = known[(known["label_end"] <= at) & (known["ts"] >= at - pd.Timedelta(days=2))]
        assert len(used) == len(allowed), (name, at)  # none held back that a live run had
    assert trained[0][1]["ts"].min() > points[0] - pd.Timedelta(days=2)  # history was short
    assert trained[-1][1]["ts"].min() == points[-1] - pd.Timedelta(days=2)  # the live window

    assert tree_hash(project.models_dir) == models_before
    assert project.query("SELECT count(*) FROM ml_model_results") == results_before

    run_job(project, instance, **SMALL)  # the same run again adds nothing
    assert len(outcomes(project)) == len(scored)


def test_a_usable_row_needs_its_own_instruments_label_window_closed() -> None:
    """SOL stops trading for a while: its last bar before the gap is labelled by bars after
    it, so at T that row is not usable although T - ts is longer than H bars."""
    minute = pd.Timedelta(minutes=1)
    start = pd.Timestamp("2026-01-01", tz="UTC")
    btc = [start + i * minute for i in range(20)]
    sol = [start + i * minute for i in (*range(8), *range(15, 20))]
    candles = pd.DataFrame(
        {"inst_id": ["BTC-USDT"] * len(btc) + ["SOL-USDT"] * len(sol), "ts": btc + sol}
    )
    history = label_ends(candles, horizon=2)
    at = start + 10 * minute
    usable = usable_rows(history, at, training_days=1)
    by_instrument = usable.groupby("inst_id")["ts"].max()
    assert by_instrument["BTC-USDT"] == start + 8 * minute  # labelled by bars 9 and 10
    assert by_instrument["SOL-USDT"] == start + 5 * minute  # row 6 needs bar 15
    assert (usable["label_end"] <= at).all()


def test_retrain_points_cover_the_span_up_to_its_end() -> None:
    end = pd.Timestamp("2026-11-20T11:54", tz="UTC")
    points = retrain_points(end, BacktestConfig(step_hours=24, days=7))
    assert len(points) == 7 and points[0] == end - pd.Timedelta(days=7)
    assert points[-1] == end - pd.Timedelta(days=1)
    uneven = retrain_points(end, BacktestConfig(step_hours=10, days=1))
    assert len(uneven) == 3 and uneven[-1] < end  # the last segment is the shorter one


def warehouse(tmp_path: Path, candles: pd.DataFrame) -> tuple[DuckDBFile, MarketSettings]:
    """Candles only: the backtest computes its labelled rows from them."""
    db = DuckDBFile(str(tmp_path / "market.duckdb"))
    with db.connect() as con:
        insert_new_candles(con, candles, source="file", bar="1m")
    market = MarketSettings(
        source="file",
        instruments=",".join(sorted(candles["inst_id"].unique())),
        bar="1m",
        lookback_days=4,
        training_days=2,
        horizon=HORIZON,
        api_url="",
        candles_file=str(tmp_path / "unused.csv"),
        on_bad_rows="reject",
        as_of=(candles["ts"].max() + pd.Timedelta(minutes=1)).isoformat(),
    )
    return db, market


def direction_backtest(tmp_path: Path, candles: pd.DataFrame):
    db, market = warehouse(tmp_path, candles)
    spec = SPECS_BY_NAME["direction_predictor"]
    summary = run_backtest(db, market, BacktestConfig(**SMALL), specs=[spec])
    return variant_scores(db, summary, [spec])["direction_predictor"]


def test_a_planted_signal_shows_as_backtest_skill_beyond_noise(tmp_path: Path) -> None:
    figures = direction_backtest(tmp_path, volume_signal_market(4 * 1440))
    assert figures.n == 2 * 1440 * 3
    assert figures.skill > 0.05 and figures.p_value < 0.01, figures


def test_on_pure_noise_the_backtest_claims_no_skill(tmp_path: Path) -> None:
    figures = direction_backtest(tmp_path, iid_market(4 * 1440))
    assert figures.n == 2 * 1440 * 3
    assert not figures.beats_baseline_beyond_noise, figures
    assert figures.skill < 0.03, figures


def test_the_refit_variant_scores_the_same_bars_beside_the_train_block_one(
    tmp_path: Path,
) -> None:
    db, market = warehouse(tmp_path, iid_market(4 * 1440))
    spec = SPECS_BY_NAME["risk_scorer"]
    config = {"days": 1, "step_hours": 12}
    plain = run_backtest(db, market, BacktestConfig(**config), specs=[spec])
    refit = run_backtest(
        db, market, BacktestConfig(**config, refit_on_whole_window=True), specs=[spec]
    )
    assert plain.added == refit.added == {spec.name: 1440 * 3}
    with db.connect(read_only=True) as con:
        stored = read_outcomes(con, mode="backtest")
    refitted = stored["model_version"].str.startswith("backtest-refit-")
    assert refitted.sum() == (~refitted).sum()
    keys = ["inst_id", "ts", "data_until"]
    pairs = stored[~refitted].merge(stored[refitted], on=keys, suffixes=("", "_refit"))
    assert len(pairs) == refitted.sum()  # the same bars, the same retrain points
    assert not np.allclose(pairs["prediction"], pairs["prediction_refit"])


def test_a_refit_sees_every_usable_row_under_the_specs_row_cap() -> None:
    rows = labelled_rows(iid_market(3 * 1440), horizon=HORIZON)
    for name, expected in (("risk_scorer", len(rows)), ("volatility_regressor", 5_000)):
        spec = SPECS_BY_NAME[name]
        trained = train_model(spec, rows, horizon=HORIZON)
        estimator, scaler, constants = refit_whole_window(trained, rows)
        assert scaler.n_samples_seen_ == expected
        assert trained.scaler.n_samples_seen_ < expected or name == "volatility_regressor"
        assert estimator is not trained.estimator
        assert set(constants) == set(trained.naive_constants)
