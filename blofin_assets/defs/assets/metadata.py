"""What the table assets share: the refresh of a derived table and the catalog metadata
(column schema, row count, provenance) every one of them reports."""

from collections.abc import Callable
from typing import Any

import duckdb
from dagster import DataVersion, MaterializeResult, MetadataValue, TableColumn, TableSchema

from blofin_assets.defs.resources import BlofinSettings, DuckDBWarehouse
from blofin_assets.quality.tables import training_window_covered
from blofin_assets.storage.candles import candle_sources
from blofin_assets.storage.derived import DerivedTable, Refresh, refresh_table
from blofin_assets.storage.sql import described_columns
from blofin_assets.storage.warehouse import check_clock, check_identity

OWNERS = ["team:quant-ml"]
TUNING_GROUP = "tuning"  # the <model>_params assets: the tune_models job, never the hourly one


def params_asset_name(model_name: str) -> str:
    """The asset holding a model's parameter set in force (assets/params.py)."""
    return f"{model_name}_params"


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


def refresh_derived(
    table: DerivedTable,
    settings: BlofinSettings,
    warehouse: DuckDBWarehouse,
    describe: Callable[[duckdb.DuckDBPyConnection], dict[str, Any]] | None = None,
) -> MaterializeResult:
    """Bring features or targets up to date and report it; ``describe`` adds the table's own
    metadata, read on the same connection as the write.

    Refused first, like candles, when the file holds another bar size or bars after "now":
    a table of either would train on what the run did not ask for.
    """
    bar = settings.bar_delta()
    with warehouse.connect() as con:
        check_identity(con, bar=settings.bar)
        check_clock(con, now=settings.now(), bar=bar, as_of=settings.as_of)
        refresh = refresh_table(con, table, training_days=settings.training_days, bar=bar)
        coverage = training_window_covered(
            con,
            table.name,
            training_days=settings.training_days,
            bar=bar,
            warmup_bars=table.warmup_bars,
        )
        sources = candle_sources(con)
        own = describe(con) if describe is not None else {}
    return MaterializeResult(
        metadata={
            **derived_table_metadata(refresh, table.name, warehouse.path),
            "instruments": MetadataValue.json(list(table.instruments)),
            "window_days_asked": MetadataValue.int(settings.training_days),
            "window_days_covered": MetadataValue.float(coverage.metadata["window_days_covered"]),
            "window_coverage": coverage.description,
            **provenance(sources),
            **own,
        },
        data_version=DataVersion(refresh.data_version),
    )


def stored_column_schema(con: duckdb.DuckDBPyConnection, table: str) -> TableSchema:
    """The catalog's column schema read from the stored table, descriptions from its DuckDB
    comments: what the catalog shows is what a query of the file finds."""
    return TableSchema(
        columns=[
            TableColumn(name=name, type=kind, description=comment or None)
            for name, kind, comment in described_columns(con, table)
        ]
    )
