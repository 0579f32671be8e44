"""SQL text and catalog helpers shared by every DuckDB connection of the product."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import duckdb


def quote_identifier(name: str) -> str:
    """A table or column name as a DuckDB identifier.

    Names come from our code and from the headers of user files ("Open Time"), so quoting is
    by the SQL rule (a double quote doubled), which no name can escape; an empty name or a NUL
    byte is refused because DuckDB cannot store it.
    """
    if not name or "\x00" in name:
        raise ValueError(f"refusing SQL identifier {name!r}")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """A string as a SQL literal (a single quote doubled), for the few places DuckDB takes no
    parameter, such as a table function's file path."""
    return "'" + text.replace("'", "''") + "'"


def column_list(columns: Sequence[str], alias: str = "") -> str:
    """``a.x, a.y``: a select list of quoted columns, qualified by a table alias if given."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + quote_identifier(column) for column in columns)


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None) -> Any:
    """One value, with the result fully consumed: DuckDB refuses to register a frame on a
    connection that still holds an unfinished result (fetchone leaves it open)."""
    return con.execute(sql, params or []).fetchall()[0][0]


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(table_columns(con, table))


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """A main-schema table's (or view's) columns in order; [] when it does not exist.

    DuckDB's own catalog function, limited to this file's database: information_schema also
    lists same-named tables of ATTACHed databases, and answers about half as fast.
    """
    return [
        row[0]
        for row in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
            "AND schema_name = 'main' AND table_name = ? ORDER BY column_index",
            [table],
        ).fetchall()
    ]


# Column descriptions live in DuckDB itself (COMMENT ON COLUMN), so a table explains its
# columns to whoever opens the file, with or without this code or the Dagster catalog.
# ml_model_results and model_predictions both use them.
def described_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str, str]]:
    """(name, SQL type, comment) of a main-schema table's columns in order; '' where a column
    has no comment. What the catalog's column schema is built from: the stored table, not the
    code's idea of it."""
    rows = con.execute(
        "SELECT column_name, data_type, coalesce(comment, '') FROM duckdb_columns() "
        "WHERE database_name = current_database() AND schema_name = 'main' AND table_name = ? "
        "ORDER BY column_index",
        [table],
    ).fetchall()
    return [(str(name), str(kind), str(comment)) for name, kind, comment in rows]


def apply_column_comments(
    con: duckdb.DuckDBPyConnection, table: str, descriptions: Mapping[str, str]
) -> list[str]:
    """Write each described column's comment where the stored one differs; returns the columns
    changed. Only differences are written: this runs on every materialization, and an unchanged
    comment would still be a catalog write."""
    stored = {name: comment for name, _, comment in described_columns(con, table)}
    changed = []
    for column, text in descriptions.items():
        if not text:
            raise ValueError(f"{table}.{column}: a column description must not be empty")
        if column in stored and stored[column] != text:
            con.execute(
                f"COMMENT ON COLUMN {quote_identifier(table)}.{quote_identifier(column)} "
                f"IS {quote_literal(text)}"
            )
            changed.append(column)
    return changed
