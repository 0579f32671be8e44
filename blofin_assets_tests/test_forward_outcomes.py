"""The forward record: served versions scored on the bars they never saw, hour after hour,
checked against labels recomputed from the stored candles and against hand-computed rows."""

from __future__ import annotations

import dataclasses

import duckdb
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from blofin_assets.forward.live import served_spans
from blofin_assets.forward.outcomes import InSampleError, outcome_rows
from blofin_assets.ml.specs import MODEL_SPECS, SPECS_BY_NAME
from blofin_assets.ml.store import ModelStore
from blofin_assets.ml.targets import compute_targets
from blofin_assets.serving import ServedModel
from blofin_assets.storage.candles import read_candles
from blofin_assets.storage.connection import DuckDBWriteError
from blofin_assets.storage.outcomes import OUTCOME_COLUMNS, append_outcomes, read_outcomes
from blofin_assets.storage.training_rows import read_labelled_spans
from blofin_assets_tests.conftest import Project

MODEL_NAMES = [spec.name for spec in MODEL_SPECS]
HOURS = ["2026-11-20T12:00:30Z", "2026-11-20T13:00:30Z", "2026-11-20T14:00:30Z"]
DATA_UNTIL = pd.Timestamp("2026-11-20T12:00:00Z")
SCORED_AT = pd.Timestamp("2026-11-20T13:00:30Z")


def materialization(result, asset: str):
    events = result.asset_materializations_for_node(asset)
    assert len(events) == 1
    return events[0].metadata


def served_now(project: Project) -> dict[str, tuple[str, pd.Timestamp]]:
    """Each model's served version and its data_until, as a consumer saw it after a run."""
    store = ModelStore(project.models_dir)
    served = {}
    for name in MODEL_NAMES:
        version = store.served_version(name)
        served[name] = (version, pd.Timestamp(store.read_metadata(name, version)["data_until"]))
    return served


def live_outcomes(project: Project) -> pd.DataFrame:
    with duckdb.connect(str(project.db_path), read_only=True) as con:
        return read_outcomes(con, mode="live")


def test_three_hourly_runs_score_the_served_versions_out_of_sample(
    project: Project, instance
) -> None:
    served_after = []
    counts = []
    for hour in HOURS:
        project.set_env(BLOFIN_AS_OF=hour)
        result = project.run(instance)
        served_after.append(served_now(project))
        counts.append(len(live_outcomes(project)))
        recorded = materialization(result, "prediction_outcomes")
        added = counts[-1] - (counts[-2] if len(counts) > 1 else 0)
        # rows_added counts every mode: the live rows plus the ensemble's shadow rows.
        shadow = recorded["shadow_scored_direction_ensemble"].value
        assert recorded["rows_added"].value == added + shadow
        assert sum(recorded[f"scored_{name}"].value for name in MODEL_NAMES) == added
    assert counts[0] == 0  # the first version has not seen a bar close after its data yet
    assert 0 < counts[1] < counts[2]

    outcomes = live_outcomes(project)
    assert list(outcomes.columns) == OUTCOME_COLUMNS
    assert set(outcomes["model_name"]) == set(MODEL_NAMES)
    assert set(outcomes["inst_id"]) == {"BTC-USDT", "ETH-USDT", "SOL-USDT"}
    # Out of sample: every bar after the newest bar its version saw, as recorded in results.
    assert (outcomes["ts"] > outcomes["data_until"]).all()
    recorded = pd.DataFrame(
        project.query("SELECT model_name, version, data_until FROM ml_model_results"),
        columns=["model_name", "model_version", "recorded_until"],
    )
    joined = outcomes.merge(recorded, on=["model_name", "model_version"], how="left")
    assert joined["recorded_until"].notna().all()
    assert (pd.to_datetime(joined["recorded_until"], utc=True) == joined["data_until"]).all()

    # Each bar was predicted by the version served in the hour it closed: the newest served
    # snapshot whose data ended before it.
    for name, rows in outcomes.groupby("model_name"):
        snapshots = sorted({s[name] for s in served_after}, key=lambda s: s[1])
        for ts, version in zip(rows["ts"], rows["model_version"], strict=True):
            expected = [v for v, until in snapshots if until < ts][-1]
            assert version == expected, (name, ts)

    # realized is the label as targets computes it, recomputed from the stored candles.
    with duckdb.connect(str(project.db_path), read_only=True) as con:
        labels = compute_targets(read_candles(con), horizon=5)
    checked = outcomes.merge(labels, on=["inst_id", "ts"], how="left")
    for name, rows in checked.groupby("model_name"):
        target = SPECS_BY_NAME[name].target
        np.testing.assert_allclose(rows["realized"], rows[target], rtol=1e-12, err_msg=name)
    np.testing.assert_allclose(
        checked["realized_return"], np.log(checked["target_price"] / checked["close"]), rtol=1e-9
    )
    # Every labelled bar after the first version's data is scored once per model.
    first_until = served_after[0]["direction_predictor"][1]
    labelled = labels[labels["ts"] > first_until]
    direction = outcomes[outcomes["model_name"] == "direction_predictor"]
    assert len(direction) == len(labelled)
    assert not direction.duplicated(["inst_id", "ts"]).any()

    # The same hour again (it retrains on the same bars) adds nothing.
    again = project.run(instance)
    assert materialization(again, "prediction_outcomes")["rows_added"].value == 0
    assert len(live_outcomes(project)) == counts[-1]


def tiny_scaler() -> StandardScaler:
    return StandardScaler().fit(np.array([[-1.0], [1.0]]))  # mean 0, scale 1: x as is


def direction_model(baseline_kind: str) -> ServedModel:
    """A depth-1 tree: up share 1/4 for x < 0 and 3/4 for x > 0, by its training rows."""
    x = np.array([[-1.0]] * 4 + [[1.0]] * 4)
    y = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    tree = DecisionTreeClassifier(max_depth=1, random_state=0).fit(x, y)
    return ServedModel(
        name="direction_predictor",
        version="v-direction",
        estimator=tree,
        scaler=tiny_scaler(),
        config={
            "target": "target_direction",
            "task": "classification",
            "features": ["f"],
            "horizon_bars": 5,
            "target_transform": "none",
        },
        metadata={
            "baseline_kind": baseline_kind,
            "naive_constants": {"majority_class": 1.0, "base_rate": 0.6},
        },
    )


def price_model(baseline_kind: str) -> ServedModel:
    """Learns the H-bar log return 0.01 * f exactly; serves close * exp(0.01 * f)."""
    x = np.array([[-1.0], [0.0], [1.0]])
    linear = LinearRegression().fit(x, 0.01 * x[:, 0])
    return ServedModel(
        name="price_predictor",
        version="v-price",
        estimator=linear,
        scaler=tiny_scaler(),
        config={
            "target": "target_price",
            "task": "regression",
            "features": ["f"],
            "horizon_bars": 5,
            "target_transform": "log_return",
        },
        metadata={"baseline_kind": baseline_kind, "naive_constants": {"training_mean": 0.002}},
    )


def labelled_rows() -> pd.DataFrame:
    """Three bars after DATA_UNTIL: closes 100, 200, 50, each with its label and naive rules."""
    return pd.DataFrame(
        {
            "inst_id": ["BTC-USDT", "BTC-USDT", "ETH-USDT"],
            "ts": pd.to_datetime(
                ["2026-11-20T12:01:00Z", "2026-11-20T12:02:00Z", "2026-11-20T12:01:00Z"]
            ),
            "f": [-1.0, 1.0, 1.0],
            "close": [100.0, 200.0, 50.0],
            "target_direction": [1, 1, 0],
            "target_price": [110.0, 210.0, 45.0],
            "naive_price": [100.0, 200.0, 50.0],
            "naive_direction_last_h": [0.0, 1.0, 1.0],
        }
    )


def score(model: ServedModel, rows: pd.DataFrame | None = None) -> pd.DataFrame:
    return outcome_rows(
        model,
        labelled_rows() if rows is None else rows,
        mode="backtest",
        data_until=DATA_UNTIL,
        scored_at=SCORED_AT,
    )


def test_direction_outcomes_by_hand() -> None:
    out = score(direction_model("naive_direction_last_h"))
    assert list(out.columns) == OUTCOME_COLUMNS
    assert out["probability"].tolist() == [0.25, 0.75, 0.75]
    assert out["prediction"].tolist() == [0.0, 1.0, 1.0]  # the class: p_up > 0.5
    assert out["realized"].tolist() == [1.0, 1.0, 0.0]
    assert out["baseline"].tolist() == [0.0, 1.0, 1.0]
    assert set(out["baseline_name"]) == {"naive_direction_last_h"}
    assert out["horizon"].tolist() == [5, 5, 5]
    np.testing.assert_allclose(
        out["realized_return"], [np.log(1.1), np.log(1.05), np.log(0.9)], rtol=1e-12
    )
    assert (out["data_until"] == DATA_UNTIL).all() and (out["scored_at"] == SCORED_AT).all()
    assert set(out["model_version"]) == {"v-direction"} and set(out["mode"]) == {"backtest"}
    # The computed rules: constants from the training block, a fair coin.
    for kind, expected in (("majority_class", 1.0), ("base_rate", 0.6), ("coin_flip", 0.5)):
        ruled = score(direction_model(kind))
        assert ruled["baseline"].tolist() == [expected] * 3, kind
        assert set(ruled["baseline_name"]) == {kind}


def test_price_outcomes_by_hand() -> None:
    out = score(price_model("training_mean"))
    np.testing.assert_allclose(
        out["prediction"], [100 * np.exp(-0.01), 200 * np.exp(0.01), 50 * np.exp(0.01)]
    )
    assert out["probability"].isna().all()
    assert out["realized"].tolist() == [110.0, 210.0, 45.0]
    # The mean was learned as a log return: in prices it is close * exp(mean).
    np.testing.assert_allclose(out["baseline"], np.array([100.0, 200.0, 50.0]) * np.exp(0.002))
    persistence = score(price_model("naive_price"))
    assert persistence["baseline"].tolist() == [100.0, 200.0, 50.0]
    assert set(persistence["baseline_name"]) == {"naive_price"}


def test_a_regressor_training_mean_stays_in_target_units() -> None:
    model = dataclasses.replace(
        price_model("training_mean"),
        name="volatility_regressor",
        # Learnt in log space inside the estimator: its mean is of the floored volatility.
        config={
            **price_model("x").config,
            "target": "target_volatility",
            "target_transform": "log",
        },
        metadata={"baseline_kind": "training_mean", "naive_constants": {"training_mean": 0.004}},
    )
    rows = labelled_rows().assign(target_volatility=[0.003, 0.005, 0.002])
    out = score(model, rows)
    assert out["baseline"].tolist() == [0.004] * 3
    assert out["realized"].tolist() == [0.003, 0.005, 0.002]
    np.testing.assert_allclose(out["prediction"], [-0.01, 0.01, 0.01], atol=1e-12)


def test_a_bar_the_version_saw_is_refused_by_outcome_rows_and_by_the_table(tmp_path) -> None:
    model = direction_model("coin_flip")
    seen = labelled_rows().assign(ts=DATA_UNTIL)  # its last training bar
    with pytest.raises(InSampleError, match="at or before its data_until"):
        score(model, seen)
    out = score(model)
    in_sample = out.assign(data_until=out["ts"])  # as if the version had seen each bar
    with duckdb.connect(str(tmp_path / "outcomes.duckdb")) as con:
        with pytest.raises(DuckDBWriteError, match=r"CHECK\(\(ts > data_until\)\)"):
            append_outcomes(con, in_sample)
        assert read_outcomes(con).empty
        assert append_outcomes(con, out) == 3
        assert append_outcomes(con, out) == 0  # idempotent


def metadata(version: str, status: str, until: str, trained: str) -> dict[str, str]:
    return {
        "version": version,
        "status": status,
        "data_until": until,
        "trained_at": trained,
        "baseline_kind": "coin_flip",
    }


def test_only_served_versions_answer_for_bars_between_their_data_and_the_next() -> None:
    versions = [
        metadata("v1", "promoted", "2026-11-20T11:59Z", "2026-11-20T12:01Z"),
        metadata("v2", "rejected", "2026-11-20T12:59Z", "2026-11-20T13:01Z"),
        metadata("v3", "promoted", "2026-11-20T13:59Z", "2026-11-20T14:01Z"),
        metadata("v4", "promoted", "2026-11-20T13:59Z", "2026-11-20T14:02Z"),  # same bars
        metadata("v5", "interrupted", "2026-11-20T14:59Z", "2026-11-20T15:01Z"),
        metadata("v6", "promoted", "2026-11-20T15:59Z", "2026-11-20T16:01Z"),  # never served
    ]
    spans = served_spans("direction_predictor", versions, served="v4")
    assert [(s.version, s.data_until, s.until) for s in spans] == [
        ("v1", pd.Timestamp("2026-11-20T11:59Z"), pd.Timestamp("2026-11-20T13:59Z")),
        ("v4", pd.Timestamp("2026-11-20T13:59Z"), None),
    ]


def test_a_bar_back_filled_behind_scored_ones_is_still_read_for_scoring(tmp_path) -> None:
    """The record never resumes 'after the newest scored bar': a bar that arrives late (a
    back-filled gap) inside a version's span is read, and the bars already scored are not."""
    t0 = pd.Timestamp("2026-11-20T12:00Z")
    bars = [t0 + pd.Timedelta(minutes=m) for m in range(1, 6)]
    with duckdb.connect(str(tmp_path / "late.duckdb")) as con:
        con.execute("SET TimeZone = 'UTC'")
        keyed = pd.DataFrame({"inst_id": "BTC-USDT", "ts": bars})
        con.register("keyed", keyed.assign(close=100.0))
        con.execute("CREATE TABLE features AS SELECT * FROM keyed")
        con.register("labels", keyed.assign(target_price=101.0))
        con.execute("CREATE TABLE targets AS SELECT * FROM labels")
        scored = [bars[0], bars[1], bars[3], bars[4]]  # bars[2] came late, after bars[4]
        row = {
            "inst_id": "BTC-USDT", "model_name": "price_predictor", "model_version": "v1",
            "mode": "live", "horizon": 5, "prediction": 100.5, "probability": None,
            "realized": 101.0, "baseline": 100.0, "baseline_name": "naive_price", "close": 100.0,
            "realized_return": 0.00995, "data_until": t0, "scored_at": t0,
        }  # fmt: skip
        assert append_outcomes(con, pd.DataFrame([{**row, "ts": ts} for ts in scored])) == 4
        spans = pd.DataFrame(
            {"span": ["v1"], "inst_id": ["BTC-USDT"], "after": [t0], "until": [pd.NaT]}
        )
        unscored = read_labelled_spans(con, spans, unscored_by=("price_predictor", "live"))
        assert list(unscored["ts"]) == [bars[2]]
        # Another model's or mode's record does not hide the bar from this one.
        assert len(read_labelled_spans(con, spans, unscored_by=("risk_scorer", "live"))) == 5
        assert (
            len(read_labelled_spans(con, spans, unscored_by=("price_predictor", "backtest"))) == 5
        )
