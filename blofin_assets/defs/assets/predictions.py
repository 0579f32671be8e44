"""model_predictions: the served models' latest predictions per instrument."""

from collections.abc import Sequence

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)

from blofin_assets.defs.assets.features import features
from blofin_assets.defs.assets.metadata import OWNERS, provenance, stored_column_schema
from blofin_assets.defs.resources import BlofinSettings, DuckDBWarehouse, ModelStoreResource
from blofin_assets.ml.ensemble import MAY_SERVE_NOTHING
from blofin_assets.serving.scoring import prediction_preview, score_latest
from blofin_assets.storage.candles import candle_sources
from blofin_assets.storage.predictions import append_predictions, prediction_count
from blofin_assets.storage.training_rows import latest_feature_rows


def flag_metadata(scored: pd.DataFrame) -> dict[str, object]:
    """How many of this run's predictions are outliers, of unknown outlierness, expired."""
    expired = scored[scored["expired"].fillna(False).astype(bool)]
    return {
        "outliers": MetadataValue.int(int(scored["outlier"].fillna(False).sum())),
        "outlier_unknown": MetadataValue.int(int(scored["outlier"].isna().sum())),
        "expired": MetadataValue.int(len(expired)),
        "expired_models": MetadataValue.json(
            {
                name: f"{version}, {age:.1f} h old"
                for name, version, age in expired[
                    ["model_name", "model_version", "model_age_hours"]
                ]
                .drop_duplicates("model_name")
                .itertuples(index=False)
            }
        ),
    }


def build_predictions_asset(
    results_asset: AssetsDefinition, model_names: Sequence[str]
) -> AssetsDefinition:
    @asset(
        deps=[results_asset, features],
        group_name="serving",
        description="For each instrument, the latest closed bar's features scored by each "
        "*served* model (sha256-verified before loading), table main.model_predictions; a "
        "classifier's predicted class named in prediction_label (momentum decelerating / "
        "neutral / accelerating, direction up / down); `outlier` when the bar's features lie "
        "outside the version's training rows, `expired` when the version is older than "
        "BLOFIN_MODEL_MAX_AGE_HOURS. Append-only, idempotent on (inst_id, ts, model_name, "
        "model_version).",
        kinds={"duckdb", "scikit-learn"},
        owners=OWNERS,
        code_version="predictions-3",
        pool="duckdb_writer",
    )
    def model_predictions(
        context: AssetExecutionContext,
        settings: BlofinSettings,
        warehouse: DuckDBWarehouse,
        model_store: ModelStoreResource,
    ) -> MaterializeResult:
        with warehouse.connect(read_only=True) as con:
            latest = latest_feature_rows(con)
            sources = candle_sources(con)
        store = model_store.store()
        # The ensemble serves nothing until it beats its members: said here and in the log. A
        # model of the five with nothing served still fails this step (score_latest raises).
        unserved = [
            name
            for name in model_names
            if name in MAY_SERVE_NOTHING and store.served_version(name) is None
        ]
        for name in unserved:
            context.log.warning(f"{name}: no version is served, so it predicts nothing")
        scored = score_latest(
            latest,
            [name for name in model_names if name not in unserved],
            model_store.models_dir,
            now=settings.now(),
            max_age_hours=settings.model_max_age_hours,
        )
        with warehouse.connect() as con:
            added = append_predictions(con, scored)
            total = prediction_count(con)
            schema = stored_column_schema(con, "model_predictions")
        flags = flag_metadata(scored)
        for name, text in flags["expired_models"].data.items():
            context.log.warning(
                f"{name} served version {text}: older than BLOFIN_MODEL_MAX_AGE_HOURS="
                f"{settings.model_max_age_hours:g}; its predictions are marked expired"
            )
        return MaterializeResult(
            metadata={
                "rows_added": MetadataValue.int(added),
                "dagster/row_count": MetadataValue.int(int(total)),
                "dagster/table_name": "main.model_predictions",
                "dagster/column_schema": MetadataValue.table_schema(schema),
                "bar_ts": str(latest["ts"].max()),
                "unserved_models": ", ".join(unserved) or "none",
                **flags,
                **provenance(sources),
                "latest": MetadataValue.md(prediction_preview(scored).to_markdown()),
            },
            data_version=DataVersion(f"{total}:{latest['ts'].max()}"),
        )

    return model_predictions
