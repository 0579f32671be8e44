"""Checks that read an instrument's rows together, along the time axis.

Run after the row-level checks, on the rows still unflagged: the bar grid (and, for bars longer
than 1H, one phase per instrument), ordering and duplicates, data coarser than the bar, and the
gaps that remain. The rules and why they are chosen are in ``validation``'s module docstring.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from blofin_assets.market.bars import bar_name
from blofin_assets.market.validation.rejections import RowFlags

# An instrument needs this many intervals before its spacing can say "coarser than the bar".
MISMATCH_MIN_INTERVALS = 5

_HOUR = pd.Timedelta(hours=1)


def flag_off_grid(
    flags: RowFlags, codes: np.ndarray, ts_ns: np.ndarray, step: pd.Timedelta, bar: str
) -> None:
    """Grid: epoch grid up to 1H; longer bars on whole hours, one phase per instrument."""
    anchor_ns = int(min(step, _HOUR).value)
    flags.flag(
        flags.ok & (ts_ns % anchor_ns != 0),
        "misaligned_ts",
        f"ts not on the {bar_name(anchor_ns)} grid for bar={bar}",
    )
    if step > _HOUR:
        rows = np.flatnonzero(flags.ok)
        if len(rows):
            phase = ts_ns % int(step.value)
            off = _modal_phase_mask(codes, phase, rows)
            flags.flag(off, "misaligned_ts", f"ts off this instrument's {bar} grid phase")


def sort_and_merge(
    flags: RowFlags,
    codes: np.ndarray,
    ts_ns: np.ndarray,
    values: dict[str, np.ndarray],
    value_columns: list[str],
) -> tuple[np.ndarray, int, int]:
    """Order, duplicates: (kept rows in (inst_id, ts) order, unsorted rows, merged duplicates).

    Identical copies of a row merge; copies that differ are all flagged, as none can be trusted.
    """
    rows = np.flatnonzero(flags.ok)
    row_codes, row_ts = codes[rows], ts_ns[rows]
    descents = (row_codes[1:] < row_codes[:-1]) | (
        (row_codes[1:] == row_codes[:-1]) & (row_ts[1:] < row_ts[:-1])
    )
    order = rows[np.lexsort((row_ts, row_codes))]
    key_codes, key_ts = codes[order], ts_ns[order]
    same = (key_codes[1:] == key_codes[:-1]) & (key_ts[1:] == key_ts[:-1])
    differs = np.zeros(len(same), dtype=bool)
    for column in value_columns:
        column_values = values[column][order]
        differs |= column_values[1:] != column_values[:-1]
    differs &= same
    group_start = np.r_[True, ~same] if len(order) else np.zeros(0, dtype=bool)
    group_id = np.cumsum(group_start) - 1
    conflicting_groups = np.zeros(int(group_start.sum()), dtype=bool)
    conflicting_groups[group_id[1:][differs]] = True
    conflicting = conflicting_groups[group_id] if len(order) else np.zeros(0, dtype=bool)
    flags.flag_rows(
        order[conflicting],
        "conflicting_duplicate",
        "same (inst_id, ts) as another row with different values",
    )
    merged = int((~group_start & ~conflicting).sum())
    return order[group_start & ~conflicting], int(descents.sum()), merged


def flag_coarser_data(
    flags: RowFlags, codes: np.ndarray, ts_ns: np.ndarray, kept: np.ndarray, step_ns: int, bar: str
) -> np.ndarray:
    """Coarser data than `bar`: every spacing a multiple k >= 2 of the bar. Returns kept rows."""
    if len(kept) <= 1:
        return kept
    kept_codes = codes[kept]
    starts = _segments(kept_codes)
    steps = np.diff(ts_ns[kept]) // step_ns
    same_inst = kept_codes[1:] == kept_codes[:-1]
    for index, begin in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(kept)
        spacing = steps[begin : end - 1][same_inst[begin : end - 1]]
        if len(spacing) < MISMATCH_MIN_INTERVALS:
            continue
        k = int(np.gcd.reduce(spacing))
        if k >= 2:
            flags.flag_rows(
                kept[begin:end],
                "bar_size_mismatch",
                f"every spacing is a multiple of {k} bars: looks like "
                f"{bar_name(k * step_ns)} data, not {bar}",
            )
    return kept[flags.ok[kept]]


def count_gaps(
    codes: np.ndarray, ts_ns: np.ndarray, kept: np.ndarray, step_ns: int
) -> tuple[int, int]:
    """Gaps on what survives: (intervals longer than one bar, most bars missing in one)."""
    if len(kept) <= 1:
        return 0, 0
    steps = np.diff(ts_ns[kept]) // step_ns
    same_inst = codes[kept][1:] == codes[kept][:-1]
    gap_steps = steps[same_inst & (steps > 1)]
    return len(gap_steps), int(gap_steps.max() - 1) if len(gap_steps) else 0


def _modal_phase_mask(codes: np.ndarray, phase: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """True for rows whose phase differs from the most common phase of their instrument."""
    frame = pd.DataFrame({"code": codes[rows], "phase": phase[rows]})
    counts = frame.value_counts().rename("n").reset_index()
    counts = counts.sort_values(["code", "n", "phase"], ascending=[True, False, True])
    modal = counts.drop_duplicates("code").set_index("code")["phase"]
    expected = modal.reindex(frame["code"]).to_numpy()
    off = np.zeros(len(codes), dtype=bool)
    off[rows] = frame["phase"].to_numpy() != expected
    return off


def _segments(codes_sorted: np.ndarray) -> np.ndarray:
    """Start offsets of runs of equal instrument codes in a sorted array."""
    if len(codes_sorted) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, codes_sorted[1:] != codes_sorted[:-1]])
