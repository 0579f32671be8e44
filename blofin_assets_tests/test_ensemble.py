"""The stacked direction model (ml/ensemble.py, ml/stacking.py): fit only on rows no member
saw, judged by walk-forward against its members and the naive rules, served like the others.

Members are real versions trained by train_model (cheap parameters: what is tested is the
stacking, not the members). A "memorizer" member, fully grown trees, scores ~1.0 on its own
training rows and a coin's 0.5 after them: a stacker fit on its in-sample predictions would
lean on it with a large weight; one fit out of sample does not.
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as skops_io
from sklearn.ensemble import RandomForestClassifier

from blofin_assets.ml.ensemble import (
    ENSEMBLE_SPEC,
    EnsembleFit,
    InSampleError,
    Member,
    assert_out_of_fold,
    members_gate,
    stack_ensemble,
    train_ensemble,
)
from blofin_assets.ml.gates import leakage_gate
from blofin_assets.ml.portable import SKOPS_MODEL, trusted_types
from blofin_assets.ml.publish import publish_trained
from blofin_assets.ml.specs import MODEL_SPECS, SEED, SPECS_BY_NAME, ModelSpec
from blofin_assets.ml.stacking import fit_meta, fit_stacker, out_of_fold_mask
from blofin_assets.ml.store import ModelStore
from blofin_assets.ml.training import TrainedModel, train_model
from blofin_assets.serving.loading import load_version
from blofin_assets_tests.markets import iid_market, labelled_rows, volume_signal_market

H = 5
BARS = 4 * 1440  # 3 days of labelled rows after the features' one-day warm-up
# Members test on the later half: those bars are the ones the stacker may learn from.
MEMBER_TEST_FRACTION = 0.5
CHEAP = {
    "direction_predictor": {"n_estimators": 60, "n_jobs": 1},
    "momentum_classifier": {"n_estimators": 20, "n_jobs": 1},
    "risk_scorer": {"max_iter": 20},
    "volatility_regressor": {},
    "price_predictor": {"max_iter": 20},
}
# Unpruned trees on every row (no bootstrap): each training row is its own leaf.
MEMORIZER = replace(
    SPECS_BY_NAME["direction_predictor"],
    name="memorizer",
    estimator_class=RandomForestClassifier,
    params={
        "n_estimators": 10,
        "bootstrap": False,
        "max_features": 0.5,
        "n_jobs": 1,
        "random_state": SEED,
    },
)


def cheap(spec: ModelSpec) -> ModelSpec:
    cheaper = spec.with_params({**spec.params, **CHEAP[spec.name]})
    if spec.name == "volatility_regressor":
        cheaper = replace(cheaper, max_train_rows=1_000, max_test_rows=2_000)
    return cheaper


def member_of(trained: TrainedModel) -> Member:
    """A trained version as the ensemble asset builds it from a served version's files."""
    spec = trained.spec
    return Member(
        name=spec.name,
        version=f"{spec.name}-v1",
        estimator=trained.estimator,
        scaler=trained.scaler,
        features=list(spec.features),
        task=spec.task,
        target_transform=spec.target_transform,
        train_end=trained.split.train_end.isoformat(),  # as metadata.json has it
        test_start=trained.split.test_start.isoformat(),
    )


def train_members(rows: pd.DataFrame, specs: list[ModelSpec]) -> tuple[list[Member], dict]:
    trained = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cheap MLP stops before converging, by design
        for spec in specs:
            trained[spec.name] = train_model(
                spec, rows, horizon=H, test_fraction=MEMBER_TEST_FRACTION
            )
    return [member_of(model) for model in trained.values()], trained


def spec_for(members: list[Member]) -> ModelSpec:
    return ENSEMBLE_SPEC.with_params(
        {**ENSEMBLE_SPEC.params, "members": tuple(m.name for m in members)}
    )


@pytest.fixture(scope="module")
def on_noise() -> tuple[EnsembleFit, list[Member], dict]:
    rows = labelled_rows(iid_market(BARS), horizon=H)
    members, trained = train_members(rows, [*(cheap(s) for s in MODEL_SPECS), MEMORIZER])
    return stack_ensemble(spec_for(members), rows, members, horizon=H), members, trained


@pytest.fixture(scope="module")
def on_signal() -> tuple[EnsembleFit, list[Member], pd.DataFrame]:
    rows = labelled_rows(volume_signal_market(BARS), horizon=H)
    members, _ = train_members(rows, [cheap(s) for s in MODEL_SPECS])
    return stack_ensemble(spec_for(members), rows, members, horizon=H), members, rows


def nanoseconds(ts: pd.Series) -> np.ndarray:
    return pd.DatetimeIndex(ts).as_unit("ns").asi8


def rows_after_training(frame: pd.DataFrame, rows: pd.DataFrame, member: Member) -> np.ndarray:
    """Per row: how many of its instrument's rows lie after the member's last training row
    (counted independently of ml/stacking.py: one instrument at a time, by search)."""
    after = np.empty(len(rows), dtype=np.int64)
    for inst, positions in rows.groupby("inst_id").indices.items():
        own = np.sort(nanoseconds(frame.loc[frame["inst_id"] == inst, "ts"]))
        last_seen = np.searchsorted(own, member.train_end.as_unit("ns").value, side="right") - 1
        position = np.searchsorted(own, nanoseconds(rows["ts"])[positions])
        after[positions] = position - last_seen
    return after


def test_every_stacker_fit_reads_only_rows_no_member_saw(on_noise) -> None:
    fit, members, _ = on_noise
    assert len(fit.fitted_rows) == len(fit.folds) + 1  # each fold's stacker, then the served
    for rows in fit.fitted_rows:
        assert_out_of_fold(rows, fit.frame, members, horizon=H)
        for member in members:
            assert (rows["ts"] >= member.test_start).all(), member.name
            assert rows_after_training(fit.frame, rows, member).min() >= H, member.name
    first = fit.stacking["ts"].min()
    assert first >= max(m.test_start for m in members)
    assert fit.trained.data_window[0] == first  # what metadata.json's data_window.start says
    assert len(fit.fitted_rows[-1]) == len(fit.stacking)


def test_in_sample_rows_are_refused_and_the_member_named(on_noise) -> None:
    fit, members, _ = on_noise
    memorizer = members[-1]
    seen = fit.frame[fit.frame["ts"] <= memorizer.train_end].tail(300)
    with pytest.raises(InSampleError, match="300 in-sample for memorizer"):
        assert_out_of_fold(seen[["inst_id", "ts"]], fit.frame, members, horizon=H)
    meta = np.zeros((len(seen), len(fit.trained.estimator.meta_features_)))
    y = seen["target_direction"].to_numpy().astype("int64")
    with pytest.raises(InSampleError):
        fit_stacker(1.0, meta, y, seen[["inst_id", "ts"]], fit.frame, members, horizon=H)
    with pytest.raises(InSampleError, match="not rows of the training frame"):
        outside = seen[["inst_id", "ts"]].assign(ts=seen["ts"] + pd.Timedelta(days=30))
        assert_out_of_fold(outside, fit.frame, members, horizon=H)


def test_the_rows_whose_label_a_member_read_are_purged_per_instrument(on_noise) -> None:
    """A member whose test block began right after its last training row: its first H rows
    there are labelled by bars it learnt from, so each instrument's first eligible row is the
    H-th after its last one at or before train_end."""
    fit, members, _ = on_noise
    member = replace(members[0], test_start=members[0].train_end + pd.Timedelta(minutes=1))
    eligible = fit.frame[out_of_fold_mask(fit.frame, [member], horizon=H)]
    after = rows_after_training(fit.frame, eligible, member)
    assert after.min() == H
    assert set(eligible.loc[after == H, "inst_id"]) == set(fit.frame["inst_id"])
    with pytest.raises(InSampleError):
        early = fit.frame[fit.frame["ts"] > member.train_end].head(3)  # 1 row after, each
        assert_out_of_fold(early[["inst_id", "ts"]], fit.frame, [member], horizon=H)


def test_on_noise_the_memorizer_fools_nothing_and_the_ensemble_is_not_served(on_noise) -> None:
    fit, _, trained = on_noise
    memorizer = trained["memorizer"]
    assert memorizer.train_metrics["accuracy"] > 0.99  # it memorised its training rows
    evaluation = fit.trained.evaluation
    assert abs(evaluation.baselines["member_memorizer"]["accuracy"] - 0.5) < 0.04
    assert abs(evaluation.primary_value - 0.5) < 0.04, evaluation.metrics
    assert fit.trained.train_metrics["accuracy"] < 0.6  # its fitting rows were out of sample
    verdict = members_gate(fit.trained)
    assert not verdict.passed and verdict.blocks_serving
    assert verdict.description.startswith(f"not better than {evaluation.baseline_name} (")
    assert leakage_gate(fit.trained).passed


def test_a_stacker_fit_on_in_sample_predictions_would_show_it(on_noise) -> None:
    """What the guard prevents, done on purpose with the unchecked fit: on the memorizer's
    training rows it is perfect, so the stacker trusts it almost alone and scores ~1.0 there;
    the ensemble's own stacker gives it a weight near zero."""
    fit, members, _ = on_noise
    estimator = fit.trained.estimator
    seen = fit.frame[fit.frame["ts"] <= members[-1].train_end]
    x = fit.trained.scaler.transform(seen[list(ENSEMBLE_SPEC.features)].to_numpy("float64"))
    meta, y = estimator.meta_features(x), seen["target_direction"].to_numpy().astype("int64")
    leaky = fit_meta(estimator.C, meta, y)
    column = estimator.meta_features_.index("member:memorizer:p_up")
    leaky_weights = np.abs(leaky[-1].coef_[0])
    honest_weight = abs(estimator.stacker_[-1].coef_[0][column])
    assert (leaky.predict(meta) == y).mean() > 0.95
    assert leaky_weights.argmax() == column
    assert leaky_weights[column] > 20 * honest_weight
    with pytest.raises(InSampleError):
        fit_stacker(estimator.C, meta, y, seen, fit.frame, members, horizon=H)


def test_on_a_planted_signal_it_keeps_what_the_members_found(on_signal) -> None:
    """The direction and price members find the volume signal; the stack of all five beats
    every naive rule beyond noise and is within noise (3 HAC standard errors) of the direction
    member's own call, on exactly the walk-forward blocks."""
    fit, _, _ = on_signal
    evaluation = fit.trained.evaluation
    blocks = [fold.test_index for fold in fit.folds]
    assert np.array_equal(fit.evaluated, np.concatenate(blocks))
    starts = [fold.test_start for fold in fit.folds]
    assert np.array_equal(fit.evaluated, np.flatnonzero(fit.stacking["ts"] >= starts[0]))
    assert fit.trained.test_rows == len(fit.evaluated) == evaluation.comparison.rows
    for fold in fit.folds:  # each block predicted by a stacker fit only on earlier rows
        assert fit.stacking["ts"].iloc[fold.train_index].max() < fold.test_start
    naive = {k: v for k, v in evaluation.baselines.items() if not k.startswith("member_")}
    assert set(naive) == set(SPECS_BY_NAME["direction_predictor"].baselines)
    best_rule = max(v["accuracy"] for v in naive.values() if "accuracy" in v)
    assert evaluation.primary_value > best_rule + 0.03
    member = evaluation.baselines["member_direction_predictor"]["accuracy"]
    y = fit.stacking["target_direction"].to_numpy()[fit.evaluated]
    member_losses = (fit.meta[fit.evaluated, 0] > 0.5) != y
    ensemble_losses = (fit.p_up > 0.5) != y
    difference = member_losses.astype(float) - ensemble_losses.astype(float)
    comparison = evaluation.comparison
    standard_error = abs(comparison.mean_loss_difference / comparison.statistic)
    assert -difference.mean() == pytest.approx(member - evaluation.primary_value)
    assert evaluation.primary_value >= member - 3 * standard_error
    verdict = members_gate(fit.trained)
    assert verdict.passed == evaluation.beats_baseline_beyond_noise


def direct_probabilities(members: list[Member], stacker, features: pd.DataFrame) -> np.ndarray:
    """The stack computed by hand from the raw features: each member on its own columns."""
    columns = []
    for member in members:
        x = member.scaler.transform(features[list(member.features)].to_numpy("float64"))
        if member.task == "classification":
            p = member.estimator.predict_proba(x)
            columns.extend([p[:, 1]] if p.shape[1] == 2 else [p[:, 0], p[:, 2]])
        elif member.target_transform == "log":
            columns.append(np.log(member.estimator.predict(x)))
        else:
            columns.append(member.estimator.predict(x))
    return stacker.predict_proba(np.column_stack(columns))[:, 1]


def test_published_and_served_like_the_others(on_signal, tmp_path: Path) -> None:
    fit, members, rows = on_signal
    published = publish_trained(
        fit.trained,
        store=ModelStore(tmp_path),
        horizon=H,
        promoted_skills=[],
        run_id="test-run",
        data_until=rows["ts"].max(),
        extra_gates=(members_gate(fit.trained),),
    )
    assert published.metadata["data_window"]["start"] == fit.stacking["ts"].min().isoformat()
    assert "beats_members" in published.metadata["checks"]
    # Its pickle-free copy needs exactly the types ml/portable.py trusts for it.
    needed = skops_io.get_untrusted_types(file=published.version_dir / SKOPS_MODEL)
    assert sorted(needed) == sorted(trusted_types("StackedDirection"))
    sample = rows.sample(500, random_state=SEED)
    expected = direct_probabilities(members, fit.trained.estimator.stacker_, sample)
    unpickled = pickle.loads(pickle.dumps(fit.trained.estimator))
    x = fit.trained.scaler.transform(sample[list(ENSEMBLE_SPEC.features)].to_numpy("float64"))
    assert np.allclose(unpickled.predict_proba(x)[:, 1], expected, rtol=0, atol=1e-12)
    for format in ("pickle", "pickle-free"):
        served = load_version(
            ENSEMBLE_SPEC.name,
            published.version,
            tmp_path,
            verify_with="metadata",
            format=format,
        )
        scored = served.predict(sample)
        assert np.allclose(scored["prediction"], expected, rtol=0, atol=1e-12), format
        assert np.allclose(scored["p_0"] + scored["p_1"], 1.0)
        assert set(served.labels(scored)) <= {"down", "up"}


def test_seeded_two_trainings_give_the_same_probabilities(on_signal) -> None:
    fit, members, rows = on_signal
    again = train_ensemble(spec_for(members), rows, members, horizon=H)
    sample = rows.iloc[::10][list(ENSEMBLE_SPEC.features)].to_numpy("float64")
    first = fit.trained.estimator.predict_proba(fit.trained.scaler.transform(sample))
    assert np.array_equal(again.estimator.predict_proba(again.scaler.transform(sample)), first)
    assert again.evaluation.metrics == fit.trained.evaluation.metrics


def test_max_rows_stacks_an_even_sample_still_out_of_fold(on_signal) -> None:
    """At 100 instruments every member would predict every eligible row (a kernel member
    costs each row all its support vectors): ``max_rows`` keeps an even sample per instrument,
    in time order, and the guard still holds on every fit."""
    fit, members, rows = on_signal
    eligible = len(fit.stacking)
    cap = eligible // 3
    spec = spec_for(members)
    capped = stack_ensemble(
        spec.with_params({**spec.params, "max_rows": cap}), rows, members, horizon=H
    )
    assert len(capped.stacking) == cap
    assert capped.stacking["ts"].is_monotonic_increasing
    kept = capped.stacking["inst_id"].value_counts()
    share = fit.stacking["inst_id"].value_counts() / eligible
    assert (abs(kept / cap - share.loc[kept.index]) < 0.01).all()
    assert capped.trained.test_rows < fit.trained.test_rows
    for fitted in capped.fitted_rows:
        assert_out_of_fold(fitted, capped.frame, members, horizon=H)
    assert ENSEMBLE_SPEC.params["max_rows"] > eligible  # the default binds only on big markets


def test_rows_from_the_earliest_members_train_end_on_give_the_same_ensemble(on_signal) -> None:
    """The asset reads only rows from the earliest member's train_end on: all the stacker and
    its guard need, so the ensemble is the one the whole frame gives."""
    fit, members, rows = on_signal
    since = min(pd.Timestamp(m.train_end) for m in members)
    later = rows[rows["ts"] >= since]
    assert len(later) < len(rows)
    again = stack_ensemble(spec_for(members), later, members, horizon=H)
    pd.testing.assert_frame_equal(again.stacking, fit.stacking)
    assert again.trained.evaluation.metrics == fit.trained.evaluation.metrics
    assert again.trained.evaluation.baselines == fit.trained.evaluation.baselines


def test_members_must_be_the_ones_the_spec_names(on_signal) -> None:
    _, members, rows = on_signal
    with pytest.raises(ValueError, match="params name"):
        train_ensemble(ENSEMBLE_SPEC, rows, members[::-1], horizon=H)
