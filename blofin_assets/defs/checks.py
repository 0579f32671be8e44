"""Asset checks on the data tables and on the served model files.

Each returns through verdicts.asset_check_result, which also logs a failure at WARNING or
ERROR, so a headless run says it in its log, not only in the catalog.

The model gates (leakage, regression, skill) are declared on the model assets themselves,
because their verdict decides serving inside the same step; see assets/models.py.
"""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    asset_check,
)

from blofin_assets.defs.assets.candles import candles
from blofin_assets.defs.assets.features import features
from blofin_assets.defs.assets.targets import targets
from blofin_assets.defs.resources import BlofinSettings, DuckDBWarehouse, ModelStoreResource
from blofin_assets.defs.verdicts import asset_check_result
from blofin_assets.ml.ensemble import MAY_SERVE_NOTHING
from blofin_assets.ml.features import FEATURE_COLUMNS, FEATURE_WARMUP_BARS
from blofin_assets.ml.targets import NAIVE_COLUMNS, TARGET_COLUMNS
from blofin_assets.ml.verdict import Verdict
from blofin_assets.quality.candles import (
    candles_fresh,
    candles_gaps,
    candles_ohlc_valid,
    candles_unique,
)
from blofin_assets.quality.tables import (
    features_targets_aligned,
    finite_columns,
    labels_not_features,
    training_window_covered,
)
from blofin_assets.serving.integrity import served_record_problems


@asset_check(asset=candles, description="No duplicate (inst_id, ts) bars.")
def no_duplicate_bars(
    context: AssetCheckExecutionContext, warehouse: DuckDBWarehouse
) -> AssetCheckResult:
    with warehouse.connect(read_only=True) as con:
        return asset_check_result(context, candles_unique(con))


@asset_check(asset=candles, description="low <= open, close <= high; positive prices; volume >= 0.")
def ohlc_consistent(
    context: AssetCheckExecutionContext, warehouse: DuckDBWarehouse
) -> AssetCheckResult:
    with warehouse.connect(read_only=True) as con:
        return asset_check_result(context, candles_ohlc_valid(con))


@asset_check(asset=candles, description="Gaps longer than 5 bars, counted per instrument.")
def gaps(
    context: AssetCheckExecutionContext, settings: BlofinSettings, warehouse: DuckDBWarehouse
) -> AssetCheckResult:
    with warehouse.connect(read_only=True) as con:
        return asset_check_result(context, candles_gaps(con, settings.bar_delta()))


@asset_check(
    asset=candles,
    description="Newest closed bar of each configured instrument within 2 bars of now (live "
    "sources).",
)
def fresh(
    context: AssetCheckExecutionContext, settings: BlofinSettings, warehouse: DuckDBWarehouse
) -> AssetCheckResult:
    with warehouse.connect(read_only=True) as con:
        return asset_check_result(
            context,
            candles_fresh(
                con,
                now=settings.now(),
                bar=settings.bar_delta(),
                live=settings.source != "file",
                instruments=settings.instrument_list(),
            ),
        )


@asset_check(asset=features, description="No NaN or inf in any feature column.")
def features_finite(
    context: AssetCheckExecutionContext, warehouse: DuckDBWarehouse
) -> AssetCheckResult:
    with warehouse.connect(read_only=True) as con:
        return asset_check_result(context, finite_columns(con, "features", FEATURE_COLUMNS))


@asset_check(asset=features, description="No label or baseline column is among the features.")
def labels_not_in_features(
    context: AssetCheckExecutionContext, warehouse: DuckDBWarehouse
) -> AssetCheckResult:
    with warehouse.connect(read_only=True) as con:
        return asset_check_result(context, labels_not_features(con))


@asset_check(
    asset=features,
    additional_deps=[targets],
    description="Every label has features; only each instrument's last H rows lack a label.",
)
def rows_match_targets(
    context: AssetCheckExecutionContext, settings: BlofinSettings, warehouse: DuckDBWarehouse
) -> AssetCheckResult:
    with warehouse.connect(read_only=True) as con:
        return asset_check_result(context, features_targets_aligned(con, settings.horizon))


@asset_check(
    asset=features,
    name="training_window_covered",
    description="WARN when the stored history is shorter than BLOFIN_TRAINING_DAYS (and the "
    "warm-up before it): the models then train on the days that exist, and this says how many.",
)
def training_window_covered_check(
    context: AssetCheckExecutionContext, settings: BlofinSettings, warehouse: DuckDBWarehouse
) -> AssetCheckResult:
    with warehouse.connect(read_only=True) as con:
        return asset_check_result(
            context,
            training_window_covered(
                con,
                "features",
                training_days=settings.training_days,
                bar=settings.bar_delta(),
                warmup_bars=FEATURE_WARMUP_BARS,
            ),
        )


@asset_check(asset=targets, description="No NaN or inf in any label or baseline column.")
def targets_finite(
    context: AssetCheckExecutionContext, warehouse: DuckDBWarehouse
) -> AssetCheckResult:
    with warehouse.connect(read_only=True) as con:
        return asset_check_result(
            context, finite_columns(con, "targets", TARGET_COLUMNS + NAIVE_COLUMNS)
        )


def build_served_model_check(model_name: str) -> AssetChecksDefinition:
    @asset_check(
        asset=model_name,
        name="served_files_intact",
        description="The served files exist and match their sha256, both in metadata.json and in "
        "the DuckDB record their training step wrote (a swapped pickle with a rewritten "
        "metadata.json fails too).",
    )
    def served_files_intact(
        context: AssetCheckExecutionContext,
        model_store: ModelStoreResource,
        warehouse: DuckDBWarehouse,
    ) -> AssetCheckResult:
        store = model_store.store()
        unserved = store.served_version(model_name) is None
        if model_name in MAY_SERVE_NOTHING and unserved and store.version_names(model_name):
            # The ensemble's normal state until it beats its members: nothing is served, so no
            # served file can be damaged. For the five, nothing served stays a failure.
            return asset_check_result(
                context,
                Verdict(
                    "served_files_intact",
                    True,
                    "ERROR",
                    "no version served yet: every version so far failed an ERROR gate",
                    {"served_version": "none", "problems": []},
                ),
            )
        problems = store.verify_served(model_name) + served_record_problems(
            store, model_name, warehouse.path, warehouse.lock_wait_seconds
        )
        verdict = Verdict(
            "served_files_intact",
            not problems,
            "ERROR",
            "served files intact" if not problems else "; ".join(problems),
            {"served_version": store.served_version(model_name) or "none", "problems": problems},
        )
        return asset_check_result(context, verdict)

    return served_files_intact


DATA_CHECKS = [
    no_duplicate_bars,
    ohlc_consistent,
    gaps,
    fresh,
    features_finite,
    labels_not_in_features,
    rows_match_targets,
    training_window_covered_check,
    targets_finite,
]
