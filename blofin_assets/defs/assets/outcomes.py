"""prediction_outcomes: every served version scored on the bars it predicted, once known."""

from collections.abc import Sequence

from dagster import AssetsDefinition, DataVersion, MaterializeResult, MetadataValue, asset

from blofin_assets.defs.assets.features import features
from blofin_assets.defs.assets.metadata import OWNERS, provenance
from blofin_assets.defs.assets.targets import targets
from blofin_assets.defs.resources import BlofinSettings, DuckDBWarehouse, ModelStoreResource
from blofin_assets.forward.live import pending_live, score_pending
from blofin_assets.storage.candles import candle_sources
from blofin_assets.storage.outcomes import OUTCOMES_TABLE, append_outcomes, outcomes_size


def build_outcomes_asset(
    results_asset: AssetsDefinition, model_names: Sequence[str]
) -> AssetsDefinition:
    """After the results: this hour's training is recorded before the record is extended."""

    @asset(
        deps=[results_asset, features, targets],
        group_name="forward_record",
        description="The forward record, table main.prediction_outcomes: each version that "
        "was served predicts every bar of every configured instrument after the newest bar it "
        "saw (data_until) until the next promoted version's, scored against the label and the "
        "version's strongest naive rule once the horizon has closed, each bar flagged "
        "`outlier` when its features lie outside the version's training rows. Append-only, "
        "idempotent on (inst_id, ts, model_name, model_version, mode).",
        kinds={"duckdb"},
        owners=OWNERS,
        code_version="outcomes-2",
        pool="duckdb_writer",
    )
    def prediction_outcomes(
        settings: BlofinSettings, warehouse: DuckDBWarehouse, model_store: ModelStoreResource
    ) -> MaterializeResult:
        store = model_store.store()
        with warehouse.connect(read_only=True) as con:
            pending = pending_live(con, store, model_names, settings.instrument_list())
            sources = candle_sources(con)
        outcomes = score_pending(pending, store.root, scored_at=settings.now())
        with warehouse.connect() as con:
            added = append_outcomes(con, outcomes)
            total, newest = outcomes_size(con)
        scored = outcomes.groupby("model_name").size()
        versions = sorted({f"{p.span.model_name}/{p.span.version}" for p in pending})
        return MaterializeResult(
            metadata={
                "rows_added": MetadataValue.int(added),
                "dagster/row_count": MetadataValue.int(total),
                "dagster/table_name": f"main.{OUTCOMES_TABLE}",
                **{
                    f"scored_{name}": MetadataValue.int(int(scored.get(name, 0)))
                    for name in model_names
                },
                # Of this run's outcomes: outside the version's training rows, and unknown (a
                # version saved without an outlier reference).
                "outliers_scored": MetadataValue.int(
                    int(outcomes["outlier"].fillna(False).astype(bool).sum())
                ),
                "outlier_unknown": MetadataValue.int(int(outcomes["outlier"].isna().sum())),
                "newest_bar_scored": str(newest) if newest is not None else "none",
                "versions_scored": MetadataValue.json(versions),
                **provenance(sources),
            },
            data_version=DataVersion(f"{total}:{newest}"),
        )

    return prediction_outcomes
