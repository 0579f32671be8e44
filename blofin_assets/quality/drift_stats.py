"""How far one column's recent values moved from a model's training block: PSI and KS.

PSI (population stability index) over bins cut at the training block's deciles, each share
floored at EMPTY_BIN_SHARE so an empty bin costs a finite amount; the two-sample KS statistic
beside it, for reading only. A column counts as drifted when its PSI exceeds the larger of
the conventional "significant shift" (PSI_SIGNIFICANT = 0.25) and DRIFT_MULTIPLE times the
PSI of the training block's own most unusual day against the whole block.

Why not 0.25 alone: the features are trailing windows (rv_1440 spans a whole day), so the
rows of one day are far from independent, and a market whose volatility comes in regimes
moves the volatility-level features that far on ordinary days. Measured on the demo market
(3 instruments, 14-day window, the last 24 h against the first 80 % of the window, 80
consecutive days): every day has a feature above 0.25 (the largest PSI of a day is 0.5 to
8.3, median 3.3, nearly always rv_1440; the largest KS 0.19 to 0.96), so 0.25 would warn
every day. The block's own most unusual day is the yardstick that moves with that: against it
no demo day exceeds 6 times (the closest is at 75 % of the threshold at 8), while a tenfold
volatility change in the last day (the demo's own bars, returns and wicks scaled by ten, five
different days) makes 7 to 11 features drift (rv_5, rv_15, range_rel, bb_width_20, ret_1,
...: PSI 1.6 to 8.3, KS up to 0.99). A fivefold change is caught on 4 of those 5 days, a
threefold one on 2. On i.i.d. returns of constant volatility (the tests' market) rv_1440
still scores up to 2.5 on a stationary day, under its threshold of 7.
A column whose own training days already score near PSI's ceiling (about 8.3 with ten bins
and this floor: every recent row in one outer bin) cannot be called drifted in a day; its
threshold says so in the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

BINS = 10
EMPTY_BIN_SHARE = 1e-4
PSI_SIGNIFICANT = 0.25
DRIFT_MULTIPLE = 8.0
RECENT_WINDOW = pd.Timedelta(hours=24)
# Fewer whole days than this in the training block and a column's yardstick is one day that
# is most of the block itself: not a measure of how much its days differ.
MIN_CALIBRATION_DAYS = 2


def quantile_edges(reference: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Interior bin edges at the reference's quantiles; repeated edges (a discrete column such
    as a class label) merge, so each distinct value gets its own bin."""
    return np.unique(np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def bin_of(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each value's bin: below the first edge, between edges, from the last edge up."""
    return np.searchsorted(edges, values, side="right")


def shares_of(bins: np.ndarray, count: int) -> np.ndarray:
    """Share of rows in each of ``count`` bins, floored at EMPTY_BIN_SHARE."""
    return np.maximum(np.bincount(bins, minlength=count) / max(len(bins), 1), EMPTY_BIN_SHARE)


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return shares_of(bin_of(values, edges), len(edges) + 1)


def psi_from_shares(expected: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def psi(reference: np.ndarray, recent: np.ndarray, bins: int = BINS) -> float:
    """PSI of ``recent`` against ``reference``, bins from the reference's quantiles."""
    edges = quantile_edges(reference, bins)
    return psi_from_shares(bin_shares(reference, edges), bin_shares(recent, edges))


def calibration_days(ts: pd.Series, length: pd.Timedelta = RECENT_WINDOW) -> list[np.ndarray]:
    """Row masks of the whole ``length`` windows of a block, counted back from its newest row
    (so the last one ends where the block ends); a partial window at its start is left out.
    "Whole" allows 1 % of the length missing at the start: a thinned read starts a few rows in.
    """
    if ts.empty:
        return []
    first, end = ts.min(), ts.max()
    masks = []
    while end - length >= first - length * 0.01:
        masks.append(((ts > end - length) & (ts <= end)).to_numpy())
        end -= length
    return masks


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    psi: float  # the recent window against the training block
    ks: float  # two-sample KS statistic, the same two samples
    day_psi: float  # the training block's most unusual whole day against the block
    threshold: float  # max(PSI_SIGNIFICANT, DRIFT_MULTIPLE * day_psi)
    reference_rows: int
    recent_rows: int

    @property
    def drifted(self) -> bool:
        return self.psi > self.threshold


def column_drift(
    column: str, reference: np.ndarray, recent: np.ndarray, days: Sequence[np.ndarray]
) -> ColumnDrift:
    edges = quantile_edges(reference)
    count = len(edges) + 1
    reference_bins = bin_of(reference, edges)  # binned once: every day is a subset of them
    expected = shares_of(reference_bins, count)
    day_psis = [psi_from_shares(expected, shares_of(reference_bins[d], count)) for d in days]
    day_psi = max(day_psis, default=0.0)
    return ColumnDrift(
        column=column,
        psi=psi_from_shares(expected, bin_shares(recent, edges)),
        ks=float(ks_2samp(reference, recent, method="asymp").statistic),
        day_psi=day_psi,
        threshold=max(PSI_SIGNIFICANT, DRIFT_MULTIPLE * day_psi),
        reference_rows=len(reference),
        recent_rows=len(recent),
    )


def compare_columns(
    reference: pd.DataFrame,
    recent: pd.DataFrame,
    columns: Sequence[str],
    length: pd.Timedelta = RECENT_WINDOW,
) -> tuple[list[ColumnDrift], int, dict[str, int]]:
    """Each column's drift, the whole days its yardstick was taken over, and per column the
    rows left out for a non-finite value (the finite-values checks fail those rows)."""
    days = calibration_days(reference["ts"], length)
    drifts, non_finite = [], {}
    for column in columns:
        ref = reference[column].to_numpy(dtype="float64")
        new = recent[column].to_numpy(dtype="float64")
        ref_ok, new_ok = np.isfinite(ref), np.isfinite(new)
        if (bad := int((~ref_ok).sum() + (~new_ok).sum())) > 0:
            non_finite[column] = bad
        if not ref_ok.any() or not new_ok.any():
            continue
        kept_days = [mask[ref_ok] for mask in days]
        drifts.append(column_drift(column, ref[ref_ok], new[new_ok], kept_days))
    return drifts, len(days), non_finite


def by_importance(drifts: Sequence[ColumnDrift], importances: Mapping[str, float]) -> list[str]:
    """Drifted columns, the version's most important feature first (equal importances, and
    columns it did not rank, which come last, by PSI), so the first name is the shift most
    likely to matter to its predictions."""
    drifted = [d for d in drifts if d.drifted]
    ranked = sorted(
        drifted,
        key=lambda d: (d.column not in importances, -importances.get(d.column, 0.0), -d.psi),
    )
    return [d.column for d in ranked]


def drift_table(drifts: Sequence[ColumnDrift], importances: Mapping[str, float]) -> str:
    """Markdown: one row per column, in the version's importance order."""
    order = sorted(
        drifts, key=lambda d: (d.column not in importances, -importances.get(d.column, 0.0))
    )
    lines = [
        "| column | importance | PSI | threshold | training days' max PSI | KS | drifted |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for d in order:
        importance = f"{importances[d.column]:.4g}" if d.column in importances else "-"
        lines.append(
            f"| {d.column} | {importance} | {d.psi:.3f} | {d.threshold:.3f} | {d.day_psi:.3f} "
            f"| {d.ks:.3f} | {'**yes**' if d.drifted else 'no'} |"
        )
    return "\n".join(lines)
