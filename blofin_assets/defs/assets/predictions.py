"""model_predictions: the served models' latest predictions per instrument."""

from collections.abc import Sequence

from dagster import AssetsDefinition, DataVersion, MaterializeResult, MetadataValue, asset

from blofin_assets.defs.assets.features import features
from blofin_assets.defs.assets.metadata import OWNERS, provenance
from blofin_assets.defs.resources import DuckDBWarehouse, ModelStoreResource
from blofin_assets.serving.scoring import score_latest
from blofin_assets.storage.candles import candle_sources
from blofin_assets.storage.predictions import append_predictions, prediction_count
from blofin_assets.storage.training_rows import latest_feature_rows


def build_predictions_asset(
    results_asset: AssetsDefinition, model_names: Sequence[str]
) -> AssetsDefinition:
    @asset(
        deps=[results_asset, features],
        group_name="serving",
        description="For each instrument, the latest closed bar's features scored by each "
        "*served* model (sha256-verified before loading), table main.model_predictions; "
        "append-only, idempotent on (inst_id, ts, model_name, model_version).",
        kinds={"duckdb", "scikit-learn"},
        owners=OWNERS,
        code_version="predictions-1",
        pool="duckdb_writer",
    )
    def model_predictions(
        warehouse: DuckDBWarehouse, model_store: ModelStoreResource
    ) -> MaterializeResult:
        with warehouse.connect(read_only=True) as con:
            latest = latest_feature_rows(con)
            sources = candle_sources(con)
        scored = score_latest(latest, model_names, model_store.models_dir)
        with warehouse.connect() as con:
            added = append_predictions(con, scored)
            total = prediction_count(con)
        preview = scored.pivot_table(
            index="inst_id", columns="model_name", values="prediction", aggfunc="first"
        )
        return MaterializeResult(
            metadata={
                "rows_added": MetadataValue.int(added),
                "dagster/row_count": MetadataValue.int(int(total)),
                "dagster/table_name": "main.model_predictions",
                "bar_ts": str(latest["ts"].max()),
                **provenance(sources),
                "latest": MetadataValue.md(preview.to_markdown(floatfmt=".6g")),
            },
            data_version=DataVersion(f"{total}:{latest['ts'].max()}"),
        )

    return model_predictions
