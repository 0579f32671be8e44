"""The one gate every candle batch passes before it may reach a model.

``validate_candles`` turns a *raw* frame (contract columns, values possibly still text, plus an
``origin`` column saying where each row came from) into a clean contract frame, and either
refuses the batch (``on_bad_rows="reject"``) or sets bad rows aside with their reasons
(``on_bad_rows="quarantine"``). Text is parsed by DuckDB with the same SQL the file reader
uses, so a value is judged the same way whichever source it came from.

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
  by spacing: when an instrument has at least ``MISMATCH_MIN_INTERVALS`` intervals and every
  interval is a multiple of k >= 2 bars (gcd of the spacings), all its rows are rejected as
  ``bar_size_mismatch``. Real 1m data has adjacent bars, so its gcd is 1. A short batch (fewer
  intervals) cannot be judged and passes this check.
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

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from blofin_assets.market.bars import BAR_DURATIONS, bar_duration
from blofin_assets.market.contract import (
    CANDLE_COLUMNS,
    INSTRUMENT_PATTERN,
    OPTIONAL_CANDLE_COLUMNS,
    validate_instrument_id,
)

PRICE_COLUMNS: list[str] = ["open", "high", "low", "close"]
VOLUME_COLUMNS: list[str] = ["volume", *OPTIONAL_CANDLE_COLUMNS]
REJECTED_COLUMNS: list[str] = ["inst_id", "ts", "raw", "origin", "reason"]
ON_BAD_ROWS_MODES: tuple[str, ...] = ("reject", "quarantine")

# Reasons in priority order: a row is reported for the first one that applies.
REASONS: tuple[str, ...] = (
    "missing_value",
    "invalid_instrument",
    "unknown_instrument",
    "bad_timestamp",
    "non_numeric",
    "not_finite",
    "non_positive_price",
    "negative_volume",
    "inconsistent_ohlc",
    "misaligned_ts",
    "unclosed_bar",
    "conflicting_duplicate",
    "bar_size_mismatch",
)
_CODE = {name: index + 1 for index, name in enumerate(REASONS)}

EPOCH_SECONDS_RANGE: tuple[float, float] = (1e9, 1e10)
EPOCH_MILLIS_RANGE: tuple[float, float] = (1e12, 1e13)
TS_MIN = pd.Timestamp("2001-09-09T01:46:40Z")
TS_MAX = pd.Timestamp("2262-01-01T00:00:00Z")
MISMATCH_MIN_INTERVALS = 5
MAX_EXAMPLES = 8

# Timestamp kinds produced by timestamp_sql().
TS_MISSING, TS_EPOCH_S, TS_EPOCH_MS, TS_TEXT, TS_TYPED, TS_UNPARSEABLE, TS_OUT_OF_RANGE = range(7)
TS_KIND_NAMES: dict[int, str] = {
    TS_EPOCH_S: "epoch seconds",
    TS_EPOCH_MS: "epoch milliseconds",
    TS_TEXT: "ISO-8601 text",
}
# Numeric statuses produced by number_sql().
NUM_OK, NUM_MISSING, NUM_NON_NUMERIC = 0, 1, 2

_NS_PER_US = 1000
_HOUR = pd.Timedelta(hours=1)


class CandleValidationError(ValueError):
    """A batch was refused; the message says what, where (origins) and how many."""

    def __init__(
        self,
        message: str,
        *,
        counts: dict[str, int] | None = None,
        examples: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.counts = dict(counts or {})
        self.examples = list(examples or [])


@dataclass(frozen=True, eq=False)
class ValidatedCandles:
    """Clean contract frame, the rows set aside (with reasons) and counts for the run log."""

    clean: pd.DataFrame
    rejected: pd.DataFrame
    stats: dict[str, int]


# --------------------------------------------------------------------------------------------
# SQL shared with files.py, so text is judged identically wherever it comes from.


def _is_text_type(duck_type: str) -> bool:
    return duck_type.upper() in ("VARCHAR", "STRING", "TEXT") or duck_type.upper().startswith(
        "VARCHAR"
    )


def _is_numeric_type(duck_type: str) -> bool:
    base = duck_type.upper().split("(")[0].strip()
    return base in {
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "HUGEINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
        "UBIGINT",
        "UHUGEINT",
        "FLOAT",
        "DOUBLE",
        "DECIMAL",
        "REAL",
    }


def quote_ident(name: str) -> str:
    """Quote a column name for DuckDB."""
    return '"' + name.replace('"', '""') + '"'


def _as_text(column: str, duck_type: str) -> str:
    return column if _is_text_type(duck_type) else f"CAST({column} AS VARCHAR)"


def parse_query(
    source: str,
    *,
    ts: tuple[str, str] | None,
    numbers: dict[str, tuple[str, str]],
) -> str:
    """SELECT * FROM source, plus parsed columns; shared by validation and the file reader.

    ``ts`` = (column SQL, DuckDB type) adds ``__ts_kind`` (see TS_*) and ``__ts_us`` (epoch
    microseconds, NULL unless the kind is good). ``numbers`` maps an output name to (column SQL,
    type) and adds ``__s_<name>`` (NUM_* status) and ``__v_<name>`` (DOUBLE). Built in layers so
    each cast runs once per row. Needs ``SET TimeZone='UTC'``: zone-less text is UTC.
    """
    first: list[str] = []
    second: list[str] = []
    drop: list[str] = []
    for name, (column, duck_type) in numbers.items():
        v, st = quote_ident(f"__v_{name}"), quote_ident(f"__s_{name}")
        if _is_numeric_type(duck_type):
            first.append(f"CAST({column} AS DOUBLE) AS {v}")
            second.append(
                f"CASE WHEN {column} IS NULL THEN {NUM_MISSING} ELSE {NUM_OK} END AS {st}"
            )
        else:
            text = _as_text(column, duck_type)
            first.append(f"TRY_CAST(trim({text}) AS DOUBLE) AS {v}")
            second.append(
                f"CASE WHEN {text} IS NULL OR trim({text}) = '' THEN {NUM_MISSING} "
                f"WHEN {v} IS NULL THEN {NUM_NON_NUMERIC} ELSE {NUM_OK} END AS {st}"
            )
    third: list[str] = []
    fourth: list[str] = []
    if ts is not None:
        column, duck_type = ts
        upper = duck_type.upper()
        lo_us, hi_us = TS_MIN.value // _NS_PER_US, TS_MAX.value // _NS_PER_US
        if upper.startswith("TIMESTAMP") or upper == "DATE":
            cast = "TIMESTAMPTZ" if "TIME ZONE" in upper or upper == "TIMESTAMPTZ" else "TIMESTAMP"
            third.append(
                f"CASE WHEN {column} IS NULL THEN {TS_MISSING} ELSE {TS_TYPED} END AS __ts_rk"
            )
            third.append(f"epoch_us(CAST({column} AS {cast})) AS __ts_rus")
        else:
            if _is_numeric_type(duck_type):
                first.append(f"CAST({column} AS DOUBLE) AS __ts_n")
                first.append(f"({column} IS NULL) AS __ts_missing")
                second.append("NULL::TIMESTAMPTZ AS __ts_iso")
            else:
                text = _as_text(column, duck_type)
                first.append(f"TRY_CAST(trim({text}) AS DOUBLE) AS __ts_n")
                first.append(f"({text} IS NULL OR trim({text}) = '') AS __ts_missing")
                second.append(
                    f"CASE WHEN __ts_n IS NULL AND NOT __ts_missing "
                    f"THEN TRY_CAST(trim({text}) AS TIMESTAMPTZ) END AS __ts_iso"
                )
            drop += ["__ts_n", "__ts_missing", "__ts_iso"]
            s_lo, s_hi = EPOCH_SECONDS_RANGE
            ms_lo, ms_hi = EPOCH_MILLIS_RANGE
            in_s = f"(__ts_n >= {s_lo!r} AND __ts_n < {s_hi!r})"
            in_ms = f"(__ts_n >= {ms_lo!r} AND __ts_n < {ms_hi!r})"
            third.append(
                f"CASE WHEN __ts_missing THEN {TS_MISSING} WHEN __ts_n IS NOT NULL THEN "
                f"(CASE WHEN {in_s} THEN {TS_EPOCH_S} WHEN {in_ms} THEN {TS_EPOCH_MS} "
                f"ELSE {TS_OUT_OF_RANGE} END) WHEN __ts_iso IS NOT NULL THEN {TS_TEXT} "
                f"ELSE {TS_UNPARSEABLE} END AS __ts_rk"
            )
            third.append(
                f"CASE WHEN {in_s} THEN CAST(round(__ts_n * 1000000) AS BIGINT) "
                f"WHEN {in_ms} THEN CAST(round(__ts_n * 1000) AS BIGINT) "
                f"WHEN __ts_n IS NULL THEN epoch_us(__ts_iso) END AS __ts_rus"
            )
        drop += ["__ts_rk", "__ts_rus"]
        good = f"__ts_rk IN ({TS_EPOCH_S}, {TS_EPOCH_MS}, {TS_TEXT}, {TS_TYPED})"
        in_range = f"(__ts_rus >= {lo_us} AND __ts_rus < {hi_us})"
        fourth.append(
            f"CASE WHEN {good} AND NOT {in_range} THEN {TS_OUT_OF_RANGE} "
            f"ELSE __ts_rk END AS __ts_kind"
        )
        fourth.append(f"CASE WHEN {good} AND {in_range} THEN __ts_rus END AS __ts_us")
    layers: list[tuple[list[str], list[str]]] = [
        (first, []),
        (second, []),
        (third, []),
        (fourth, drop),
    ]
    query = f"SELECT * FROM {source}"
    for columns, temporaries in layers:
        if not columns:
            continue
        star = f"* EXCLUDE ({', '.join(temporaries)})" if temporaries else "*"
        query = f"SELECT {star}, {', '.join(columns)} FROM ({query})"
    return query


def epoch_micros_sql(column: str, duck_type: str, kind: int) -> str:
    """Cheap conversion once a profile has shown every value is of this one good kind."""
    upper = duck_type.upper()
    if kind == TS_TYPED:
        cast = "TIMESTAMPTZ" if "TIME ZONE" in upper or upper == "TIMESTAMPTZ" else "TIMESTAMP"
        return f"epoch_us(CAST({column} AS {cast}))"
    number = (
        f"CAST({column} AS DOUBLE)"
        if _is_numeric_type(duck_type)
        else f"CAST(trim({_as_text(column, duck_type)}) AS DOUBLE)"
    )
    if kind == TS_EPOCH_S:
        return f"CAST(round({number} * 1000000) AS BIGINT)"
    if kind == TS_EPOCH_MS:
        return f"CAST(round({number} * 1000) AS BIGINT)"
    if kind == TS_TEXT:
        return f"epoch_us(CAST(trim({_as_text(column, duck_type)}) AS TIMESTAMPTZ))"
    raise ValueError(f"no direct conversion for timestamp kind {kind}")


def number_value_sql(column: str, duck_type: str) -> str:
    """Cheap DOUBLE conversion once a profile has shown every value parses."""
    if _is_numeric_type(duck_type):
        return f"CAST({column} AS DOUBLE)"
    return f"CAST(trim({_as_text(column, duck_type)}) AS DOUBLE)"


def duckdb_connection() -> duckdb.DuckDBPyConnection:
    """A private in-memory DuckDB that reads zone-less times as UTC and keeps row order."""
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = true")
    return con


def fetch_arrow(con: duckdb.DuckDBPyConnection, query: str) -> pa.Table:
    """DuckDB 1.x calls it fetch_arrow_table, 2.x to_arrow_table (and deprecates the old one)."""
    relation = con.sql(query)
    to_table = getattr(relation, "to_arrow_table", None) or relation.fetch_arrow_table
    return to_table()


def stream_arrow(
    con: duckdb.DuckDBPyConnection, query: str, batch_rows: int = 262_144
) -> pa.RecordBatchReader:
    """Arrow batches as DuckDB produces them, so no full-size copy sits beside the result."""
    relation = con.sql(query)
    for name in ("to_arrow_reader", "fetch_arrow_reader", "record_batch"):
        method = getattr(relation, name, None)
        if method is not None:
            return method(batch_rows)
    raise RuntimeError("this DuckDB version offers no Arrow batch reader")  # pragma: no cover


def mixed_timestamp_message(found: dict[int, list[str]]) -> str | None:
    """Describe a timestamp column that mixes epoch units / ISO text, or None if it doesn't."""
    kinds = [kind for kind in (TS_EPOCH_S, TS_EPOCH_MS, TS_TEXT) if found.get(kind)]
    if len(kinds) < 2:
        return None
    parts = [f"{TS_KIND_NAMES[kind]} (e.g. {', '.join(found[kind])})" for kind in kinds]
    return (
        "ts column mixes " + " and ".join(parts) + ": the epoch unit cannot be decided for the "
        "whole column; convert the file to one unit (or ISO-8601) and load it again"
    )


# --------------------------------------------------------------------------------------------
# Parsing


def _numeric_numpy_dtype(series: pd.Series) -> bool:
    dtype = series.dtype
    return isinstance(dtype, np.dtype) and dtype.kind in "iuf"


def _parse_columns(
    raw: pd.DataFrame, value_columns: list[str]
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Return (ts kind, ts ns, values, statuses); text goes through DuckDB, numbers don't."""
    n = len(raw)
    values: dict[str, np.ndarray] = {}
    statuses: dict[str, np.ndarray] = {}
    ts_kind = np.full(n, TS_MISSING, dtype=np.int8)
    ts_ns = np.zeros(n, dtype=np.int64)

    to_sql: dict[str, pa.Array | pa.ChunkedArray] = {}
    for column in value_columns:
        series = raw[column]
        if _numeric_numpy_dtype(series):
            values[column] = series.to_numpy(dtype=np.float64, copy=False)
            statuses[column] = np.zeros(n, dtype=np.int8)
        else:
            to_sql[column] = pa.array(series.astype("string[pyarrow]").array)

    ts = raw["ts"]
    if isinstance(ts.dtype, pd.DatetimeTZDtype) or (
        isinstance(ts.dtype, np.dtype) and ts.dtype.kind == "M"
    ):
        stamps = pd.DatetimeIndex(ts)
        stamps = stamps.tz_localize("UTC") if stamps.tz is None else stamps.tz_convert("UTC")
        as_ns = stamps.as_unit("ns").asi8
        missing = np.asarray(stamps.isna())
        in_range = (as_ns >= TS_MIN.value) & (as_ns < TS_MAX.value)
        ts_kind[:] = np.where(missing, TS_MISSING, np.where(in_range, TS_TYPED, TS_OUT_OF_RANGE))
        ts_ns[:] = np.where(ts_kind == TS_TYPED, as_ns, 0)
        ts_type = None
    elif _numeric_numpy_dtype(ts):
        to_sql["ts"] = pa.array(ts.to_numpy(dtype=np.float64), from_pandas=True)
        ts_type = "DOUBLE"
    else:
        to_sql["ts"] = pa.array(ts.astype("string[pyarrow]").array)
        ts_type = "VARCHAR"

    if not to_sql:
        return ts_kind, ts_ns, values, statuses

    table = pa.table(to_sql)
    numbers = {c: (quote_ident(c), "VARCHAR") for c in value_columns if c in to_sql}
    query = parse_query(
        "candle_text", ts=None if ts_type is None else ('"ts"', ts_type), numbers=numbers
    )
    wanted = [f"__s_{c}" for c in numbers] + [f"__v_{c}" for c in numbers]
    if ts_type is not None:
        wanted += ["__ts_kind", "__ts_us"]
    con = duckdb_connection()
    try:
        con.register("candle_text", table)
        result = fetch_arrow(
            con, f"SELECT {', '.join(quote_ident(w) for w in wanted)} FROM ({query})"
        )
    finally:
        con.close()
    for column in numbers:
        values[column] = (
            result[f"__v_{column}"].to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        )
        statuses[column] = result[f"__s_{column}"].to_numpy(zero_copy_only=False)
    if ts_type is not None:
        ts_kind = result["__ts_kind"].to_numpy(zero_copy_only=False).astype(np.int8)
        micros_array = result["__ts_us"].fill_null(0).to_numpy(zero_copy_only=False)
        ts_ns = micros_array.astype(np.int64) * _NS_PER_US
    return ts_kind, ts_ns, values, statuses


# --------------------------------------------------------------------------------------------
# Validation


class _Flags:
    """Per-row first-reason bookkeeping, vectorised: code per row + index of a reason text."""

    def __init__(self, n: int) -> None:
        self.code = np.zeros(n, dtype=np.int8)
        self.text = np.zeros(n, dtype=np.int16)
        self.texts: list[str] = [""]

    def flag(self, mask: np.ndarray, reason: str, detail: str) -> None:
        hit = mask & (self.code == 0)
        if not hit.any():
            return
        self.texts.append(f"{reason}: {detail}")
        self.code[hit] = _CODE[reason]
        self.text[hit] = len(self.texts) - 1

    def flag_rows(self, rows: np.ndarray, reason: str, detail: str) -> None:
        mask = np.zeros(len(self.code), dtype=bool)
        mask[rows] = True
        self.flag(mask, reason, detail)

    @property
    def ok(self) -> np.ndarray:
        return self.code == 0


def _utc(now: pd.Timestamp) -> pd.Timestamp:
    stamp = pd.Timestamp(now)
    if stamp.tz is None:
        raise ValueError(
            f"now={now!r} has no time zone; pass an aware UTC time, e.g. pd.Timestamp.now(tz='UTC')"
        )
    return stamp.tz_convert("UTC")


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


def _bar_name(step_ns: int) -> str:
    for name, duration in BAR_DURATIONS.items():
        if duration.value == step_ns:
            return name
    return str(pd.Timedelta(step_ns, unit="ns"))


def _raw_text(raw: pd.DataFrame, rows: np.ndarray) -> pd.Series:
    """The offending rows as 'col=value, ...' text, so a reader can see exactly what came in."""
    columns = [c for c in raw.columns if c != "origin"]
    if len(rows) == 0:
        return pd.Series([], dtype=object)
    text: pd.Series | None = None
    for column in columns:
        part = raw[column].iloc[rows].astype("string").fillna("<NA>").astype(object)
        part = (column + "=") + part.reset_index(drop=True)
        text = part if text is None else text + ", " + part
    assert text is not None
    return text.astype(object)


def _empty_rejected() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "inst_id": pd.Series([], dtype=object),
            "ts": pd.Series([], dtype="datetime64[ns, UTC]"),
            "raw": pd.Series([], dtype=object),
            "origin": pd.Series([], dtype=object),
            "reason": pd.Series([], dtype=object),
        }
    )


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
    frame = pd.DataFrame(data, copy=False)  # no consolidation copy of the value columns
    return frame


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
    now_utc = _utc(now)
    allowed = None if instruments is None else {validate_instrument_id(i) for i in instruments}
    missing_columns = [c for c in CANDLE_COLUMNS if c not in raw.columns]
    if missing_columns:
        raise ValueError(
            f"{source_label}: raw candle frame lacks columns {missing_columns}; "
            f"has {list(raw.columns)}, expected {CANDLE_COLUMNS} (+ origin)"
        )
    value_columns = PRICE_COLUMNS + [c for c in VOLUME_COLUMNS if c in raw.columns]
    n = len(raw)
    stats = _empty_stats()

    if n == 0:
        if not allow_empty:
            raise CandleValidationError(
                f"{source_label}: empty batch: 0 candle rows for bar={bar}; "
                "pass allow_empty=True where 'no new bars' is a normal outcome",
                counts={"rows_in": 0},
            )
        clean = _clean_frame(
            np.array([], dtype=object),
            np.zeros(0, dtype=np.int64),
            np.zeros(0, dtype=np.int64),
            {c: np.zeros(0) for c in value_columns},
            value_columns,
            np.zeros(0, dtype=np.int64),
        )
        return ValidatedCandles(clean=clean, rejected=_empty_rejected(), stats=stats)

    if "origin" in raw.columns:
        origins = raw["origin"]
    else:
        origins = pd.Series([f"{source_label} row {i + 1}" for i in range(n)], dtype=object)

    codes, names, inst_status = _instrument_codes(raw, allowed)
    ts_kind, ts_ns, values, statuses = _parse_columns(raw, value_columns)

    mixed = {
        kind: [str(o) for o in origins.iloc[np.flatnonzero(ts_kind == kind)[:3]]]
        for kind in (TS_EPOCH_S, TS_EPOCH_MS, TS_TEXT)
    }
    message = mixed_timestamp_message(mixed)
    if message is not None:
        counts = {TS_KIND_NAMES[k]: int((ts_kind == k).sum()) for k in TS_KIND_NAMES}
        raise CandleValidationError(f"{source_label}: {message}; counts {counts}", counts=counts)

    flags = _Flags(n)
    # Row-level checks, in REASONS order.
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

    # Grid.
    anchor_ns = int(min(step, _HOUR).value)
    flags.flag(
        flags.ok & (ts_ns % anchor_ns != 0),
        "misaligned_ts",
        f"ts not on the {_bar_name(anchor_ns)} grid for bar={bar}",
    )
    if step > _HOUR:
        rows = np.flatnonzero(flags.ok)
        if len(rows):
            phase = ts_ns % step_ns
            off = _modal_phase_mask(codes, phase, rows)
            flags.flag(off, "misaligned_ts", f"ts off this instrument's {bar} grid phase")

    flags.flag(
        flags.ok & (ts_ns + step_ns > now_utc.value),
        "unclosed_bar",
        f"bar not closed at now={now_utc.isoformat()} (ts + {bar} > now)",
    )

    # Order, duplicates.
    rows = np.flatnonzero(flags.ok)
    row_codes, row_ts = codes[rows], ts_ns[rows]
    descents = (row_codes[1:] < row_codes[:-1]) | (
        (row_codes[1:] == row_codes[:-1]) & (row_ts[1:] < row_ts[:-1])
    )
    stats["unsorted_rows"] = int(descents.sum())
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
    stats["duplicates_merged"] = int((~group_start & ~conflicting).sum())
    kept = order[group_start & ~conflicting]

    # Coarser data than `bar`: every spacing a multiple k >= 2 of the bar.
    kept_codes = codes[kept]
    starts = _segments(kept_codes)
    if len(kept) > 1:
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
                    f"{_bar_name(k * step_ns)} data, not {bar}",
                )
        kept = kept[flags.ok[kept]]

    # Gaps on what survives.
    if len(kept) > 1:
        steps = np.diff(ts_ns[kept]) // step_ns
        same_inst = codes[kept][1:] == codes[kept][:-1]
        gap_steps = steps[same_inst & (steps > 1)]
        stats["gaps"] = len(gap_steps)
        stats["largest_gap_bars"] = int(gap_steps.max() - 1) if len(gap_steps) else 0

    clean = _clean_frame(names, codes, ts_ns, values, value_columns, kept)
    bad = np.flatnonzero(~flags.ok)
    stats["rows_in"] = n
    stats["rows_clean"] = len(kept)
    stats["rows_rejected"] = len(bad)
    for reason in REASONS:
        stats[f"rejected_{reason}"] = int((flags.code == _CODE[reason]).sum())

    if len(bad) == 0:
        return ValidatedCandles(clean=clean, rejected=_empty_rejected(), stats=stats)

    reason_texts = np.asarray(flags.texts, dtype=object)[flags.text[bad]]
    bad_ts = np.where(
        np.isin(ts_kind[bad], [TS_EPOCH_S, TS_EPOCH_MS, TS_TEXT, TS_TYPED]),
        ts_ns[bad],
        np.iinfo(np.int64).min,
    )
    inst_values = raw["inst_id"].iloc[bad].astype("string").astype(object)
    rejected = pd.DataFrame(
        {
            "inst_id": inst_values.where(inst_values.notna(), None).to_numpy(dtype=object),
            "ts": pd.DatetimeIndex(bad_ts.view("datetime64[ns]")).tz_localize("UTC"),
            "raw": _raw_text(raw, bad).to_numpy(dtype=object),
            "origin": origins.iloc[bad].astype(str).to_numpy(dtype=object),
            "reason": reason_texts,
        }
    )

    if on_bad_rows == "reject":
        raise _rejection_error(source_label, stats, rejected, flags.code[bad])
    return ValidatedCandles(clean=clean, rejected=rejected, stats=stats)


def _rejection_error(
    source_label: str, stats: dict[str, int], rejected: pd.DataFrame, codes: np.ndarray
) -> CandleValidationError:
    """Counts per reason first, then examples: first one of each reason, then in input order."""
    counts = {r: stats[f"rejected_{r}"] for r in REASONS if stats[f"rejected_{r}"]}
    picked: list[int] = []
    for reason in counts:
        picked.append(int(np.flatnonzero(codes == _CODE[reason])[0]))
    for index in range(len(rejected)):
        if len(picked) >= MAX_EXAMPLES:
            break
        if index not in picked:
            picked.append(index)
    picked = sorted(picked[:MAX_EXAMPLES])
    examples = [
        f"{rejected['origin'].iat[i]}: {rejected['reason'].iat[i]} [{rejected['raw'].iat[i]}]"
        for i in picked
    ]
    summary = ", ".join(f"{reason}: {count}" for reason, count in counts.items())
    message = (
        f"{source_label}: {stats['rows_rejected']} of {stats['rows_in']} candle rows rejected "
        f"({summary}). First examples:\n  "
        + "\n  ".join(examples)
        + "\nFix the source, or pass on_bad_rows='quarantine' to keep the clean rows and "
        "inspect the rejected ones."
    )
    return CandleValidationError(message, counts=counts, examples=examples)
