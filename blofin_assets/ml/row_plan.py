"""Which rows a model trains and is tested on, chosen from the (ts, inst_id) keys alone.

The purged split and the spec's row caps need only each row's time and instrument, so a model
step reads those two columns of every labelled row, plans, and then reads its wide columns for
the planned rows only: at 100 instruments the caps keep a fraction of the millions of rows, and
reading all of them was most of a capped model's step and of the run's peak memory. The plan
is the one ``train_model`` makes on the whole frame, so the model is the same either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from blofin_assets.ml.specs import ModelSpec
from blofin_assets.ml.splits import PurgedSplit, purged_split


def even_positions(instruments: np.ndarray | pd.Series, rows: int) -> np.ndarray:
    """Ascending positions of ``rows`` rows, evenly spaced within each instrument's rows and
    shared in proportion to them: one stride over (ts, inst_id)-ordered rows aliases with the
    instrument count (each instrument kept in one stretch of time, or only some of them)."""
    n = len(instruments)
    if rows >= n:
        return np.arange(n)
    codes, _ = pd.factorize(np.asarray(instruments))
    counts = np.bincount(codes)
    quotas = counts * (rows / n)
    kept = np.floor(quotas).astype(np.int64)
    remainder = rows - int(kept.sum())
    kept[np.argsort(-(quotas - kept), kind="stable")[:remainder]] += 1
    grouped = np.argsort(codes, kind="stable")  # instrument by instrument, frame order within
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    picks = [
        grouped[start + np.linspace(0, count - 1, keep).round().astype(np.int64)]
        for start, count, keep in zip(starts, counts, kept, strict=True)
        if keep > 0
    ]
    return np.sort(np.concatenate(picks))


def evenly_spaced(frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    """``rows`` rows of the frame, evenly spaced within each instrument (even_positions)."""
    return frame if len(frame) <= rows else frame.iloc[even_positions(frame["inst_id"], rows)]


def capped_positions(instruments: np.ndarray | pd.Series, spec: ModelSpec) -> np.ndarray:
    """Positions, among rows in time order, that the spec's row cap keeps (all: no cap)."""
    n, cap = len(instruments), spec.max_train_rows
    if cap is None or n <= cap:
        return np.arange(n)
    return (
        even_positions(instruments, cap) if spec.row_sampling == "even" else np.arange(n - cap, n)
    )


def cap_rows(train: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """Apply the spec's row cap deterministically (no random sampling: same data, same model)."""
    if spec.max_train_rows is None or len(train) <= spec.max_train_rows:
        return train
    return train.iloc[capped_positions(train["inst_id"], spec)]


@dataclass(frozen=True)
class RowPlan:
    """The purged split of every labelled row and, within it, the rows the caps keep.

    Positions index the keys the plan was made from, in (ts, inst_id) order; every training
    position precedes every test position, so ``positions`` is ascending.
    """

    split: PurgedSplit
    train_positions: np.ndarray
    test_positions: np.ndarray
    instruments: tuple[str, ...]  # every instrument of the keys, sorted
    caps: tuple[int | None, str, int | None]  # (max_train_rows, row_sampling, max_test_rows)

    @property
    def positions(self) -> np.ndarray:
        return np.concatenate([self.train_positions, self.test_positions])

    def check_fits(self, spec: ModelSpec) -> None:
        """A plan is only valid for the caps it was made with."""
        if spec_caps(spec) != self.caps:
            raise ValueError(
                f"{spec.name}: row plan made for caps {self.caps}, spec has {spec_caps(spec)}"
            )


def spec_caps(spec: ModelSpec) -> tuple[int | None, str, int | None]:
    return (spec.max_train_rows, spec.row_sampling, spec.max_test_rows)


def plan_rows(
    spec: ModelSpec,
    timestamps: pd.Series,
    instruments: pd.Series | np.ndarray,
    *,
    horizon: int,
    test_fraction: float,
) -> RowPlan:
    """The split and caps of rows in (ts, inst_id) order, as ``train_model`` applies them."""
    codes, names = pd.factorize(np.asarray(instruments))
    split = purged_split(timestamps, codes, test_fraction=test_fraction, horizon=horizon)
    train = split.train_index[capped_positions(codes[split.train_index], spec)]
    test = split.test_index
    if spec.max_test_rows is not None and len(test) > spec.max_test_rows:
        test = test[even_positions(codes[test], spec.max_test_rows)]  # the whole block, sampled
    return RowPlan(
        split=split,
        train_positions=train,
        test_positions=test,
        instruments=tuple(sorted(str(name) for name in names)),
        caps=spec_caps(spec),
    )
