"""targets: the five labels, built from candles t+1..t+H only."""

from dagster import DataVersion, MaterializeResult, MetadataValue, asset

from blofin_assets import warehouse as wh
from blofin_assets.assets.candles import candles
from blofin_assets.assets.metadata import OWNERS, provenance, table_metadata, time_span
from blofin_assets.assets.window import read_candle_window
from blofin_assets.ml.dataset import target_table
from blofin_assets.resources import BlofinSettings, DuckDBWarehouse


@asset(
    deps=[candles],
    group_name="ml_data",
    description="Labels per (inst_id, ts) from candles t+1..t+H (H = BLOFIN_HORIZON, default 5) "
    "plus the persistence baselines known at t, table main.targets. The last H rows of each "
    "instrument have no label and are dropped, never filled.",
    kinds={"duckdb", "pandas"},
    owners=OWNERS,
    code_version="targets-1",
    pool="duckdb_writer",
)
def targets(settings: BlofinSettings, warehouse: DuckDBWarehouse) -> MaterializeResult:
    window = read_candle_window(settings, warehouse)
    table = target_table(window.candles, window.start, settings.horizon)
    if table.empty:
        raise ValueError(f"no labelled rows from {len(window.candles)} candles")
    with warehouse.connect() as con:
        wh.replace_table(con, "targets", table)
    return MaterializeResult(
        metadata={
            **table_metadata(table, "targets", warehouse.path),
            **time_span(table),
            **provenance(window.sources),
            "horizon_bars": MetadataValue.int(settings.horizon),
            "direction_up_share": MetadataValue.float(float(table["target_direction"].mean())),
            "momentum_class_shares": MetadataValue.json(
                {
                    str(k): round(float(v), 4)
                    for k, v in table["target_momentum"].value_counts(normalize=True).items()
                }
            ),
        },
        data_version=DataVersion(wh.frame_fingerprint(table)),
    )
