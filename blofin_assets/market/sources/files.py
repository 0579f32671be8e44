"""CSV / Parquet candle imports, read by DuckDB so millions of rows never crash or flood pandas.

``read_candles_file`` only *reads*: it maps the columns to the candle contract, numbers the rows
and hands everything to ``validate_candles``. CSV columns are read as text (``all_varchar``) so a
bad value becomes a rejected row with its file and row number instead of a reader crash. A
column whose every value parses cleanly comes back typed (float64 / datetime64[ns, UTC]); a
column with any empty or unparseable value comes back as text and validation judges it with
the same SQL.

Two layouts are recognised (column names matched case-insensitively):

* generic: ``inst_id, ts, open, high, low, close, volume`` (+ optional ``volume_currency``,
  ``volume_quote``);
* BloFin API names: ``instId, ts, open, high, low, close, volCurrency`` (+ optional ``vol``,
  ``volCurrencyQuote``, ``confirm``). BloFin instruments are perpetual swaps, where ``vol`` is
  the number of *contracts* and ``volCurrency`` the base-currency volume, so ``volume`` (base
  currency by contract) is taken from ``volCurrency`` -- the same field ccxt uses. Rows with
  ``confirm`` "0" (bar still open when exported) are dropped and counted.

``ts`` is the bar open time: ISO-8601 text (zone-less means UTC), epoch seconds or epoch
milliseconds. The epoch unit is decided from the magnitude of the whole column; a column that
mixes units (or epoch numbers and ISO text) is an error naming example rows.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from blofin_assets.market.validation.rejections import CandleValidationError
from blofin_assets.market.validation.text_parsing import (
    NUM_OK,
    TS_GOOD_KINDS,
    TS_TEXT_KINDS,
    duckdb_connection,
    epoch_micros_sql,
    mixed_timestamp_message,
    number_value_sql,
    parse_query,
    stream_arrow,
)
from blofin_assets.storage.sql import quote_identifier, quote_literal

CSV_SUFFIXES: tuple[str, ...] = (".csv", ".csv.gz")
PARQUET_SUFFIXES: tuple[str, ...] = (".parquet", ".pq")

# Output column -> source column, per layout. Output order follows the candle contract.
GENERIC_REQUIRED: dict[str, str] = {
    "inst_id": "inst_id",
    "ts": "ts",
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "volume": "volume",
}
GENERIC_OPTIONAL: dict[str, str] = {
    "volume_currency": "volume_currency",
    "volume_quote": "volume_quote",
}
BLOFIN_BASE_VOLUME_FIELD = "volCurrency"
BLOFIN_REQUIRED: dict[str, str] = {
    "inst_id": "instId",
    "ts": "ts",
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "volume": BLOFIN_BASE_VOLUME_FIELD,
}
BLOFIN_OPTIONAL: dict[str, str] = {
    "volume_currency": BLOFIN_BASE_VOLUME_FIELD,
    "volume_quote": "volCurrencyQuote",
}
VALUE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")


def _file_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise ValueError(
        f"{path}: unsupported file type; expected one of {CSV_SUFFIXES + PARQUET_SUFFIXES}"
    )


def _source_sql(path: Path, file_format: str) -> str:
    if file_format == "csv":
        # all_varchar: every value reaches validation as text instead of failing the reader;
        # null_padding: a short row gets empty fields (rejected with its row number);
        # the dialect is pinned so the sniffer cannot guess a different delimiter.
        return (
            f"read_csv({quote_literal(str(path))}, all_varchar = true, header = true, "
            "null_padding = true, delim = ',', quote = '\"', escape = '\"')"
        )
    return f"read_parquet({quote_literal(str(path))})"


def _header_fields(path: Path) -> list[str]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
        return next(csv.reader(handle), [])


def _refuse_extra_fields(
    con: duckdb.DuckDBPyConnection, path: Path, source: str, columns: list[str]
) -> None:
    """A row with more fields than the header means shifted values: refuse the file.

    DuckDB raises for such a row beyond its sniffing sample, but a row inside the sample
    silently widens the table instead; this catches that case and names the rows.
    """
    header = _header_fields(path)
    extra = columns[len(header) :]
    if not extra:
        return
    condition = " OR ".join(f"{quote_identifier(c)} IS NOT NULL" for c in extra)
    rows = con.execute(
        f"SELECT __rn FROM (SELECT *, row_number() OVER () AS __rn FROM {source}) "
        f"WHERE {condition} ORDER BY __rn LIMIT 5"
    ).fetchall()
    if rows:
        raise CandleValidationError(
            f"{path.name}: row(s) {', '.join(str(r[0]) for r in rows)} have more fields than "
            f"the header's {len(header)} {header}: a stray comma (e.g. a thousands separator) "
            "shifts every value after it, so the file is refused"
        )


def _resolve_layout(path: Path, columns: dict[str, str]) -> tuple[str, dict[str, str], str | None]:
    """Pick the layout and map output columns to actual source names (case-insensitive)."""
    by_lower = {name.strip().lower(): name for name in columns}
    if "instid" in by_lower:
        layout, required, optional = "blofin", BLOFIN_REQUIRED, BLOFIN_OPTIONAL
    else:
        layout, required, optional = "generic", GENERIC_REQUIRED, GENERIC_OPTIONAL
    missing = sorted({src for src in required.values() if src.lower() not in by_lower})
    if missing:
        raise CandleValidationError(
            f"{path.name}: missing column(s) {missing} for the {layout} layout; "
            f"found {list(columns)}; expected generic {list(GENERIC_REQUIRED.values())} "
            f"(+ optional {list(GENERIC_OPTIONAL.values())}) or BloFin "
            f"{list(BLOFIN_REQUIRED.values())} (+ optional vol, volCurrencyQuote, confirm)"
        )
    mapping = {out: by_lower[src.lower()] for out, src in required.items()}
    for out, src in optional.items():
        if src.lower() in by_lower:
            mapping[out] = by_lower[src.lower()]
    confirm = by_lower.get("confirm") if layout == "blofin" else None
    return layout, mapping, confirm


def _to_series(column: pa.ChunkedArray) -> pd.Series:
    """Arrow -> pandas without a Python object per value (strings stay Arrow-backed)."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return pd.Series(pd.arrays.ArrowStringArray(column))
    is_string_view = getattr(pa.types, "is_string_view", None)  # pyarrow >= 16
    if is_string_view is not None and is_string_view(column.type):
        return pd.Series(pd.arrays.ArrowStringArray(column.cast(pa.large_string())))
    return pd.Series(column.to_numpy())


def _collect(reader: pa.RecordBatchReader, rows: int) -> dict[str, pd.Series]:
    """Fill preallocated numpy columns batch by batch; text stays in compact Arrow chunks.

    Peak memory is the final frame plus one batch, not the frame twice.
    """
    names = reader.schema.names
    numbers: dict[str, np.ndarray] = {}
    texts: dict[str, list[pa.Array]] = {}
    for name, field_type in zip(names, reader.schema.types, strict=True):
        if pa.types.is_floating(field_type):
            numbers[name] = np.empty(rows, dtype=np.float64)
        elif pa.types.is_integer(field_type):
            numbers[name] = np.empty(rows, dtype=np.int64)
        else:
            texts[name] = []
    offset = 0
    for batch in reader:
        size = batch.num_rows
        if offset + size > rows:
            raise RuntimeError(f"file changed while reading: more than {rows} rows")
        for index, name in enumerate(names):
            column = batch.column(index)
            if name in numbers:
                target = numbers[name][offset : offset + size]
                target[:] = column.to_numpy(zero_copy_only=False)
            else:
                texts[name].append(column)
        offset += size
    if offset != rows:
        raise RuntimeError(f"file changed while reading: expected {rows} rows, got {offset}")
    data: dict[str, pd.Series] = {}
    for name in names:
        if name == "__ts_us":
            nanos = numbers.pop(name)
            np.multiply(nanos, 1000, out=nanos)
            data["ts"] = pd.Series(
                pd.DatetimeIndex(nanos.view("datetime64[ns]")).tz_localize("UTC")
            )
        elif name in numbers:
            data[name] = pd.Series(numbers.pop(name))
        else:
            chunks = texts.pop(name)
            data[name] = _to_series(pa.chunked_array(chunks, type=reader.schema.field(name).type))
    return data


def read_candles_file(path: str | Path) -> pd.DataFrame:
    """Read a CSV/Parquet candle file into the raw contract layout + ``origin`` for validation.

    ``origin`` is "<file name> row <n>" with n the 1-based data row (header excluded, counted
    before unconfirmed rows are dropped). ``frame.attrs`` carries ``rows_read``,
    ``unconfirmed_dropped``, ``layout`` and ``source``. Raises CandleValidationError for a
    missing column, a ts column mixing epoch units or a row with more fields than the header
    (values shifted), ValueError for an unknown file type.
    """
    path = Path(path)
    file_format = _file_format(path)
    if not path.is_file():
        raise FileNotFoundError(f"candle file {path} does not exist")
    con = duckdb_connection()
    try:
        return _read(con, path, file_format)
    except duckdb.Error as exc:
        raise CandleValidationError(
            f"{path.name}: DuckDB cannot read it as {file_format} (its 'Line' numbers count "
            f"the header as line 1): {exc}"
        ) from exc
    finally:
        con.close()


def _read(con: duckdb.DuckDBPyConnection, path: Path, file_format: str) -> pd.DataFrame:
    """A cheap profile first, so columns whose every value parses come back typed, not text."""
    source = _source_sql(path, file_format)
    described = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    types = {row[0]: str(row[1]) for row in described}
    if file_format == "csv":
        _refuse_extra_fields(con, path, source, list(types))
    layout, mapping, confirm = _resolve_layout(path, types)
    value_columns = [c for c in (*VALUE_COLUMNS, *BLOFIN_OPTIONAL) if c in mapping]
    ts_column = (quote_identifier(mapping["ts"]), types[mapping["ts"]])
    numbers = {c: (quote_identifier(mapping[c]), types[mapping[c]]) for c in value_columns}
    is_open = (
        f"coalesce(trim(CAST({quote_identifier(confirm)} AS VARCHAR)), '') = '0'"
        if confirm
        else "false"
    )
    con.execute(f"CREATE TEMP VIEW source_rows AS SELECT *, {is_open} AS __open FROM {source}")
    counts = _profile(con, ts_column, numbers, has_confirm=bool(confirm))

    numbered = "(SELECT *, row_number() OVER () AS __rn FROM source_rows)"
    _refuse_mixed_timestamps(con, path, numbered, ts_column, counts)
    query = _typed_query(path, numbered, mapping, ts_column, numbers, counts)
    data = _collect(stream_arrow(con, query), counts["rows_kept"])
    frame = pd.DataFrame(data, copy=False)
    frame.attrs.update(
        {
            "source": str(path),
            "layout": layout,
            "rows_read": counts["rows_kept"] + counts["dropped"],
            "unconfirmed_dropped": counts["dropped"],
        }
    )
    return frame


def _profile(
    con: duckdb.DuckDBPyConnection,
    ts_column: tuple[str, str],
    numbers: dict[str, tuple[str, str]],
    *,
    has_confirm: bool,
) -> dict[str, int]:
    """Pass 1 (parallel, no row numbers): how many values of each column parse, which ts kinds."""
    parsed = parse_query(
        "(SELECT * FROM source_rows WHERE NOT __open)", ts=ts_column, numbers=numbers
    )
    profile: dict[str, str] = {"rows_kept": "count(*)"}
    for column in numbers:
        status = quote_identifier("__s_" + column)
        profile[f"bad_{column}"] = f"count(*) FILTER (WHERE {status} <> {NUM_OK})"
    good_kinds = ", ".join(str(kind) for kind in TS_GOOD_KINDS)
    profile["bad_ts"] = f"count(*) FILTER (WHERE __ts_kind NOT IN ({good_kinds}))"
    for kind in TS_GOOD_KINDS:
        profile[f"kind_{kind}"] = f"count(*) FILTER (WHERE __ts_kind = {kind})"
    profile["dropped"] = "0"
    aggregates = ", ".join(
        f"{expr} AS {quote_identifier(alias)}" for alias, expr in profile.items()
    )
    row = con.execute(f"SELECT {aggregates} FROM ({parsed})").fetchall()[0]
    counts = dict(zip(profile, (int(v) for v in row), strict=True))
    if has_confirm:
        counts["dropped"] = int(
            con.execute("SELECT count(*) FROM source_rows WHERE __open").fetchall()[0][0]
        )
    return counts


def _refuse_mixed_timestamps(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    numbered: str,
    ts_column: tuple[str, str],
    counts: dict[str, int],
) -> None:
    """The epoch unit is decided for the whole column, so a mixed one is refused with rows."""
    present = [k for k in TS_TEXT_KINDS if counts[f"kind_{k}"]]
    if len(present) <= 1:
        return
    with_kinds = parse_query(numbered, ts=ts_column, numbers={})
    examples = {
        kind: [
            f"row {r[0]}"
            for r in con.execute(
                f"SELECT __rn FROM ({with_kinds}) WHERE NOT __open AND __ts_kind = {kind} "
                "ORDER BY __rn LIMIT 5"
            ).fetchall()
        ]
        for kind in present
    }
    raise CandleValidationError(f"{path.name}: {mixed_timestamp_message(examples)}")


def _typed_query(
    path: Path,
    numbered: str,
    mapping: dict[str, str],
    ts_column: tuple[str, str],
    numbers: dict[str, tuple[str, str]],
    counts: dict[str, int],
) -> str:
    """Pass 2 (ordered, numbered): typed where every value parsed, text where validation looks."""
    select = [f"CAST({quote_identifier(mapping['inst_id'])} AS VARCHAR) AS inst_id"]
    good = [k for k in TS_GOOD_KINDS if counts[f"kind_{k}"]]
    if counts["bad_ts"] == 0 and len(good) == 1:
        select.append(f"{epoch_micros_sql(*ts_column, good[0])} AS __ts_us")
    else:
        select.append(f"CAST({ts_column[0]} AS VARCHAR) AS ts")
    for column, (source_column, duck_type) in numbers.items():
        output = quote_identifier(column)
        if counts[f"bad_{column}"] == 0:
            select.append(f"{number_value_sql(source_column, duck_type)} AS {output}")
        else:
            select.append(f"CAST({source_column} AS VARCHAR) AS {output}")
    select.append(f"{quote_literal(path.name + ' row ')} || CAST(__rn AS VARCHAR) AS origin")
    return f"SELECT {', '.join(select)} FROM {numbered} WHERE NOT __open"
