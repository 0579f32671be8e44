"""features: trailing-window, scale-free indicators per (inst_id, ts) over the training window."""

from dagster import DataVersion, MaterializeResult, MetadataValue, asset

from blofin_assets import warehouse as wh
from blofin_assets.assets.candles import candles
from blofin_assets.assets.metadata import OWNERS, provenance, table_metadata, time_span
from blofin_assets.assets.window import read_candle_window
from blofin_assets.ml.dataset import feature_table
from blofin_assets.ml.features import FEATURE_COLUMNS
from blofin_assets.resources import BlofinSettings, DuckDBWarehouse


@asset(
    deps=[candles],
    group_name="ml_data",
    description="Trailing-window indicators (TA-Lib and vectorised numpy), past and present "
    "only, keyed by (inst_id, ts), table main.features. Warm-up rows are dropped, never filled.",
    kinds={"duckdb", "pandas"},
    owners=OWNERS,
    code_version="features-1",
    pool="duckdb_writer",
)
def features(settings: BlofinSettings, warehouse: DuckDBWarehouse) -> MaterializeResult:
    window = read_candle_window(settings, warehouse)
    table = feature_table(window.candles, window.start)
    if table.empty:
        raise ValueError(
            f"no feature rows: {len(window.candles)} candles read are fewer than the warm-up needs"
        )
    with warehouse.connect() as con:
        wh.replace_table(con, "features", table)
    return MaterializeResult(
        metadata={
            **table_metadata(table, "features", warehouse.path),
            **time_span(table),
            **provenance(window.sources),
            "feature_count": MetadataValue.int(len(FEATURE_COLUMNS)),
            "feature_columns": MetadataValue.json(FEATURE_COLUMNS),
            "candles_read": MetadataValue.int(len(window.candles)),
        },
        data_version=DataVersion(wh.frame_fingerprint(table)),
    )
