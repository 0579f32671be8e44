"""Feature importances are measured where skill is: on the test rows, in the model's primary
metric. Markets with a planted feature whose truth is known show that every one of the five
estimators ranks it first, that a noise column scores about zero, that a feature useful only
on the training rows is worth nothing on the test rows, and that the answer is reproducible."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.inspection import permutation_importance

from blofin_assets.ml.importance import (
    KERNEL_EVALUATIONS,
    MIN_ROWS,
    FeatureImportance,
    evenly_spaced_index,
    feature_importance,
    importance_chart_png,
    importance_markdown,
    support_vector_count,
)
from blofin_assets.ml.publish import model_metadata
from blofin_assets.ml.specs import MODEL_SPECS, SPECS_BY_NAME, ModelSpec
from blofin_assets.ml.target_space import model_target
from blofin_assets.ml.training import (
    DEFAULT_TEST_FRACTION,
    TrainedModel,
    split_blocks,
    train_model,
)
from blofin_assets_tests.markets import iid_market, labelled_rows

BARS = 3 * 1440  # two labelled days per instrument after the features' one-day warm-up
PLANTED = "rsi_14"  # overwritten with a noisy copy of the target: the one feature that matters
NOISE = "mfi_14"  # overwritten with pure noise: worth nothing to any model


@pytest.fixture(scope="module")
def noise_rows() -> pd.DataFrame:
    return labelled_rows(iid_market(BARS), horizon=5)


def planted(spec: ModelSpec, rows: pd.DataFrame, *, signal_until: float = 1.0) -> pd.DataFrame:
    """The noise market with PLANTED = the target (standardised, in the space the estimator
    fits) plus a little noise, on the first ``signal_until`` share of the rows by time and
    pure noise of the same spread after; NOISE independent of everything."""
    frame = rows.copy()
    rng = np.random.default_rng(3)
    target = model_target(spec, frame)
    if spec.target_transform == "log":
        target = np.log(target)
    signal = (target - target.mean()) / target.std() + 0.3 * rng.normal(size=len(frame))
    cut = frame["ts"].quantile(signal_until) if signal_until < 1.0 else None
    if cut is not None:
        late = (frame["ts"] > cut).to_numpy()
        signal[late] = rng.normal(0.0, signal.std(), late.sum())
    frame[PLANTED] = signal
    frame[NOISE] = rng.normal(size=len(frame))
    return frame


@pytest.fixture(scope="module")
def on_planted(noise_rows: pd.DataFrame) -> dict[str, TrainedModel]:
    return {
        spec.name: train_model(spec, planted(spec, noise_rows), horizon=5) for spec in MODEL_SPECS
    }


@pytest.mark.parametrize("name", [spec.name for spec in MODEL_SPECS])
def test_every_estimator_ranks_the_planted_feature_first(
    on_planted: dict[str, TrainedModel], name: str
) -> None:
    importance = on_planted[name].feature_importances
    ranked = list(importance)
    assert ranked[0] == PLANTED, importance.scores
    assert list(importance.scores.values()) == sorted(importance.scores.values(), reverse=True)
    assert set(ranked) == set(SPECS_BY_NAME[name].features)
    runner_up = importance[ranked[1]]
    assert importance[PLANTED] > 3 * max(runner_up, 0.0), importance.scores
    assert importance[PLANTED] > 5 * importance.stderr[PLANTED]


@pytest.mark.parametrize("name", [spec.name for spec in MODEL_SPECS])
def test_a_noise_column_is_worth_about_nothing(
    on_planted: dict[str, TrainedModel], name: str
) -> None:
    importance = on_planted[name].feature_importances
    noise = importance[NOISE]
    assert abs(noise) <= 3 * importance.stderr[NOISE] + 1e-12, (noise, importance.stderr[NOISE])
    assert abs(noise) < 0.05 * importance[PLANTED]


@pytest.mark.parametrize("name", [spec.name for spec in MODEL_SPECS])
def test_the_method_says_permutation_on_how_many_test_rows_scored_by_what(
    on_planted: dict[str, TrainedModel], name: str
) -> None:
    trained = on_planted[name]
    method = trained.feature_importances.method
    rows = int(method.split("permutation on ", 1)[1].split(" test rows")[0])
    assert MIN_ROWS <= rows <= trained.test_rows
    assert f"scored by {trained.spec.primary_metric}" in method
    assert ("drop" if trained.spec.task == "classification" else "rise") in method
    if name == "volatility_regressor":  # kernel SVR: each row costs every support vector
        copies = len(trained.spec.features) + 1  # the rows as they are, one shuffle a feature
        support = support_vector_count(trained.estimator)
        assert rows == MIN_ROWS or rows * copies * support <= KERNEL_EVALUATIONS, method
        risk = on_planted["risk_scorer"].feature_importances.method
        assert rows < int(risk.split("permutation on ", 1)[1].split(" test rows")[0]), method


@pytest.mark.parametrize("name", ["direction_predictor", "risk_scorer"])
def test_only_test_rows_are_read(noise_rows: pd.DataFrame, name: str) -> None:
    """PLANTED carries the target on the first 60 % of the rows only (all inside the training
    block): the model learns it, yet on the test rows it is noise and worth nothing there.
    Measured on the training rows instead, it would come out first by far."""
    spec = SPECS_BY_NAME[name]
    frame = planted(spec, noise_rows, signal_until=0.6)
    trained = train_model(spec, frame, horizon=5)
    blocks = split_blocks(spec, frame, horizon=5, test_fraction=DEFAULT_TEST_FRACTION)
    on_train = feature_importance(
        trained.estimator,
        spec.features,
        blocks.x_train,
        blocks.y_train,
        metric=spec.primary_metric,
    )
    assert next(iter(on_train)) == PLANTED  # it was learned
    on_test = trained.feature_importances
    assert abs(on_test[PLANTED]) <= 3 * on_test.stderr[PLANTED], on_test.scores
    assert abs(on_test[PLANTED]) < 0.25 * on_train[PLANTED]


def test_same_inputs_same_importances(noise_rows: pd.DataFrame) -> None:
    spec = SPECS_BY_NAME["price_predictor"]
    frame = planted(spec, noise_rows)
    first = train_model(spec, frame, horizon=5).feature_importances
    again = train_model(spec, frame, horizon=5).feature_importances
    assert first == again
    assert list(first) == list(again)  # the order too


def test_it_measures_what_sklearns_permutation_importance_measures(
    on_planted: dict[str, TrainedModel], noise_rows: pd.DataFrame
) -> None:
    """One batched predict instead of one per feature, the same quantity: on the same rows, the
    planted feature's rise in MAE agrees with sklearn's (its scorer: negative MAE)."""
    trained = on_planted["price_predictor"]
    blocks = split_blocks(
        trained.spec,
        planted(trained.spec, noise_rows),
        horizon=5,
        test_fraction=DEFAULT_TEST_FRACTION,
    )
    ours = feature_importance(
        trained.estimator, trained.spec.features, blocks.x_test, blocks.y_test, metric="mae"
    )
    index = evenly_spaced_index(len(blocks.x_test), len(blocks.x_test))  # all of them
    assert ours.method.startswith(f"permutation on {len(index)} test rows")
    theirs = permutation_importance(
        trained.estimator,
        blocks.x_test[index],
        blocks.y_test[index],
        scoring="neg_mean_absolute_error",
        n_repeats=5,
        random_state=0,
    )
    column = trained.spec.features.index(PLANTED)
    reference = theirs.importances_mean[column]
    assert ours == trained.feature_importances
    assert abs(ours[PLANTED] - reference) <= 3 * ours.stderr[PLANTED]
    assert abs(ours[PLANTED] - reference) < 0.1 * reference


def test_an_unknown_metric_is_refused(on_planted: dict[str, TrainedModel]) -> None:
    trained = on_planted["risk_scorer"]
    x = np.zeros((10, len(trained.spec.features)))
    with pytest.raises(ValueError, match="rmse"):
        feature_importance(trained.estimator, trained.spec.features, x, np.zeros(10), metric="rmse")


EXAMPLE = FeatureImportance(
    method="permutation on 100 test rows, 1 repeat, scored by mae (rise when a feature is "
    "shuffled)",
    scores={"a": 0.5, "b": 0.25, "c": -0.01},
    stderr={"a": 0.05, "b": 0.02, "c": 0.01},
)


def test_the_markdown_states_the_method_above_a_ranked_table() -> None:
    lines = importance_markdown(EXAMPLE, top=2).splitlines()
    assert lines[0] == f"Method: {EXAMPLE.method}."
    assert lines[2] == "| rank | feature | importance | ± s.e. |"
    assert lines[4:] == ["| 1 | a | 0.5 | 0.05 |", "| 2 | b | 0.25 | 0.02 |"]  # top 2 only


def test_the_chart_is_a_png_of_one_bar_per_feature(on_planted: dict[str, TrainedModel]) -> None:
    importance = on_planted["volatility_regressor"].feature_importances
    png = importance_chart_png(importance, "volatility_regressor", top=15)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    image.verify()
    few = importance_chart_png(
        replace(importance, scores=dict(list(importance.scores.items())[:3])), "x"
    )
    assert Image.open(io.BytesIO(few)).size[1] < Image.open(io.BytesIO(png)).size[1]


def test_metadata_json_names_the_method_beside_the_scores(
    on_planted: dict[str, TrainedModel],
) -> None:
    trained = on_planted["volatility_regressor"]
    now = pd.Timestamp("2026-01-04", tz="UTC")
    metadata = model_metadata(
        trained,
        status="promoted",
        status_reason="",
        gates=(),
        trained_at=now,
        run_id="r",
        horizon=5,
        data_sources=("demo",),
        data_until=now,
    )
    loaded = json.loads(json.dumps(metadata))
    assert list(loaded["feature_importances"]) == list(trained.feature_importances)
    assert loaded["feature_importances"][PLANTED] == trained.feature_importances[PLANTED]
    assert loaded["feature_importance_method"] == trained.feature_importances.method
    assert set(loaded["feature_importance_stderr"]) == set(trained.spec.features)
