"""model_predictions: the served models' latest predictions per instrument."""

from collections.abc import Sequence

from dagster import AssetsDefinition, DataVersion, MaterializeResult, MetadataValue, asset

from blofin_assets.defs.assets.features import features
from blofin_assets.defs.assets.metadata import OWNERS, provenance
from blofin_assets.defs.assets.results import stored_column_schema
from blofin_assets.defs.resources import DuckDBWarehouse, ModelStoreResource
from blofin_assets.serving.scoring import prediction_preview, score_latest
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
        "*served* model (sha256-verified before loading), table main.model_predictions; a "
        "classifier's predicted class named in prediction_label (momentum decelerating / "
        "neutral / accelerating, direction up / down). Append-only, idempotent on (inst_id, "
        "ts, model_name, model_version).",
        kinds={"duckdb", "scikit-learn"},
        owners=OWNERS,
        code_version="predictions-2",
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
            schema = stored_column_schema(con, "model_predictions")
        return MaterializeResult(
            metadata={
                "rows_added": MetadataValue.int(added),
                "dagster/row_count": MetadataValue.int(int(total)),
                "dagster/table_name": "main.model_predictions",
                "dagster/column_schema": MetadataValue.table_schema(schema),
                "bar_ts": str(latest["ts"].max()),
                **provenance(sources),
                "latest": MetadataValue.md(prediction_preview(scored).to_markdown()),
            },
            data_version=DataVersion(f"{total}:{latest['ts'].max()}"),
        )

    return model_predictions
