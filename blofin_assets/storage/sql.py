"""SQL text and catalog helpers shared by every DuckDB connection of the product."""

from __future__ import annotations

from collections.abc import Sequence
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
