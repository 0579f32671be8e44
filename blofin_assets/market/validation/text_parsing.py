"""Candle text -> timestamps and numbers, in one DuckDB SQL shared by validation and files.py.

Both callers build their queries here, so a value is judged the same way whichever source it
came from. A timestamp is ISO-8601 text (zone-less is UTC), epoch seconds or epoch milliseconds
(the unit read from the magnitude), or an already typed DuckDB/pandas time; each row gets a
``TS_*`` kind and each number a ``NUM_*`` status, so bad rows can be named instead of crashing
a cast.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from blofin_assets.storage.sql import quote_identifier

EPOCH_SECONDS_RANGE: tuple[float, float] = (1e9, 1e10)
EPOCH_MILLIS_RANGE: tuple[float, float] = (1e12, 1e13)
TS_MIN = pd.Timestamp("2001-09-09T01:46:40Z")
TS_MAX = pd.Timestamp("2262-01-01T00:00:00Z")

# Timestamp kinds produced by parse_query() and parse_raw_columns().
TS_MISSING, TS_EPOCH_S, TS_EPOCH_MS, TS_TEXT, TS_TYPED, TS_UNPARSEABLE, TS_OUT_OF_RANGE = range(7)
TS_KIND_NAMES: dict[int, str] = {
    TS_EPOCH_S: "epoch seconds",
    TS_EPOCH_MS: "epoch milliseconds",
    TS_TEXT: "ISO-8601 text",
}
# A column of text or numbers must stick to one of these kinds (see mixed_timestamp_message).
TS_TEXT_KINDS: tuple[int, ...] = (TS_EPOCH_S, TS_EPOCH_MS, TS_TEXT)
# Kinds that carry a usable time.
TS_GOOD_KINDS: tuple[int, ...] = (*TS_TEXT_KINDS, TS_TYPED)
# Numeric statuses produced by parse_query() and parse_raw_columns().
NUM_OK, NUM_MISSING, NUM_NON_NUMERIC = 0, 1, 2

_NS_PER_US = 1000
_NUMERIC_TYPES = frozenset(
    {
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
)

# SELECT lists of the four query layers; each layer may read the columns of the one before.
_Layers = tuple[list[str], list[str], list[str], list[str]]


def _is_text_type(duck_type: str) -> bool:
    return duck_type.upper() in ("VARCHAR", "STRING", "TEXT") or duck_type.upper().startswith(
        "VARCHAR"
    )


def _is_numeric_type(duck_type: str) -> bool:
    return duck_type.upper().split("(")[0].strip() in _NUMERIC_TYPES


def _as_text(column: str, duck_type: str) -> str:
    return column if _is_text_type(duck_type) else f"CAST({column} AS VARCHAR)"


def _timestamp_cast(duck_type: str) -> str:
    """Typed times keep their zone: TIMESTAMPTZ stays aware, a plain TIMESTAMP is read as UTC."""
    upper = duck_type.upper()
    return "TIMESTAMPTZ" if "TIME ZONE" in upper or upper == "TIMESTAMPTZ" else "TIMESTAMP"


# --------------------------------------------------------------------------------------------
# The parsing query


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
    layers: _Layers = ([], [], [], [])
    for name, (column, duck_type) in numbers.items():
        _add_number(layers, name, column, duck_type)
    drop = [] if ts is None else _add_timestamp(layers, *ts)
    query = f"SELECT * FROM {source}"
    for index, columns in enumerate(layers):
        if not columns:
            continue
        temporaries = drop if index == len(layers) - 1 else []
        star = f"* EXCLUDE ({', '.join(temporaries)})" if temporaries else "*"
        query = f"SELECT {star}, {', '.join(columns)} FROM ({query})"
    return query


def _add_number(layers: _Layers, name: str, column: str, duck_type: str) -> None:
    """Layer 1 casts the value, layer 2 says whether it was missing or not a number."""
    first, second, _, _ = layers
    v, st = quote_identifier(f"__v_{name}"), quote_identifier(f"__s_{name}")
    if _is_numeric_type(duck_type):
        first.append(f"CAST({column} AS DOUBLE) AS {v}")
        second.append(f"CASE WHEN {column} IS NULL THEN {NUM_MISSING} ELSE {NUM_OK} END AS {st}")
    else:
        text = _as_text(column, duck_type)
        first.append(f"TRY_CAST(trim({text}) AS DOUBLE) AS {v}")
        second.append(
            f"CASE WHEN {text} IS NULL OR trim({text}) = '' THEN {NUM_MISSING} "
            f"WHEN {v} IS NULL THEN {NUM_NON_NUMERIC} ELSE {NUM_OK} END AS {st}"
        )


def _add_timestamp(layers: _Layers, column: str, duck_type: str) -> list[str]:
    """Layer 3 gives a raw kind and microseconds, layer 4 applies the range; returns temporaries."""
    _, _, third, fourth = layers
    upper = duck_type.upper()
    drop: list[str] = []
    if upper.startswith("TIMESTAMP") or upper == "DATE":
        third.append(f"CASE WHEN {column} IS NULL THEN {TS_MISSING} ELSE {TS_TYPED} END AS __ts_rk")
        third.append(f"epoch_us(CAST({column} AS {_timestamp_cast(duck_type)})) AS __ts_rus")
    else:
        _add_epoch_or_text(layers, column, duck_type)
        drop += ["__ts_n", "__ts_missing", "__ts_iso"]
    drop += ["__ts_rk", "__ts_rus"]
    lo_us, hi_us = TS_MIN.value // _NS_PER_US, TS_MAX.value // _NS_PER_US
    good = f"__ts_rk IN ({', '.join(str(kind) for kind in TS_GOOD_KINDS)})"
    in_range = f"(__ts_rus >= {lo_us} AND __ts_rus < {hi_us})"
    fourth.append(
        f"CASE WHEN {good} AND NOT {in_range} THEN {TS_OUT_OF_RANGE} ELSE __ts_rk END AS __ts_kind"
    )
    fourth.append(f"CASE WHEN {good} AND {in_range} THEN __ts_rus END AS __ts_us")
    return drop


def _add_epoch_or_text(layers: _Layers, column: str, duck_type: str) -> None:
    """A number is an epoch (unit from its magnitude); other text must parse as ISO-8601."""
    first, second, third, _ = layers
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


def epoch_micros_sql(column: str, duck_type: str, kind: int) -> str:
    """Cheap conversion once a profile has shown every value is of this one good kind."""
    if kind == TS_TYPED:
        return f"epoch_us(CAST({column} AS {_timestamp_cast(duck_type)}))"
    number = number_value_sql(column, duck_type)
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


def mixed_timestamp_message(found: dict[int, list[str]]) -> str | None:
    """Describe a timestamp column that mixes epoch units / ISO text, or None if it doesn't."""
    kinds = [kind for kind in TS_TEXT_KINDS if found.get(kind)]
    if len(kinds) < 2:
        return None
    parts = [f"{TS_KIND_NAMES[kind]} (e.g. {', '.join(found[kind])})" for kind in kinds]
    return (
        "ts column mixes " + " and ".join(parts) + ": the epoch unit cannot be decided for the "
        "whole column; convert the file to one unit (or ISO-8601) and load it again"
    )


# --------------------------------------------------------------------------------------------
# DuckDB plumbing


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


# --------------------------------------------------------------------------------------------
# Parsing a raw pandas frame


def _numeric_numpy_dtype(series: pd.Series) -> bool:
    dtype = series.dtype
    return isinstance(dtype, np.dtype) and dtype.kind in "iuf"


def parse_raw_columns(
    raw: pd.DataFrame, value_columns: list[str]
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Return (ts kind, ts ns, values, statuses); text goes through DuckDB, numbers don't."""
    n = len(raw)
    values: dict[str, np.ndarray] = {}
    statuses: dict[str, np.ndarray] = {}
    to_sql: dict[str, pa.Array | pa.ChunkedArray] = {}
    for column in value_columns:
        series = raw[column]
        if _numeric_numpy_dtype(series):
            values[column] = series.to_numpy(dtype=np.float64, copy=False)
            statuses[column] = np.zeros(n, dtype=np.int8)
        else:
            to_sql[column] = pa.array(series.astype("string[pyarrow]").array)

    ts = raw["ts"]
    ts_type: str | None = None
    if isinstance(ts.dtype, pd.DatetimeTZDtype) or (
        isinstance(ts.dtype, np.dtype) and ts.dtype.kind == "M"
    ):
        ts_kind, ts_ns = _typed_timestamps(ts)
    else:
        ts_kind = np.full(n, TS_MISSING, dtype=np.int8)
        ts_ns = np.zeros(n, dtype=np.int64)
        if _numeric_numpy_dtype(ts):
            to_sql["ts"] = pa.array(ts.to_numpy(dtype=np.float64), from_pandas=True)
            ts_type = "DOUBLE"
        else:
            to_sql["ts"] = pa.array(ts.astype("string[pyarrow]").array)
            ts_type = "VARCHAR"
    if not to_sql:
        return ts_kind, ts_ns, values, statuses

    numbers = [c for c in value_columns if c in to_sql]
    result = _parse_in_duckdb(pa.table(to_sql), numbers, ts_type)
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


def _typed_timestamps(ts: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """A datetime column needs no parsing: naive is UTC, and only the range is checked."""
    stamps = pd.DatetimeIndex(ts)
    stamps = stamps.tz_localize("UTC") if stamps.tz is None else stamps.tz_convert("UTC")
    as_ns = stamps.as_unit("ns").asi8
    missing = np.asarray(stamps.isna())
    in_range = (as_ns >= TS_MIN.value) & (as_ns < TS_MAX.value)
    kinds = np.where(missing, TS_MISSING, np.where(in_range, TS_TYPED, TS_OUT_OF_RANGE))
    ts_kind = kinds.astype(np.int8)
    return ts_kind, np.where(ts_kind == TS_TYPED, as_ns, 0).astype(np.int64, copy=False)


def _parse_in_duckdb(table: pa.Table, numbers: list[str], ts_type: str | None) -> pa.Table:
    """Only the status/value (and ts kind/us) columns come back, in the table's row order."""
    query = parse_query(
        "candle_text",
        ts=None if ts_type is None else ('"ts"', ts_type),
        numbers={c: (quote_identifier(c), "VARCHAR") for c in numbers},
    )
    wanted = [f"__s_{c}" for c in numbers] + [f"__v_{c}" for c in numbers]
    if ts_type is not None:
        wanted += ["__ts_kind", "__ts_us"]
    con = duckdb_connection()
    try:
        con.register("candle_text", table)
        return fetch_arrow(
            con, f"SELECT {', '.join(quote_identifier(w) for w in wanted)} FROM ({query})"
        )
    finally:
        con.close()
