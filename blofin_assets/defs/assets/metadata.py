"""Metadata shared by the table assets: column schema and row count for the catalog."""

from typing import Any

from dagster import MetadataValue, TableColumn, TableSchema

from blofin_assets.storage.derived import Refresh

OWNERS = ["team:quant-ml"]


def derived_table_metadata(refresh: Refresh, table: str, db_path: str) -> dict[str, Any]:
    """What the Dagster catalog shows for features/targets, and how this run wrote them."""
    schema = TableSchema(
        columns=[TableColumn(name=name, type=kind) for name, kind in refresh.schema]
    )
    return {
        "dagster/column_schema": schema,
        "dagster/row_count": MetadataValue.int(refresh.rows),
        "dagster/table_name": f"main.{table}",
        "duckdb_path": MetadataValue.path(db_path),
        "first_ts": str(refresh.first_ts) if refresh.first_ts is not None else "none",
        "last_ts": str(refresh.last_ts) if refresh.last_ts is not None else "none",
        "window_start": str(refresh.window_start),
        "write_mode": refresh.mode,
        "write_reason": refresh.reason,
        "rows_added": MetadataValue.int(refresh.rows_added),
        "rows_dropped": MetadataValue.int(refresh.rows_dropped),
        "candles_read": MetadataValue.int(refresh.candles_read),
        "candle_fingerprints": refresh.candle_fingerprint_source,
        **{
            f"{phase}_seconds": MetadataValue.float(seconds)
            for phase, seconds in refresh.seconds.items()
        },
    }


def provenance(sources: list[str]) -> dict[str, Any]:
    """Synthetic data is labelled on every materialization, never only on the first."""
    synthetic = "demo" in sources
    return {
        "data_sources": ", ".join(sources) or "none",
        "synthetic": MetadataValue.bool(synthetic),
        "data_label": "SYNTHETIC demo market" if synthetic else "real market data",
    }
