"""features: trailing-window, scale-free indicators per (inst_id, ts) over the training window."""

from dagster import MaterializeResult, MetadataValue, asset

from blofin_assets.defs.assets.candles import candles
from blofin_assets.defs.assets.metadata import OWNERS, refresh_derived
from blofin_assets.defs.resources import BlofinSettings, DuckDBWarehouse
from blofin_assets.ml.features import (
    FEATURE_COLUMNS,
)
from blofin_assets.ml.tables import FEATURES_CODE_VERSION, feature_table


@asset(
    deps=[candles],
    group_name="ml_data",
    description="Trailing-window indicators (TA-Lib and vectorised numpy), past and present "
    "only, keyed by (inst_id, ts), table main.features. Warm-up rows are dropped, never filled. "
    "Hourly runs append the new bars' rows and drop those that left the window; the table is "
    "rebuilt when code, settings or past candles change (write_mode/write_reason say which).",
    kinds={"duckdb", "pandas"},
    owners=OWNERS,
    code_version=FEATURES_CODE_VERSION,
    pool="duckdb_writer",
)
def features(settings: BlofinSettings, warehouse: DuckDBWarehouse) -> MaterializeResult:
    return refresh_derived(
        feature_table(settings),
        settings,
        warehouse,
        lambda _: {
            "feature_count": MetadataValue.int(len(FEATURE_COLUMNS)),
            "feature_columns": MetadataValue.json(FEATURE_COLUMNS),
        },
    )
