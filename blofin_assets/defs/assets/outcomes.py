"""prediction_outcomes: every served version scored on the bars it predicted, once known, and
the shadow record: the ensemble's rejected versions scored the same way, as mode 'shadow'."""

from collections.abc import Sequence

from dagster import AssetsDefinition, DataVersion, MaterializeResult, MetadataValue, asset

from blofin_assets.defs.assets.features import features
from blofin_assets.defs.assets.metadata import OWNERS, provenance
from blofin_assets.defs.assets.targets import targets
from blofin_assets.defs.resources import BlofinSettings, DuckDBWarehouse, ModelStoreResource
from blofin_assets.forward.live import (
    LIVE,
    SHADOW,
    SHADOW_MODELS,
    pending_outcomes,
    score_pending,
)
from blofin_assets.storage.candles import candle_sources
from blofin_assets.storage.outcomes import OUTCOMES_TABLE, append_outcomes, outcomes_size


def build_outcomes_asset(
    results_asset: AssetsDefinition,
    model_names: Sequence[str],
    shadow_names: Sequence[str] = SHADOW_MODELS,
) -> AssetsDefinition:
    """After the results: this hour's training is recorded before the record is extended.
    ``shadow_names``: the models (of ``model_names``) whose rejected versions are scored as
    mode 'shadow'; only the ensemble by default, as a rejected one of the five (a leak
    alarm) must not get a record that looks like a forward record."""
    shadowed = [name for name in model_names if name in shadow_names]

    @asset(
        deps=[results_asset, features, targets],
        group_name="forward_record",
        description="The forward record, table main.prediction_outcomes: each version that "
        "was served predicts every bar of every configured instrument after the newest bar it "
        "saw (data_until) until the next promoted version's, scored against the label and the "
        "version's strongest naive rule once the horizon has closed, each bar flagged "
        "`outlier` when its features lie outside the version's training rows (mode 'live'). "
        f"The rejected versions of {', '.join(shadowed) or 'no model'} are scored the same "
        "way on the bars they would have answered for, as mode 'shadow': never served. "
        "Append-only, idempotent on (inst_id, ts, model_name, model_version, mode).",
        kinds={"duckdb"},
        owners=OWNERS,
        code_version="outcomes-3",
        pool="duckdb_writer",
    )
    def prediction_outcomes(
        settings: BlofinSettings, warehouse: DuckDBWarehouse, model_store: ModelStoreResource
    ) -> MaterializeResult:
        store = model_store.store()
        with warehouse.connect(read_only=True) as con:
            instruments = settings.instrument_list()
            pending = pending_outcomes(con, store, model_names, instruments, shadowed)
            sources = candle_sources(con)
        outcomes = score_pending(pending, store.root, scored_at=settings.now())
        with warehouse.connect() as con:
            added = append_outcomes(con, outcomes)
            total, newest = outcomes_size(con)
        scored = outcomes.groupby(["mode", "model_name"]).size()
        versions = sorted(
            {f"{p.span.model_name}/{p.span.version}" for p in pending if p.mode == LIVE}
        )
        shadow = sorted(
            {f"{p.span.model_name}/{p.span.version}" for p in pending if p.mode == SHADOW}
        )
        return MaterializeResult(
            metadata={
                "rows_added": MetadataValue.int(added),
                "dagster/row_count": MetadataValue.int(total),
                "dagster/table_name": f"main.{OUTCOMES_TABLE}",
                **{
                    f"scored_{name}": MetadataValue.int(int(scored.get((LIVE, name), 0)))
                    for name in model_names
                },
                # The shadow record's new rows: rejected versions, never served.
                **{
                    f"shadow_scored_{name}": MetadataValue.int(int(scored.get((SHADOW, name), 0)))
                    for name in shadowed
                },
                # Of this run's outcomes: outside the version's training rows, and unknown (a
                # version saved without an outlier reference).
                "outliers_scored": MetadataValue.int(
                    int(outcomes["outlier"].fillna(False).astype(bool).sum())
                ),
                "outlier_unknown": MetadataValue.int(int(outcomes["outlier"].isna().sum())),
                "newest_bar_scored": str(newest) if newest is not None else "none",
                "versions_scored": MetadataValue.json(versions),
                "shadow_versions_scored": MetadataValue.json(shadow),
                **provenance(sources),
            },
            data_version=DataVersion(f"{total}:{newest}"),
        )

    return prediction_outcomes
