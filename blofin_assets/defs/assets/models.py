"""The five model assets, built by one factory from MODEL_SPECS.

Each asset trains a candidate, runs its three gates as asset checks in the same step, keeps the
candidate in history and serves it only if no ERROR check failed. Its code_version is the hash
of its spec, so editing one model's hyperparameters marks that model alone stale.
"""

import base64
from dataclasses import dataclass
from datetime import timedelta

import duckdb
import pandas as pd
from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    DataVersion,
    FreshnessPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)

from blofin_assets.defs.assets.candles import candles
from blofin_assets.defs.assets.features import features
from blofin_assets.defs.assets.metadata import OWNERS, params_asset_name, provenance
from blofin_assets.defs.assets.targets import targets
from blofin_assets.defs.resources import BlofinSettings, DuckDBWarehouse, ModelStoreResource
from blofin_assets.defs.verdicts import check_result
from blofin_assets.market.settings import MODEL_FRESHNESS_HOURS
from blofin_assets.ml import report
from blofin_assets.ml.gates import REGRESSION_HISTORY
from blofin_assets.ml.importance import importance_chart_png, importance_markdown
from blofin_assets.ml.publish import PublishedModel, target_definition, train_and_publish
from blofin_assets.ml.row_plan import RowPlan
from blofin_assets.ml.specs import ModelSpec
from blofin_assets.ml.training import DEFAULT_TEST_FRACTION, training_columns
from blofin_assets.storage.candles import candle_sources, newest_candle_ts
from blofin_assets.storage.results import promoted_skills
from blofin_assets.storage.training_rows import read_model_rows, read_training_frame
from blofin_assets.storage.tuning import params_in_force
from blofin_assets.storage.warehouse import check_clock

# Dagster calls these checks non-blocking: a failure never stops the steps after this one (the
# results table records the rejection). The gate is the model asset itself: a candidate that
# fails an ERROR check is kept in history, not served, and the last good version stays served.
GATE_EFFECT = "On failure the candidate is not served; the last good version stays served."
GATE_DESCRIPTIONS = {
    "leakage_alarm": "ERROR when a test score is implausibly good for this target (a leak until "
    f"proven otherwise). {GATE_EFFECT}",
    "metric_regression": "Skill over the strongest naive rule against the median of the last "
    "promoted versions in ml_model_results: WARN beyond a small drop, reported only; ERROR "
    f"beyond a large one. {GATE_EFFECT}",
    "beats_baseline": "WARN when the skill over the strongest naive rule on the test rows is "
    "not positive beyond noise. Reported only: the candidate is still served.",
}
# The schedule is hourly; two hours without a retrain means a run was missed: one interval
# before a served version expires (market/settings.py derives both from one constant).
MODEL_FRESHNESS = FreshnessPolicy.time_window(fail_window=timedelta(hours=MODEL_FRESHNESS_HOURS))


def materialization_metadata(published: PublishedModel) -> dict[str, object]:
    """The answer first, in the order the model page shows it: status, what is served, skill
    over the strongest naive rule, the metric in its unit beside the rule's, rows and window.
    Numbers a person wants plotted over time stay numeric; the rest is text."""
    trained = published.trained
    meta = published.metadata
    metric = meta["primary_metric"]
    return {
        "status": published.status,
        "served_version": published.served_version or "none",
        "skill": MetadataValue.float(round(meta["skill"], 4)),
        "skill_verdict": report.skill_text(meta),
        "metric": report.metric_text(meta),
        "baseline": report.baseline_text(meta),
        "train_rows": MetadataValue.int(trained.train_rows),
        "test_rows": MetadataValue.int(trained.test_rows),
        "train_metrics_method": meta["train_metrics_method"],
        "data_window": report.data_window_text(meta),
        "status_reason": published.status_reason,
        "version": published.version,
        f"test_{metric}": MetadataValue.float(round(meta["primary_value"], 6)),
        f"baseline_{metric}": MetadataValue.float(round(meta["baseline_value"], 6)),
        "skill_p_value": MetadataValue.float(
            float("nan") if meta["skill_p_value"] is None else meta["skill_p_value"]
        ),
        "metrics": MetadataValue.md(report.metrics_markdown(meta)),
        "baselines": MetadataValue.md(report.baselines_markdown(meta)),
        "feature_importances": MetadataValue.md(importance_markdown(trained.feature_importances)),
        "feature_importance_chart": MetadataValue.md(importance_chart_markdown(published)),
        "model_type": trained.spec.model_type,
        "params_id": meta.get("params_id", "unknown"),
        "params_source": meta.get("params_source", "unknown"),
        "model_path": MetadataValue.path(str(published.version_dir / "model.pkl")),
        "train_seconds": MetadataValue.float(round(trained.train_seconds, 2)),
    }


def importance_chart_markdown(published: PublishedModel) -> str:
    """The bar chart inline, as forward_performance shows its equity curves."""
    png = importance_chart_png(published.trained.feature_importances, published.trained.spec.name)
    return f"![feature importances](data:image/png;base64,{base64.b64encode(png).decode()})"


def log_outcome(context: AssetExecutionContext, published: PublishedModel) -> None:
    """Say in the run log what the catalog shows: a rejection, a relabelled promotion."""
    name = published.trained.spec.name
    for version in published.interrupted:
        context.log.warning(
            f"{name} version {version} was saved as promoted but never served (the run that "
            "trained it stopped in between); relabelled 'interrupted'"
        )
    if published.status != "promoted":
        context.log.error(
            f"{name} candidate {published.version} REJECTED, still serving "
            f"{published.served_version}: {published.status_reason}"
        )


@dataclass(frozen=True)
class TrainingInputs:
    """What a model step reads before it trains, in one read-only connection."""

    frame: pd.DataFrame
    plan: RowPlan | None  # the frame holds only the planned rows (storage.read_model_rows)
    data_until: pd.Timestamp
    history: list[float]
    sources: list[str]


def read_training_inputs(
    con: duckdb.DuckDBPyConnection,
    spec: ModelSpec,
    settings: BlofinSettings,
    *,
    since: pd.Timestamp | None = None,
) -> TrainingInputs:
    """``since``: only labelled rows from then on, whole (the ensemble's members' later bars);
    otherwise the model's planned rows (storage.read_model_rows)."""
    # A models-only run as of an earlier time must not train on bars after its now.
    check_clock(con, now=settings.now(), bar=settings.bar_delta(), as_of=settings.as_of)
    if since is not None:
        frame, plan = read_training_frame(con, training_columns(spec), since=since), None
    else:
        frame, plan = read_model_rows(
            con,
            spec,
            training_columns(spec),
            horizon=settings.horizon,
            test_fraction=DEFAULT_TEST_FRACTION,
        )
    return TrainingInputs(
        frame=frame,
        plan=plan,
        data_until=newest_candle_ts(con, settings.market().instrument_list()),
        history=promoted_skills(
            con, spec.name, target_definition(spec, settings.horizon), REGRESSION_HISTORY
        ),
        sources=candle_sources(con),
    )


def model_result(
    context: AssetExecutionContext, published: PublishedModel, sources: list[str]
) -> MaterializeResult:
    """What every model asset returns: the page's metadata, its gates as checks, and the
    version as the data version (a new version makes everything downstream Unsynced)."""
    log_outcome(context, published)
    name = published.trained.spec.name
    return MaterializeResult(
        metadata={**materialization_metadata(published), **provenance(sources)},
        check_results=[
            check_result(gate, check_name=gate.check_name, asset=name, log=context.log)
            for gate in published.gates
        ],
        data_version=DataVersion(published.version),
    )


def build_model_asset(spec: ModelSpec) -> AssetsDefinition:
    @asset(
        name=spec.name,
        # candles too: new bars make a model Unsynced at once, not only after features and
        # targets are rebuilt (Dagster's staleness follows direct parents' data versions);
        # and its parameter set, so an adoption by the tune_models job makes it Unsynced.
        deps=[candles, features, targets, params_asset_name(spec.name)],
        group_name="models",
        description=spec.description,
        kinds={spec.kind, "scikit-learn"} if spec.kind != "sklearn" else {"scikit-learn"},
        owners=OWNERS,
        code_version=spec.code_version,
        freshness_policy=MODEL_FRESHNESS,
        check_specs=[
            AssetCheckSpec(name=name, asset=spec.name, description=description)
            for name, description in GATE_DESCRIPTIONS.items()
        ],
        metadata={"target": spec.target, "baseline_candidates": list(spec.baselines)},
    )
    def model_asset(
        context: AssetExecutionContext,
        settings: BlofinSettings,
        warehouse: DuckDBWarehouse,
        model_store: ModelStoreResource,
    ) -> MaterializeResult:
        with warehouse.connect(read_only=True) as con:
            inputs = read_training_inputs(con, spec, settings)
            in_force = params_in_force(con, spec)
        published = train_and_publish(
            spec.with_params(in_force.params),
            inputs.frame,
            plan=inputs.plan,
            store=model_store.store(),
            horizon=settings.horizon,
            promoted_skills=inputs.history,
            run_id=context.run.run_id,
            data_sources=inputs.sources,
            data_until=inputs.data_until,
            hash_record=warehouse.file(),
            params_source=in_force.source,
        )
        return model_result(context, published, inputs.sources)

    return model_asset
