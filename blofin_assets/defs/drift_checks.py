"""feature_drift and label_drift on each model asset: has the market moved away from what the
served version learnt? WARN checks, reported only: serving is the model gates' decision.

Each compares the last 24 h of stored rows with the served version's training block (its
metadata.json data_window), in quality/drift.py. ``max_psi`` is numeric metadata, so the
check's history plots the largest shift over time; ``per_feature`` is the whole table in the
version's importance order. Registered in code_location.py by the factory, one pair per spec.
"""

from dataclasses import replace

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    MetadataValue,
    asset_check,
)

from blofin_assets.defs.assets.features import features
from blofin_assets.defs.assets.targets import targets
from blofin_assets.defs.resources import DuckDBWarehouse, ModelStoreResource
from blofin_assets.defs.verdicts import asset_check_result
from blofin_assets.ml.specs import ModelSpec
from blofin_assets.ml.verdict import Verdict
from blofin_assets.quality.drift import (
    RULE,
    feature_drift,
    label_drift,
    nothing_served,
    served_model,
)


def with_markdown(verdict: Verdict) -> Verdict:
    """The per-feature table as markdown rather than a long string."""
    table = verdict.metadata.get("per_feature")
    if table is None:
        return verdict
    return replace(verdict, metadata={**verdict.metadata, "per_feature": MetadataValue.md(table)})


def build_drift_checks(spec: ModelSpec) -> list[AssetChecksDefinition]:
    name = spec.name

    @asset_check(
        asset=name,
        name="feature_drift",
        additional_deps=[features],
        description="WARN when an input feature's last 24 h moved away from the served "
        f"version's training block; drifted features named most important first. {RULE}.",
    )
    def feature_drift_check(
        context: AssetCheckExecutionContext,
        warehouse: DuckDBWarehouse,
        model_store: ModelStoreResource,
    ) -> AssetCheckResult:
        served = served_model(model_store.store(), name)
        if served is None:
            return asset_check_result(context, nothing_served("feature_drift", name))
        metadata, inputs = served
        with warehouse.connect(read_only=True) as con:
            verdict = feature_drift(con, metadata, inputs)
        return asset_check_result(context, with_markdown(verdict))

    @asset_check(
        asset=name,
        name="label_drift",
        additional_deps=[features, targets],
        description=f"WARN when {spec.target}'s last 24 h of labels moved away from the served "
        "version's training block (class shares, or median and spread, side by side).",
    )
    def label_drift_check(
        context: AssetCheckExecutionContext,
        warehouse: DuckDBWarehouse,
        model_store: ModelStoreResource,
    ) -> AssetCheckResult:
        served = served_model(model_store.store(), name)
        if served is None:
            return asset_check_result(context, nothing_served("label_drift", name))
        with warehouse.connect(read_only=True) as con:
            verdict = label_drift(con, served[0], spec)
        return asset_check_result(context, verdict)

    return [feature_drift_check, label_drift_check]
