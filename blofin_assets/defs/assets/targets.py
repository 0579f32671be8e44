"""targets: the five labels, built from candles t+1..t+H only."""

from typing import Any

import duckdb
from dagster import MaterializeResult, MetadataValue, asset

from blofin_assets.defs.assets.candles import candles
from blofin_assets.defs.assets.metadata import OWNERS, refresh_derived
from blofin_assets.defs.resources import BlofinSettings, DuckDBWarehouse
from blofin_assets.ml.tables import TARGETS_CODE_VERSION, target_table
from blofin_assets.storage.training_rows import label_balance


@asset(
    deps=[candles],
    group_name="ml_data",
    description="Labels per (inst_id, ts) from candles t+1..t+H (H = BLOFIN_HORIZON, default 5) "
    "plus the persistence baselines known at t, table main.targets. The last H rows of each "
    "instrument have no label and are dropped, never filled; hourly runs append the rows whose "
    "label became known.",
    kinds={"duckdb", "pandas"},
    owners=OWNERS,
    code_version=TARGETS_CODE_VERSION,
    pool="duckdb_writer",
)
def targets(settings: BlofinSettings, warehouse: DuckDBWarehouse) -> MaterializeResult:
    def describe(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        balance = label_balance(con)
        return {
            "horizon_bars": MetadataValue.int(settings.horizon),
            "direction_up_share": MetadataValue.float(balance["direction_up_share"]),
            "momentum_class_shares": MetadataValue.json(balance["momentum_class_shares"]),
        }

    return refresh_derived(target_table(settings), settings, warehouse, describe)
