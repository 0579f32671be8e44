"""What keeps a model step close to its estimator's own fit + predict, and what it must not
cost: the sampled training metrics say they are a sample and are the metrics of those rows;
even row sampling keeps every instrument in proportion however the stride falls; the row cap
picks the same rows in training and in tuning; the confusion-matrix classification metrics
are the four separate scikit-learn calls'; and every piece of a training is timed."""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score
from threadpoolctl import threadpool_info

from blofin_assets.ml.importance import KERNEL_EVALUATIONS, support_vector_count
from blofin_assets.ml.metrics import classification_metrics, regression_metrics
from blofin_assets.ml.publish import model_metadata
from blofin_assets.ml.row_plan import cap_rows, even_positions
from blofin_assets.ml.specs import SPECS_BY_NAME
from blofin_assets.ml.splits import purged_split
from blofin_assets.ml.training import (
    DEFAULT_TEST_FRACTION,
    TRAIN_METRIC_ROWS,
    fit_threads,
    split_blocks,
    train_model,
    wrap_estimator,
)
from blofin_assets_tests.markets import iid_market, labelled_rows

HORIZON = 5
# A small direction model: these tests are about what surrounds the fit, not its skill.
QUICK_DIRECTION = replace(
    SPECS_BY_NAME["direction_predictor"],
    params={**SPECS_BY_NAME["direction_predictor"].params, "n_estimators": 5},
)


@pytest.fixture(scope="module")
def many_rows() -> pd.DataFrame:
    """Three instruments x 25,000 bars: more training rows than TRAIN_METRIC_ROWS; in
    (ts, inst_id) order, as the training read returns them."""
    rows = labelled_rows(iid_market(25_000), horizon=HORIZON)
    return rows.sort_values(["ts", "inst_id"], kind="stable").reset_index(drop=True)


def sklearn_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Four separate scikit-learn calls with the same averaging rule."""
    average = "binary" if len(np.unique(np.concatenate([y_true, y_pred]))) <= 2 else "macro"
    if average == "binary" and not set(np.unique(y_true)) <= {0, 1}:
        average = "macro"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "accuracy": accuracy_score(y_true, y_pred),
            "f1": f1_score(y_true, y_pred, average=average, zero_division=0),
            "precision": precision_score(y_true, y_pred, average=average, zero_division=0),
            "recall": recall_score(y_true, y_pred, average=average, zero_division=0),
        }


def test_classification_metrics_are_scikit_learns() -> None:
    rng = np.random.default_rng(0)
    cases = [
        (np.array([0, 0, 0]), np.array([0, 0, 0])),  # no positive class anywhere
        (np.array([1, 1]), np.array([0, 0])),  # positives never predicted
        (np.array([2, 2, 2]), np.array([2, 2, 2])),  # one class, not 0/1: macro
        (np.array([0, 1, 2, 1]), np.array([1, 1, 1, 1])),
    ]
    for _ in range(150):
        n, classes = int(rng.integers(1, 40)), int(rng.integers(1, 4))
        cases.append((rng.integers(0, classes, n), rng.integers(0, classes + 1, n)))
    for y_true, y_pred in cases:
        expected = sklearn_metrics(y_true, y_pred)
        got = classification_metrics(y_true, y_pred)
        assert got == pytest.approx(expected, abs=1e-12), (y_true, y_pred)


def test_even_positions_keep_every_instrument_however_the_stride_falls() -> None:
    """100 instruments at each of 500 timestamps, rows in (ts, inst_id) order, a tenth kept.
    One stride of ~10 over the pooled rows keeps each instrument in one stretch of time only
    (the aliasing guarded against); per instrument, all 100 keep 50 rows each, spread from
    their first timestamp to their last."""
    instruments = np.tile([f"I{i:03d}" for i in range(100)], 500)
    one = instruments == "I042"
    times = np.flatnonzero(one)  # this instrument's rows, in time order

    def its_timestamps(positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(times, positions[one[positions]])

    pooled = np.unique(np.linspace(0, len(instruments) - 1, 5_000).round().astype(int))
    assert np.ptp(its_timestamps(pooled)) < 100  # a fifth of the window
    kept = even_positions(instruments, 5_000)
    assert len(kept) == 5_000 and np.all(np.diff(kept) > 0)
    counts = pd.Series(instruments[kept]).value_counts()
    assert len(counts) == 100 and set(counts) == {50}
    chosen = its_timestamps(kept)
    assert chosen[0] == 0 and chosen[-1] == 499
    assert np.ptp(np.diff(chosen)) <= 1  # evenly spaced in the instrument's own time


def test_even_positions_share_rows_by_instrument_size_and_hit_the_count() -> None:
    instruments = np.array(["A"] * 700 + ["B"] * 200 + ["C"] * 100)
    kept = even_positions(instruments, 101)
    counts = pd.Series(instruments[kept]).value_counts().to_dict()
    assert len(kept) == 101 and counts == {"A": 71, "B": 20, "C": 10}
    assert np.array_equal(even_positions(instruments, 5_000), np.arange(1_000))


def test_the_row_cap_picks_the_same_rows_in_training_and_in_tuning(
    many_rows: pd.DataFrame,
) -> None:
    for sampling in ("even", "recent"):
        spec = replace(QUICK_DIRECTION, max_train_rows=7_000, row_sampling=sampling)
        blocks = split_blocks(spec, many_rows, horizon=HORIZON, test_fraction=DEFAULT_TEST_FRACTION)
        split = purged_split(
            many_rows["ts"], many_rows["inst_id"], test_fraction=DEFAULT_TEST_FRACTION,
            horizon=HORIZON,
        )  # fmt: skip
        capped = cap_rows(many_rows.iloc[split.train_index], spec)
        assert len(blocks.train) == 7_000
        pd.testing.assert_frame_equal(blocks.train, capped)
    assert blocks.train["ts"].min() > many_rows["ts"].min()  # recent: the newest rows


def test_train_metrics_on_an_even_sample_say_so_and_are_those_rows_metrics(
    many_rows: pd.DataFrame,
) -> None:
    trained = train_model(QUICK_DIRECTION, many_rows, horizon=HORIZON)
    assert trained.train_rows > TRAIN_METRIC_ROWS
    assert trained.train_metric_rows == TRAIN_METRIC_ROWS
    assert trained.train_metrics_method == (
        f"{TRAIN_METRIC_ROWS} of the {trained.train_rows} training rows, evenly spaced per "
        "instrument"
    )
    blocks = split_blocks(
        QUICK_DIRECTION, many_rows, horizon=HORIZON, test_fraction=DEFAULT_TEST_FRACTION
    )
    sample = even_positions(blocks.train["inst_id"].to_numpy(), TRAIN_METRIC_ROWS)
    predicted = trained.estimator.predict(blocks.x_train[sample])
    assert trained.train_metrics == classification_metrics(blocks.y_train[sample], predicted)
    every_row = classification_metrics(blocks.y_train, trained.estimator.predict(blocks.x_train))
    assert trained.train_metrics["accuracy"] == pytest.approx(every_row["accuracy"], abs=0.01)
    now = pd.Timestamp("2026-01-04", tz="UTC")
    metadata = model_metadata(
        trained,
        status="promoted",
        status_reason="",
        gates=(),
        trained_at=now,
        run_id="r",
        horizon=HORIZON,
        data_sources=["demo"],
        data_until=now,
    )
    assert metadata["train_metrics_method"] == trained.train_metrics_method  # beside them


def test_every_piece_is_timed_and_a_small_block_is_scored_whole() -> None:
    rows = labelled_rows(iid_market(3 * 1440), horizon=HORIZON)
    trained = train_model(QUICK_DIRECTION, rows, horizon=HORIZON)
    assert trained.train_metric_rows == trained.train_rows
    assert trained.train_metrics_method == f"all {trained.train_rows} training rows"
    pieces = ("split", "fit", "predict_test", "test_metrics", "train_metrics", "importance")
    assert set(trained.timings) == {*pieces, "reference"}
    assert all(seconds >= 0 for seconds in trained.timings.values())
    assert trained.train_seconds == trained.timings["fit"]
    assert trained.predict_seconds == trained.timings["predict_test"]


def test_a_kernel_machine_scores_its_training_rows_within_the_kernel_budget() -> None:
    """The SVR pays every support vector on every row it predicts: its training metrics take
    the importance's budget of kernel evaluations, not TRAIN_METRIC_ROWS."""
    spec = SPECS_BY_NAME["volatility_regressor"]
    rows = labelled_rows(iid_market(3 * 1440), horizon=HORIZON)
    trained = train_model(spec, rows, horizon=HORIZON)
    support = support_vector_count(trained.estimator)
    assert support is not None and support > 0
    expected = min(trained.train_rows, KERNEL_EVALUATIONS // support)
    assert trained.train_metric_rows == expected < trained.train_rows
    blocks = split_blocks(spec, rows, horizon=HORIZON, test_fraction=DEFAULT_TEST_FRACTION)
    sample = even_positions(blocks.train["inst_id"].to_numpy(), expected)
    predicted = trained.estimator.predict(blocks.x_train[sample])
    assert trained.train_metrics == regression_metrics(blocks.y_train[sample], predicted)


def test_the_booster_and_the_mlp_fit_on_one_thread_of_the_pool_they_gain_nothing_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under OMP_WAIT_POLICY=PASSIVE the risk scorer's booster fits on one OpenMP thread (its
    second thread costs more to wake than it brings), under any other policy on all; the MLP
    on one BLAS thread; the other estimators on every thread there is."""
    risk = wrap_estimator(SPECS_BY_NAME["risk_scorer"])
    forest = wrap_estimator(SPECS_BY_NAME["momentum_classifier"])
    mlp = wrap_estimator(SPECS_BY_NAME["price_predictor"])  # inside its target transform

    def threads(estimator: object | None = None) -> dict[str, set[int]]:
        with fit_threads(estimator) if estimator is not None else nullcontext():
            pools: dict[str, set[int]] = {}
            for pool in threadpool_info():
                pools.setdefault(pool["user_api"], set()).add(pool["num_threads"])
            return pools

    unlimited = threads()
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert threads(risk) == {**unlimited, "openmp": {1}}
    assert threads(forest) == unlimited
    assert threads(mlp) == {**unlimited, "blas": {1}}
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert threads(risk) == unlimited
