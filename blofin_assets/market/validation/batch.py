"""The one gate every candle batch passes before it may reach a model.

``validate_candles`` turns a *raw* frame (contract columns, values possibly still text, plus an
``origin`` column saying where each row came from) into a clean contract frame, and either
refuses the batch (``on_bad_rows="reject"``) or sets bad rows aside with their reasons
(``on_bad_rows="quarantine"``). Text is parsed by DuckDB with the same SQL the file reader
uses (``text_parsing``), so a value is judged the same way whichever source it came from.

Rules that are deliberate choices, not accidents:

* Timestamps are the bar *open* time. Text is ISO-8601 (a zone-less value is UTC) or epoch
  seconds/milliseconds; the epoch unit is read from the magnitude (seconds in [1e9, 1e10),
  milliseconds in [1e12, 1e13), both 2001-09-09 .. 2286) and a batch may not mix units or mix
  epoch numbers with ISO text (raised at once, whatever ``on_bad_rows`` says, because which rows
  are "the bad ones" is not defined). Timestamps outside [2001-09-09, 2262-01-01) are rejected.
* Grid: sub-hour bars and 1H must sit on the UTC grid counted from the Unix epoch
  (``ts % bar == 0``). Bars longer than 1H must start on a whole hour and every bar of one
  instrument must share one phase (``ts % bar``): exchanges open daily bars at 00:00 UTC or at
  Hong Kong midnight (16:00 UTC), and both are accepted, but not a mixture. Rows off the grid
  are ``misaligned_ts`` -- this is how 1m data fed in as bar=5m shows up.
* Coarser data than ``bar`` (5m data fed in as bar=1m) lies on the finer grid, so it is caught
  by spacing: when an instrument has at least ``MISMATCH_MIN_INTERVALS`` (``series_checks``)
  intervals and every interval is a multiple of k >= 2 bars (gcd of the spacings), all its rows
  are rejected as ``bar_size_mismatch``. Real 1m data has adjacent bars, so its gcd is 1. A
  short batch (fewer intervals) cannot be judged and passes this check.
* Unsorted input is not an error: rows are sorted by (inst_id, ts) and ``unsorted_rows`` counts
  rows that came before their predecessor in input order.
* Duplicate (inst_id, ts) with identical values are merged (``duplicates_merged``); with
  different values every copy is rejected as ``conflicting_duplicate`` (no way to know which
  one is right).
* Gaps are allowed (markets halt, exchanges drop bars); ``gaps`` counts intervals longer than
  one bar and ``largest_gap_bars`` is the largest number of missing bars in one gap.
* A row with several problems is rejected once, for the first reason in ``REASONS`` order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from blofin_assets.market.bars import bar_duration
from blofin_assets.market.clock import as_utc
from blofin_assets.market.contract import (
    CANDLE_COLUMNS,
    INSTRUMENT_PATTERN,
    OPTIONAL_CANDLE_COLUMNS,
    PRICE_COLUMNS,
    validate_instrument_id,
)
from blofin_assets.market.validation.rejections import (
    REASONS,
    CandleValidationError,
    RowFlags,
    empty_rejected,
    rejected_frame,
    rejection_error,
)
from blofin_assets.market.validation.series_checks import (
    count_gaps,
    flag_coarser_data,
    flag_off_grid,
    sort_and_merge,
)
from blofin_assets.market.validation.text_parsing import (
    NUM_MISSING,
    NUM_NON_NUMERIC,
    NUM_OK,
    TS_KIND_NAMES,
    TS_MAX,
    TS_MIN,
    TS_MISSING,
    TS_OUT_OF_RANGE,
    TS_TEXT_KINDS,
    TS_UNPARSEABLE,
    mixed_timestamp_message,
    parse_raw_columns,
)

VOLUME_COLUMNS: list[str] = ["volume", *OPTIONAL_CANDLE_COLUMNS]
ON_BAD_ROWS_MODES: tuple[str, ...] = ("reject", "quarantine")


@dataclass(frozen=True, eq=False)
class ValidatedCandles:
    """Clean contract frame, the rows set aside (with reasons) and counts for the run log."""

    clean: pd.DataFrame
    rejected: pd.DataFrame
    stats: dict[str, int]


@dataclass(frozen=True, eq=False)
class _Batch:
    """A raw batch as arrays, row for row: what every check reads."""

    names: np.ndarray  # sorted distinct inst_id values
    codes: np.ndarray  # per row: index into names (-1: missing)
    inst_status: np.ndarray  # per row: 0 ok, 1 missing, 2 bad, 3 unknown
    ts_kind: np.ndarray  # per row: TS_* kind
    ts_ns: np.ndarray  # per row: epoch ns (0 unless the kind is good)
    values: dict[str, np.ndarray]  # per value column: float64 (NaN unless parsed)
    statuses: dict[str, np.ndarray]  # per value column: NUM_* status
    value_columns: list[str]


def validate_candles(
    raw: pd.DataFrame,
    *,
    bar: str,
    now: pd.Timestamp,
    instruments: list[str] | None,
    on_bad_rows: str = "reject",
    allow_empty: bool = False,
    source_label: str,
) -> ValidatedCandles:
    """Check every row of a raw candle batch; return it clean, or refuse it with reasons.

    ``now`` must be timezone-aware: bars with ``ts + bar > now`` are still open and rejected
    (``unclosed_bar``). ``instruments`` (if given) is the allow-list. Unsorted rows are not an
    error: they are sorted and counted in ``stats["unsorted_rows"]``; identical duplicates are
    merged and counted; gaps are allowed and counted. With ``on_bad_rows="reject"`` any bad row
    raises CandleValidationError (counts per reason + first examples with their origin); with
    ``"quarantine"`` the clean rows are returned and the bad ones are in ``rejected``.
    An empty batch raises unless ``allow_empty``. See the module docstring for the grid rules.
    """
    if on_bad_rows not in ON_BAD_ROWS_MODES:
        raise ValueError(f"on_bad_rows={on_bad_rows!r}: expected one of {ON_BAD_ROWS_MODES}")
    step = bar_duration(bar)
    step_ns = int(step.value)
    now_utc = as_utc(now, refuse_naive="now")
    allowed = None if instruments is None else {validate_instrument_id(i) for i in instruments}
    _require_columns(raw, source_label)
    value_columns = PRICE_COLUMNS + [c for c in VOLUME_COLUMNS if c in raw.columns]
    if len(raw) == 0:
        return _empty_batch(bar, value_columns, allow_empty=allow_empty, source_label=source_label)
    origins = _origins(raw, source_label)
    batch = _parse(raw, allowed, value_columns)
    _refuse_mixed_timestamps(batch.ts_kind, origins, source_label)

    codes, ts_ns = batch.codes, batch.ts_ns
    flags = RowFlags(len(raw))
    _flag_row_values(flags, batch)
    flag_off_grid(flags, codes, ts_ns, step, bar)
    flags.flag(
        flags.ok & (ts_ns + step_ns > now_utc.value),
        "unclosed_bar",
        f"bar not closed at now={now_utc.isoformat()} (ts + {bar} > now)",
    )
    stats = _empty_stats()
    kept, stats["unsorted_rows"], stats["duplicates_merged"] = sort_and_merge(
        flags, codes, ts_ns, batch.values, value_columns
    )
    kept = flag_coarser_data(flags, codes, ts_ns, kept, step_ns, bar)
    stats["gaps"], stats["largest_gap_bars"] = count_gaps(codes, ts_ns, kept, step_ns)

    clean = _clean_frame(batch.names, codes, ts_ns, batch.values, value_columns, kept)
    bad = np.flatnonzero(~flags.ok)
    stats.update(rows_in=len(raw), rows_clean=len(kept), rows_rejected=len(bad))
    stats.update({f"rejected_{reason}": count for reason, count in flags.counts().items()})
    if len(bad) == 0:
        return ValidatedCandles(clean=clean, rejected=empty_rejected(), stats=stats)
    rejected = rejected_frame(raw, bad, flags, batch.ts_kind, ts_ns, origins)
    if on_bad_rows == "reject":
        raise rejection_error(source_label, stats, rejected, flags.code[bad])
    return ValidatedCandles(clean=clean, rejected=rejected, stats=stats)


def _require_columns(raw: pd.DataFrame, source_label: str) -> None:
    """A missing column is the caller's bug, not bad data: no row can be judged without it."""
    missing_columns = [c for c in CANDLE_COLUMNS if c not in raw.columns]
    if missing_columns:
        raise ValueError(
            f"{source_label}: raw candle frame lacks columns {missing_columns}; "
            f"has {list(raw.columns)}, expected {CANDLE_COLUMNS} (+ origin)"
        )


def _empty_batch(
    bar: str, value_columns: list[str], *, allow_empty: bool, source_label: str
) -> ValidatedCandles:
    """No rows is only an outcome where the caller said 'no new bars' is normal."""
    if not allow_empty:
        raise CandleValidationError(
            f"{source_label}: empty batch: 0 candle rows for bar={bar}; "
            "pass allow_empty=True where 'no new bars' is a normal outcome",
            counts={"rows_in": 0},
        )
    none = np.zeros(0, dtype=np.int64)
    values = {c: np.zeros(0) for c in value_columns}
    clean = _clean_frame(np.array([], dtype=object), none, none, values, value_columns, none)
    return ValidatedCandles(clean=clean, rejected=empty_rejected(), stats=_empty_stats())


def _empty_stats() -> dict[str, int]:
    stats = {
        "rows_in": 0,
        "rows_clean": 0,
        "rows_rejected": 0,
        "duplicates_merged": 0,
        "unsorted_rows": 0,
        "gaps": 0,
        "largest_gap_bars": 0,
    }
    stats.update({f"rejected_{reason}": 0 for reason in REASONS})
    return stats


def _origins(raw: pd.DataFrame, source_label: str) -> pd.Series:
    """Where each row came from; a frame without ``origin`` is numbered from 1."""
    if "origin" in raw.columns:
        return raw["origin"]
    return pd.Series([f"{source_label} row {i + 1}" for i in range(len(raw))], dtype=object)


def _parse(raw: pd.DataFrame, allowed: set[str] | None, value_columns: list[str]) -> _Batch:
    codes, names, inst_status = _instrument_codes(raw, allowed)
    ts_kind, ts_ns, values, statuses = parse_raw_columns(raw, value_columns)
    return _Batch(names, codes, inst_status, ts_kind, ts_ns, values, statuses, value_columns)


def _refuse_mixed_timestamps(ts_kind: np.ndarray, origins: pd.Series, source_label: str) -> None:
    """Which rows are 'the bad ones' is undefined when units mix, so the batch is refused."""
    mixed = {
        kind: [str(o) for o in origins.iloc[np.flatnonzero(ts_kind == kind)[:3]]]
        for kind in TS_TEXT_KINDS
    }
    message = mixed_timestamp_message(mixed)
    if message is not None:
        counts = {TS_KIND_NAMES[k]: int((ts_kind == k).sum()) for k in TS_KIND_NAMES}
        raise CandleValidationError(f"{source_label}: {message}; counts {counts}", counts=counts)


def _flag_row_values(flags: RowFlags, batch: _Batch) -> None:
    """Row-level checks, in REASONS order: each row judged on its own values."""
    value_columns, values, statuses = batch.value_columns, batch.values, batch.statuses
    inst_status, ts_kind = batch.inst_status, batch.ts_kind
    flags.flag(inst_status == 1, "missing_value", "inst_id is empty")
    flags.flag(ts_kind == TS_MISSING, "missing_value", "ts is empty")
    for column in value_columns:
        flags.flag(statuses[column] == NUM_MISSING, "missing_value", f"{column} is empty")
    flags.flag(
        inst_status == 2,
        "invalid_instrument",
        f"inst_id does not match {INSTRUMENT_PATTERN.pattern}",
    )
    flags.flag(inst_status == 3, "unknown_instrument", "inst_id is not in the instrument list")
    flags.flag(ts_kind == TS_UNPARSEABLE, "bad_timestamp", "ts is not ISO-8601 or epoch s/ms")
    flags.flag(
        ts_kind == TS_OUT_OF_RANGE,
        "bad_timestamp",
        f"ts outside [{TS_MIN.date()}, {TS_MAX.date()}) or epoch of unknown unit",
    )
    for column in value_columns:
        flags.flag(statuses[column] == NUM_NON_NUMERIC, "non_numeric", f"{column} is not a number")
    with np.errstate(invalid="ignore"):
        for column in value_columns:
            bad = (statuses[column] == NUM_OK) & ~np.isfinite(values[column])
            flags.flag(bad, "not_finite", f"{column} is NaN or infinite")
        for column in PRICE_COLUMNS:
            flags.flag(values[column] <= 0, "non_positive_price", f"{column} <= 0")
        for column in value_columns[len(PRICE_COLUMNS) :]:
            flags.flag(values[column] < 0, "negative_volume", f"{column} < 0")
        high, low = values["high"], values["low"]
        flags.flag(high < low, "inconsistent_ohlc", "high < low")
        for column in ("open", "close"):
            outside = (values[column] < low) | (values[column] > high)
            flags.flag(outside, "inconsistent_ohlc", f"{column} outside [low, high]")


def _instrument_codes(
    raw: pd.DataFrame, allowed: set[str] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Factorised instrument ids (sorted) and per-row status: 0 ok, 1 missing, 2 bad, 3 unknown."""
    ids = raw["inst_id"]
    if not isinstance(ids.dtype, pd.StringDtype):
        ids = ids.astype("string[pyarrow]")
    codes, uniques = pd.factorize(ids, sort=True)
    names = np.asarray(uniques.astype(object), dtype=object)
    unique_status = np.zeros(len(names) + 1, dtype=np.int8)  # last slot: code -1 (missing)
    unique_status[-1] = 1
    for i, name in enumerate(names):
        if name == "":
            unique_status[i] = 1
        elif not INSTRUMENT_PATTERN.match(name):
            unique_status[i] = 2
        elif allowed is not None and name not in allowed:
            unique_status[i] = 3
    return codes.astype(np.int64), names, unique_status[codes]


def _clean_frame(
    names: np.ndarray,
    codes: np.ndarray,
    ts_ns: np.ndarray,
    values: dict[str, np.ndarray],
    value_columns: list[str],
    rows: np.ndarray,
) -> pd.DataFrame:
    """Contract frame for `rows` (already in output order); inst_id shares a few str objects."""
    data: dict[str, object] = {
        "inst_id": names[codes[rows]] if len(names) else np.array([], dtype=object),
        "ts": pd.DatetimeIndex(ts_ns[rows].view("datetime64[ns]")).tz_localize("UTC"),
    }
    for column in value_columns:
        data[column] = values[column][rows]
    return pd.DataFrame(data, copy=False)  # no consolidation copy of the value columns
