"""ml_model_results: the append-only history of every training, one row per model version."""

from collections.abc import Sequence

from dagster import AssetsDefinition, DataVersion, MaterializeResult, MetadataValue, asset

from blofin_assets.defs.assets.metadata import OWNERS
from blofin_assets.defs.resources import DuckDBWarehouse, ModelStoreResource
from blofin_assets.ml.publish import result_row
from blofin_assets.ml.store import ModelStore
from blofin_assets.storage.results import append_results, migrate_results, recorded_versions


def unrecorded_rows(
    store: ModelStore, model_names: Sequence[str], recorded: set[tuple[str, str]]
) -> list[dict[str, object]]:
    """Rows for every version on disk that the table lacks: a run that died after writing a
    model but before recording it loses nothing, the next run records it."""
    rows = []
    for name in model_names:
        for version in store.version_names(name):
            if (name, version) not in recorded:  # only new versions' files are opened
                metadata = store.read_metadata(name, version)
                path = store.version_dir(name, metadata["version"]) / "model.pkl"
                rows.append(result_row(metadata, str(path)))
    return rows


def build_results_asset(model_assets: Sequence[AssetsDefinition]) -> AssetsDefinition:
    """The results table depends on every model asset it records."""
    model_names = [a.key.to_user_string() for a in model_assets]

    @asset(
        deps=model_assets,
        group_name="results",
        description="Append-only history of every training (table main.ml_model_results), one row "
        "per model version with status promoted/rejected/interrupted, metrics, baseline and "
        "skill. Rebuilt from the model history folders, idempotent on (model_name, version).",
        kinds={"duckdb"},
        owners=OWNERS,
        code_version="results-1",
        pool="duckdb_writer",
    )
    def ml_model_results(
        warehouse: DuckDBWarehouse, model_store: ModelStoreResource
    ) -> MaterializeResult:
        store = model_store.store()
        with warehouse.connect() as con:
            migrate_results(con)
            added = append_results(con, unrecorded_rows(store, model_names, recorded_versions(con)))
            total, max_id = con.execute(
                "SELECT count(*), coalesce(max(id), 0) FROM ml_model_results"
            ).fetchall()[0]
            latest = con.execute(
                "SELECT id, model_name, status, primary_metric, primary_value, baseline_value, "
                "skill FROM ml_model_results ORDER BY id DESC LIMIT 10"
            ).df()
        return MaterializeResult(
            metadata={
                "rows_added": MetadataValue.int(added),
                "dagster/row_count": MetadataValue.int(int(total)),
                "dagster/table_name": "main.ml_model_results",
                "latest": MetadataValue.md(latest.to_markdown(index=False, floatfmt=".4f")),
            },
            data_version=DataVersion(f"{total}:{max_id}"),
        )

    return ml_model_results
