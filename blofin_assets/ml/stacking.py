"""The stacked direction model's parts: its members, the meta-features they give, the guard
that keeps every stacking row out of every member's sample, and the estimator that is served.

A member's prediction on a row it trained on (or whose label overlaps bars it learnt from) is
better than it will ever be live: a stacker fit on such rows learns to trust the member that
memorised most. So the stacker is only ever fit through ``fit_stacker``, which refuses any row
``assert_out_of_fold`` does not prove out of sample for every member.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from blofin_assets.market.clock import as_utc
from blofin_assets.ml.specs import SEED
from blofin_assets.ml.target_space import VOLATILITY_FLOOR
from blofin_assets.ml.training import TrainingDataError


class InSampleError(TrainingDataError):
    """A row given to the stacker is one a member trained on, or whose label it has seen."""


@dataclass(frozen=True)
class Member:
    """One trained model version as the stacker uses it: what it predicts from, and which bars
    it saw (its metadata's data_window: train_end, test_start)."""

    name: str
    version: str
    estimator: Any
    scaler: Any
    features: Sequence[str]
    task: str
    target_transform: str
    train_end: pd.Timestamp
    test_start: pd.Timestamp

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "train_end", as_utc(self.train_end))
        object.__setattr__(self, "test_start", as_utc(self.test_start))


def output_names(name: str, task: str, target_transform: str, classes: Sequence[int]) -> list[str]:
    """The meta-features one member gives, named ``member:<name>:<output>``.

    A binary classifier its probability of up; a k-class one every class's probability but the
    middle one (they sum to 1; for momentum the two kept are decelerating and accelerating); a
    regressor its prediction, volatility's in log (its spread spans orders of magnitude)."""
    if task == "classification":
        if list(classes) == [0, 1]:
            return [f"member:{name}:p_up"]
        kept = [c for i, c in enumerate(classes) if i != len(classes) // 2]
        return [f"member:{name}:p_{int(c)}" for c in kept]
    if target_transform == "log":
        return [f"member:{name}:log_prediction"]
    if target_transform == "log_return":
        return [f"member:{name}:log_return"]
    return [f"member:{name}:prediction"]


def member_outputs(
    estimator: Any, task: str, target_transform: str, x_member: np.ndarray
) -> np.ndarray:
    """Columns matching ``output_names``, from rows already through the member's scaler."""
    if task == "classification":
        probabilities = np.asarray(estimator.predict_proba(x_member), dtype="float64")
        classes = list(estimator.classes_)
        if classes == [0, 1]:
            return probabilities[:, 1:2]
        keep = [i for i in range(len(classes)) if i != len(classes) // 2]
        return probabilities[:, keep]
    predicted = np.asarray(estimator.predict(x_member), dtype="float64").reshape(-1, 1)
    if target_transform == "log":
        return np.log(np.maximum(predicted, VOLATILITY_FLOOR))
    return predicted


def out_of_fold_mask(frame: pd.DataFrame, members: Sequence[Member], *, horizon: int) -> np.ndarray:
    """Rows of ``frame`` out of sample for every member: at or after its test_start, and at
    least ``horizon`` of the row's own instrument's rows after the last one at or before its
    train_end (that row's label read the next H bars; the member learnt from them)."""
    ts, inst = frame["ts"], frame["inst_id"]
    if not ts.is_monotonic_increasing:
        raise ValueError("out_of_fold_mask needs the frame in time order (sorted by ts)")
    position = inst.groupby(inst, sort=False).cumcount().to_numpy()
    mask = np.ones(len(frame), dtype=bool)
    for member in members:
        seen = (ts <= member.train_end).groupby(inst, sort=False).transform("sum").to_numpy()
        # Row p is p - (seen - 1) rows after the last row at or before train_end.
        mask &= (ts >= member.test_start).to_numpy() & (position - (seen - 1) >= horizon)
    return mask


def assert_out_of_fold(
    rows: pd.DataFrame, frame: pd.DataFrame, members: Sequence[Member], *, horizon: int
) -> None:
    """Raise InSampleError unless every (inst_id, ts) of ``rows`` is a row of ``frame`` that is
    out of sample for every member; the message names the member, how many rows and the first."""
    keys = pd.MultiIndex.from_frame(frame[["inst_id", "ts"]])
    wanted = pd.MultiIndex.from_frame(rows[["inst_id", "ts"]])
    where = keys.get_indexer(wanted)
    if (where < 0).any():
        raise InSampleError(
            f"{int((where < 0).sum())} stacking rows are not rows of the training frame "
            f"(first: {wanted[np.flatnonzero(where < 0)[0]]}): cannot prove them out of sample"
        )
    problems = []
    for member in members:
        bad = ~out_of_fold_mask(frame, [member], horizon=horizon)[where]
        if bad.any():
            first = wanted[np.flatnonzero(bad)[0]]
            problems.append(
                f"{int(bad.sum())} in-sample for {member.name} {member.version} (train_end "
                f"{member.train_end}, test_start {member.test_start}, horizon {horizon}; "
                f"first {first[0]} {first[1]})"
            )
    if problems:
        raise InSampleError(
            f"refusing to fit the stacker on {len(rows)} rows: " + "; ".join(problems)
        )


def exact_input_scaler(raw: np.ndarray) -> StandardScaler:
    """The ensemble's scaler.pkl: each feature divided by a power of two near its standard
    deviation, not centred. Dividing and multiplying by a power of two are exact in floating
    point, so the stacker hands its members the very raw features the served members get (a
    general x * scale + mean is not, and can move a value across a tree's threshold). The
    outlier reference's distances do not depend on centring."""
    scaler = StandardScaler(with_mean=False).fit(raw)
    scaler.scale_ = np.exp2(np.round(np.log2(scaler.scale_)))
    return scaler


def new_stacker(c: float) -> Pipeline:
    """The second level: a regularised logistic regression on standardised meta-features (few
    inputs, few thousand rows: a flexible learner would fit the members' noise)."""
    return Pipeline(
        [
            ("standardise", StandardScaler()),
            ("logistic", LogisticRegression(C=c, random_state=SEED)),
        ]
    )


def fit_meta(c: float, meta: np.ndarray, y: np.ndarray) -> Pipeline:
    """Fit a stacker on meta-features as given, checking nothing: use ``fit_stacker``."""
    y = np.asarray(y, dtype="int64")
    if len(np.unique(y)) < 2:
        raise TrainingDataError(f"stacking rows hold a single class ({len(y)} rows)")
    return new_stacker(c).fit(meta, y)


def fit_stacker(
    c: float,
    meta: np.ndarray,
    y: np.ndarray,
    rows: pd.DataFrame,
    frame: pd.DataFrame,
    members: Sequence[Member],
    *,
    horizon: int,
) -> Pipeline:
    """The only way the ensemble fits a stacker: ``rows`` (inst_id, ts of each meta row) must
    be out of sample for every member, or InSampleError."""
    assert_out_of_fold(rows, frame, members, horizon=horizon)
    return fit_meta(c, meta, y)


class StackedDirection(ClassifierMixin, BaseEstimator):
    """P(up) of the next H bars from its members' predictions.

    Served like any model: its input is the ensemble's own scaled feature matrix (scaler.pkl
    applied first), from which it recovers the raw features (x * scale + mean) and gives each
    member its own columns through the member's own scaler. ``with_members`` attaches the
    fitted members, ``stacker_`` is the fitted second level."""

    def __init__(
        self,
        C: float = 1.0,
        members: Sequence[str] = (),
        n_folds: int = 3,
        max_rows: int | None = None,
    ) -> None:
        self.C = C
        self.members = members
        self.n_folds = n_folds
        # At most this many eligible rows, evenly spaced per instrument, are stacked: every
        # member predicts each of them, and a kernel member's prediction costs each row all
        # its support vectors (ensemble.eligible_rows).
        self.max_rows = max_rows

    def with_members(
        self, members: Sequence[Member], input_scaler: StandardScaler, features: Sequence[str]
    ) -> StackedDirection:
        """Attach the fitted members and the ensemble's input scaling; returns self."""
        names = [m.name for m in members]
        if names != list(self.members):
            raise ValueError(f"members given {names}, the spec's params name {list(self.members)}")
        columns = list(features)
        missing = {m.name: sorted(set(m.features) - set(columns)) for m in members}
        missing = {name: lacking for name, lacking in missing.items() if lacking}
        if missing:
            raise ValueError(f"member features not among the ensemble's inputs: {missing}")
        self.input_features_ = tuple(columns)
        centred = input_scaler.with_mean
        self.input_mean_ = np.asarray(input_scaler.mean_ if centred else 0.0, dtype="float64")
        self.input_scale_ = np.asarray(input_scaler.scale_, dtype="float64")
        self.n_features_in_ = len(columns)
        self.members_ = tuple(
            (
                m.name,
                m.version,
                m.scaler,
                m.estimator,
                np.asarray([columns.index(f) for f in m.features]),
                m.task,
                m.target_transform,
            )
            for m in members
        )
        self.meta_features_ = tuple(
            name
            for m in members
            for name in output_names(
                m.name, m.task, m.target_transform, getattr(m.estimator, "classes_", ())
            )
        )
        self.classes_ = np.array([0, 1])
        return self

    def meta_features(self, X: np.ndarray) -> np.ndarray:
        """The members' outputs (columns ``meta_features_``) for rows of scaled inputs."""
        x = np.asarray(X, dtype="float64")
        if x.ndim != 2 or x.shape[1] != self.n_features_in_:
            raise ValueError(f"expected rows of {self.n_features_in_} features, got {x.shape}")
        raw = x * self.input_scale_ + self.input_mean_
        columns = [
            member_outputs(estimator, task, transform, scaler.transform(raw[:, positions]))
            for _, _, scaler, estimator, positions, task, transform in self.members_
        ]
        return np.hstack(columns)

    def fit(self, X: np.ndarray, y: np.ndarray) -> StackedDirection:
        """Fit the stacker on the members' outputs for ``X``: only for rows no member saw (the
        ensemble's training proves that through fit_stacker; this checks nothing)."""
        self.stacker_ = fit_meta(self.C, self.meta_features(X), y)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.stacker_.predict_proba(self.meta_features(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Up when P(up) > 0.5 (a tie is down, as ServedModel.labels reads it)."""
        return (self.predict_proba(X)[:, 1] > 0.5).astype("int64")
