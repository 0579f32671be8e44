"""ml_model_results: the append-only history of every training, one row per model version."""


from dagster import DataVersion, MaterializeResult, MetadataValue, asset

from blofin_assets import warehouse as wh
from blofin_assets.assets.metadata import OWNERS
from blofin_assets.assets.models import MODEL_ASSETS
from blofin_assets.ml.publish import result_row
from blofin_assets.ml.specs import MODEL_SPECS
from blofin_assets.ml.store import ModelStore
from blofin_assets.resources import DuckDBWarehouse, ModelStoreResource


def unrecorded_rows(store: ModelStore, recorded: set[tuple[str, str]]) -> list[dict[str, object]]:
    """Rows for every version on disk that the table lacks: a run that died after writing a
    model but before recording it loses nothing, the next run records it."""
    rows = []
    for spec in MODEL_SPECS:
        for metadata in store.versions(spec.name):
            if (spec.name, metadata["version"]) not in recorded:
                path = store.version_dir(spec.name, metadata["version"]) / "model.pkl"
                rows.append(result_row(metadata, str(path)))
    return rows


@asset(
    deps=MODEL_ASSETS,
    group_name="results",
    description="Append-only history of every training (table main.ml_model_results), one row "
    "per model version with status promoted/rejected, metrics, baseline and skill. Rebuilt "
    "from the model history folders, idempotent on (model_name, version).",
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
        wh.migrate_results(con)
        added = wh.append_results(con, unrecorded_rows(store, wh.recorded_versions(con)))
        total, max_id = con.execute(
            "SELECT count(*), coalesce(max(id), 0) FROM ml_model_results"
        ).fetchone()
        latest = con.execute(
            "SELECT id, model_name, status, primary_metric, primary_value, baseline_value, skill "
            "FROM ml_model_results ORDER BY id DESC LIMIT 10"
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
