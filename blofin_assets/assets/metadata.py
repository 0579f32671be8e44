"""Metadata shared by the table assets: column schema and row count for the catalog."""

from typing import Any

import pandas as pd
from dagster import MetadataValue, TableColumn, TableSchema

OWNERS = ["team:quant-ml"]


def table_metadata(frame: pd.DataFrame, table: str, db_path: str) -> dict[str, Any]:
    """What the Dagster catalog shows for a DuckDB table asset."""
    schema = TableSchema(
        columns=[
            TableColumn(name=str(column), type=str(dtype)) for column, dtype in frame.dtypes.items()
        ]
    )
    return {
        "dagster/column_schema": schema,
        "dagster/row_count": MetadataValue.int(len(frame)),
        "dagster/table_name": f"main.{table}",
        "duckdb_path": MetadataValue.path(db_path),
    }


def time_span(frame: pd.DataFrame) -> dict[str, Any]:
    if frame.empty:
        return {"first_ts": "none", "last_ts": "none"}
    return {"first_ts": str(frame["ts"].min()), "last_ts": str(frame["ts"].max())}


def provenance(sources: list[str]) -> dict[str, Any]:
    """Synthetic data is labelled on every materialization, never only on the first."""
    synthetic = "demo" in sources
    return {
        "data_sources": ", ".join(sources) or "none",
        "synthetic": MetadataValue.bool(synthetic),
        "data_label": "SYNTHETIC demo market" if synthetic else "real market data",
    }
