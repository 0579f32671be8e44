"""The shadow record: the ensemble's rejected versions scored on the bars they would have
answered for, exactly as served versions are, but as mode 'shadow'; never for the five."""

from __future__ import annotations

from functools import partial

import duckdb
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from blofin_assets.forward.live import (
    LIVE,
    SHADOW,
    pending_live,
    pending_outcomes,
    score_pending,
    shadow_spans,
)
from blofin_assets.forward.live_skill import live_skill
from blofin_assets.forward.record import forward_record
from blofin_assets.ml.ensemble import ENSEMBLE_SPEC
from blofin_assets.ml.specs import SPECS_BY_NAME
from blofin_assets.ml.stacking import Member, StackedDirection
from blofin_assets.ml.store import ModelStore
from blofin_assets.storage.connection import DuckDBFile
from blofin_assets.storage.model_hashes import record_hashes_in
from blofin_assets.storage.outcomes import (
    MODE_CHECK,
    OUTCOMES_DDL,
    append_outcomes,
    read_outcomes,
)
from blofin_assets_tests.conftest import Project

T0 = pd.Timestamp("2026-11-20T12:00Z")
BARS = 40
INSTRUMENTS = ["BTC-USDT", "ETH-USDT"]
ENSEMBLE = ENSEMBLE_SPEC.name
DIRECTION = "direction_predictor"


def minute(m: int) -> pd.Timestamp:
    return T0 + pd.Timedelta(minutes=m)


def write_market(db_path: str) -> pd.DataFrame:
    """features (f, close) and targets (label, price, a naive rule) for BARS bars each."""
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        [(inst, minute(m)) for inst in INSTRUMENTS for m in range(1, BARS + 1)],
        columns=["inst_id", "ts"],
    )
    frame["f"] = rng.normal(size=len(frame))
    frame["close"] = 100.0 + rng.normal(size=len(frame))
    up = (frame["f"] + rng.normal(scale=0.5, size=len(frame)) > 0).astype("int64")
    frame["target_direction"] = up
    frame["target_price"] = frame["close"] * np.where(up == 1, 1.01, 0.99)
    frame["naive_direction_last_h"] = rng.integers(0, 2, len(frame)).astype("float64")
    with duckdb.connect(db_path) as con:
        con.execute("SET TimeZone = 'UTC'")
        con.register("frame", frame)
        con.execute("CREATE TABLE features AS SELECT inst_id, ts, f, close FROM frame")
        con.execute(
            "CREATE TABLE targets AS SELECT inst_id, ts, target_direction, target_price, "
            "naive_direction_last_h FROM frame"
        )
    return frame


def direction_member(frame: pd.DataFrame) -> tuple[LogisticRegression, StandardScaler]:
    scaler = StandardScaler().fit(frame[["f"]].to_numpy())
    model = LogisticRegression().fit(
        scaler.transform(frame[["f"]].to_numpy()), frame["target_direction"]
    )
    return model, scaler


def stacked(frame: pd.DataFrame) -> tuple[StackedDirection, StandardScaler]:
    """A one-member ensemble (the member is direction_predictor's logistic regression)."""
    model, scaler = direction_member(frame)
    member = Member(DIRECTION, "m", model, scaler, ["f"], "classification", "none", T0, T0)
    raw = frame[["f"]].to_numpy()
    inputs = StandardScaler().fit(raw)
    estimator = StackedDirection(members=(DIRECTION,)).with_members([member], inputs, ["f"])
    return estimator.fit(inputs.transform(raw), frame["target_direction"]), inputs


def save(
    store: ModelStore,
    db_path: str,
    name: str,
    version: str,
    *,
    status: str,
    until: int,
    fitted: tuple[object, StandardScaler],
    baseline_kind: str,
    model_type: str,
) -> None:
    """One version as publish_trained keeps it: files, hashes in DuckDB, served if promoted."""
    estimator, scaler = fitted
    store.save_version(
        name,
        version,
        estimator=estimator,
        scaler=scaler,
        config={
            "model_name": name,
            "model_type": model_type,
            "task": "classification",
            "target": "target_direction",
            "features": ["f"],
            "horizon_bars": 5,
            "target_transform": "none",
            "class_names": ["down", "up"],
        },
        metadata={
            "status": status,
            "data_until": minute(until).isoformat(),
            "trained_at": (minute(until) + pd.Timedelta(seconds=30)).isoformat(),
            "baseline_kind": baseline_kind,
            "naive_constants": {"base_rate": 0.5, "majority_class": 1.0},
        },
        record_hashes=partial(record_hashes_in, DuckDBFile(db_path), name, version),
    )
    if status == "promoted":
        store.promote(name, version)


def build_store(project: Project) -> tuple[ModelStore, pd.DataFrame]:
    """direction_ensemble: e1 served (data to minute 5), e2 and e3 rejected (10, 20);
    direction_predictor: d1 served (5), d2 rejected (15), e.g. a leak alarm."""
    db = str(project.db_path)
    project.db_path.parent.mkdir(parents=True, exist_ok=True)
    frame = write_market(db)
    store = ModelStore(project.models_dir)
    ensemble, member = stacked(frame), direction_member(frame)
    for version, status, until, kind in (
        ("e1", "promoted", 5, "naive_direction_last_h"),
        ("e2", "rejected", 10, f"member_{DIRECTION}"),
        ("e3", "rejected", 20, "naive_direction_last_h"),
    ):
        save(store, db, ENSEMBLE, version, status=status, until=until, fitted=ensemble,
             baseline_kind=kind, model_type="StackedDirection")  # fmt: skip
    for version, status, until in (("d1", "promoted", 5), ("d2", "rejected", 15)):
        save(store, db, DIRECTION, version, status=status, until=until, fitted=member,
             baseline_kind="naive_direction_last_h", model_type="LogisticRegression")  # fmt: skip
    return store, frame


def score(project: Project, store: ModelStore, pending_of) -> pd.DataFrame:
    with duckdb.connect(str(project.db_path), read_only=True) as con:
        pending = pending_of(con, store, [DIRECTION, ENSEMBLE], INSTRUMENTS)
    return score_pending(pending, store.root, scored_at=minute(BARS + 10))


def test_rejected_ensemble_versions_are_scored_as_shadow_only(project: Project) -> None:
    store, frame = build_store(project)
    outcomes = score(project, store, pending_outcomes)
    live = outcomes[outcomes["mode"] == LIVE]
    shadow = outcomes[outcomes["mode"] == SHADOW]
    # Served versions: exactly what the live record alone scores, every bar after minute 5.
    alone = score(project, store, pending_live)
    pd.testing.assert_frame_equal(live.reset_index(drop=True), alone.reset_index(drop=True))
    assert set(live["model_version"]) == {"e1", "d1"}
    assert len(live) == 2 * len(INSTRUMENTS) * (BARS - 5)
    # Shadow: only the ensemble's rejected versions, each on its own span, never d2.
    assert set(shadow["model_name"]) == {ENSEMBLE}
    spans = {"e2": (minute(10), minute(20)), "e3": (minute(20), minute(BARS))}
    for version, (after, until) in spans.items():
        own = shadow[shadow["model_version"] == version]
        assert own["ts"].min() > after and own["ts"].max() == until, version
        assert len(own) == len(INSTRUMENTS) * int((until - after) / pd.Timedelta(minutes=1))
    assert (shadow["ts"] > shadow["data_until"]).all()
    # Scored like a live one: the stacked P(up), and for e2 its member's own call as baseline.
    e2 = shadow[shadow["model_version"] == "e2"].merge(frame, on=["inst_id", "ts"])
    estimator, inputs = stacked(frame)
    x = inputs.transform(e2[["f"]].to_numpy())
    np.testing.assert_allclose(e2["probability"], estimator.predict_proba(x)[:, 1])
    member, scaler = direction_member(frame)
    call = member.predict_proba(scaler.transform(e2[["f"]].to_numpy()))[:, 1] > 0.5
    np.testing.assert_array_equal(e2["baseline"], call.astype("float64"))
    assert set(e2["baseline_name"]) == {f"member_{DIRECTION}"}
    np.testing.assert_array_equal(e2["realized"], e2["target_direction"])

    # Stored apart, and a replayed hour adds nothing to either record.
    with duckdb.connect(str(project.db_path)) as con:
        assert append_outcomes(con, outcomes) == len(outcomes)
        assert len(read_outcomes(con, mode=SHADOW)) == len(shadow)
    assert score(project, store, pending_outcomes).empty
    # A model not named for the shadow record gets none, even the ensemble.
    with duckdb.connect(str(project.db_path), read_only=True) as con:
        assert pending_outcomes(con, store, [ENSEMBLE], INSTRUMENTS, shadow_names=()) == []


def test_shadow_spans_cover_rejected_versions_up_to_the_next_saved_one() -> None:
    def meta(version: str, status: str, until: str) -> dict[str, str]:
        return {"version": version, "status": status, "data_until": until,
                "trained_at": until, "baseline_kind": "coin_flip"}  # fmt: skip

    versions = [
        meta("v1", "rejected", "2026-11-20T11:59Z"),
        meta("v2", "promoted", "2026-11-20T12:59Z"),
        meta("v3", "rejected", "2026-11-20T13:59Z"),
        meta("v4", "rejected", "2026-11-20T13:59Z"),  # same bars: takes over at once
        meta("v5", "interrupted", "2026-11-20T14:59Z"),
        meta("v6", "rejected", "2026-11-20T15:59Z"),
    ]
    spans = shadow_spans(ENSEMBLE, versions)
    ts = pd.Timestamp
    assert [(s.version, s.data_until, s.until) for s in spans] == [
        ("v1", ts("2026-11-20T11:59Z"), ts("2026-11-20T12:59Z")),
        ("v4", ts("2026-11-20T13:59Z"), ts("2026-11-20T14:59Z")),
        ("v6", ts("2026-11-20T15:59Z"), None),
    ]


def outcome(mode: str, version: str, m: int, right: bool) -> dict[str, object]:
    """The model right (or wrong) on bar ``m``; its naive rule right on every other bar."""
    realized = 1.0 if right else 0.0
    return {
        "inst_id": "BTC-USDT", "ts": minute(m), "model_name": ENSEMBLE, "model_version": version,
        "mode": mode, "horizon": 5, "prediction": 1.0, "probability": 0.7,
        "realized": realized, "baseline": realized if m % 2 else 1.0 - realized,
        "baseline_name": "naive_direction_last_h", "close": 100.0, "realized_return": 0.0,
        "data_until": T0, "scored_at": T0, "outlier": False, "outlier_score": 0.1,
    }  # fmt: skip


def test_forward_performance_has_shadow_windows_and_live_skill_ignores_them() -> None:
    # The shadow version is wrong on every bar, the served one right on every bar.
    shadow = [outcome(SHADOW, "e2", m, right=False) for m in range(1, 201)]
    live = [outcome(LIVE, "e1", m, right=True) for m in range(1, 101)]
    specs = [SPECS_BY_NAME[DIRECTION], ENSEMBLE_SPEC]
    kwargs = {"bar": pd.Timedelta(minutes=1), "computed_at": minute(300)}
    record = forward_record(pd.DataFrame(shadow + live), specs, shadow_models=[ENSEMBLE], **kwargs)
    table = record.frame()
    rows = table[table["mode"] == SHADOW]
    assert set(rows["model_name"]) == {ENSEMBLE}  # no shadow track for the five
    assert set(rows["variant"]) == {"rejected"} and set(rows["window"]) == {"24h", "7d", "all"}
    assert (rows["n"] == 200).all() and (rows["skill"] < 0).all()
    served = table[(table["mode"] == LIVE) & (table["model_name"] == ENSEMBLE)]
    assert (served["n"] == 100).all() and (served["skill"] > 0).all()
    # The shadow track exists from the first run, NaN while it has no rows.
    empty = forward_record(pd.DataFrame(live), specs, shadow_models=[ENSEMBLE], **kwargs)
    assert empty.find(ENSEMBLE, "24h", SHADOW, "rejected").n == 0

    # live_skill reads live rows only: a shadow record far below its baseline over a whole
    # week, with no live rows, leaves the model not judged.
    spec = ENSEMBLE_SPEC
    week = [outcome(SHADOW, "e2", 10 * m + m % 2, right=False) for m in range(1, 6 * 24 * 8)]
    only_shadow = forward_record(pd.DataFrame(week), specs, shadow_models=[ENSEMBLE], **kwargs)
    frame = only_shadow.frame()
    judged = frame[(frame["mode"] == SHADOW) & (frame["window"] == "7d")].iloc[0]
    assert judged["n"] >= spec.live_min_predictions and judged["p_value_worse"] < 0.05
    verdict = live_skill(spec, frame)
    assert verdict.passed and "no live outcomes" in verdict.description
    # The same rows relabelled live would fail: the check can see them when they are live.
    relabelled = frame.assign(mode=frame["mode"].replace(SHADOW, LIVE))
    relabelled = relabelled.assign(variant=relabelled["variant"].replace("rejected", "served"))
    relabelled = relabelled.drop_duplicates(
        ["model_name", "mode", "variant", "window"], keep="last"
    )
    assert not live_skill(spec, relabelled).passed


def test_an_outcomes_table_from_before_shadow_is_rebuilt_with_its_rows(tmp_path) -> None:
    old_check = "CHECK (mode IN ('live', 'backtest'))"
    assert MODE_CHECK in OUTCOMES_DDL
    row = outcome(LIVE, "e1", 1, right=True)
    with duckdb.connect(str(tmp_path / "old.duckdb")) as con:
        con.execute(OUTCOMES_DDL.replace(MODE_CHECK, old_check))
        assert append_outcomes(con, pd.DataFrame([row])) == 1
        assert append_outcomes(con, pd.DataFrame([outcome(SHADOW, "e2", 2, False)])) == 1
        stored = read_outcomes(con)
        assert list(stored["mode"]) == [LIVE, SHADOW]
        with_check = con.execute(
            "SELECT expression FROM duckdb_constraints() WHERE table_name = "
            "'prediction_outcomes' AND constraint_type = 'CHECK'"
        ).fetchall()
    assert any("'shadow'" in text for (text,) in with_check)
