"""ml_model_results: the append-only history of every training, one row per model version."""

from collections.abc import Sequence

from dagster import (
    AssetsDefinition,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)

from blofin_assets.defs.assets.metadata import OWNERS, stored_column_schema
from blofin_assets.defs.resources import DuckDBWarehouse, ModelStoreResource
from blofin_assets.ml.result_rows import unrecorded_rows
from blofin_assets.storage.results import (
    append_results,
    latest_results,
    migrate_results,
    recorded_versions,
    results_size,
)


def build_results_asset(model_assets: Sequence[AssetsDefinition]) -> AssetsDefinition:
    """The results table depends on every model asset it records."""
    model_names = [a.key.to_user_string() for a in model_assets]

    @asset(
        deps=model_assets,
        group_name="results",
        description="Append-only history of every training (table main.ml_model_results), one row "
        "per model version with status promoted/rejected/interrupted; every metric as test_<m> "
        "and train_<m> (the seed's f1, mae, ... hold the test values); the headline: "
        "primary_metric, primary_value in metric_unit, baseline_name and baseline_value, skill, "
        "skill_p_value, beyond_noise. Every column is described (DuckDB comments, column "
        "schema). Rebuilt from the model history folders, idempotent on (model_name, version).",
        kinds={"duckdb"},
        owners=OWNERS,
        code_version="results-2",
        pool="duckdb_writer",
    )
    def ml_model_results(
        warehouse: DuckDBWarehouse, model_store: ModelStoreResource
    ) -> MaterializeResult:
        store = model_store.store()
        with warehouse.connect() as con:
            migrate_results(con)
            added = append_results(con, unrecorded_rows(store, model_names, recorded_versions(con)))
            total, max_id = results_size(con)
            latest = latest_results(con)
            schema = stored_column_schema(con, "ml_model_results")
        return MaterializeResult(
            metadata={
                "rows_added": MetadataValue.int(added),
                "dagster/row_count": MetadataValue.int(int(total)),
                "dagster/table_name": "main.ml_model_results",
                "dagster/column_schema": MetadataValue.table_schema(schema),
                "latest": MetadataValue.md(latest.to_markdown(index=False)),
            },
            data_version=DataVersion(f"{total}:{max_id}"),
        )

    return ml_model_results
