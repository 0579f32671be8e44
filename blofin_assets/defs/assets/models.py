"""The five model assets, built by one factory from MODEL_SPECS.

Each asset trains a candidate, runs its three gates as asset checks in the same step, keeps the
candidate in history and serves it only if no ERROR check failed. Its code_version is the hash
of its spec, so editing one model's hyperparameters marks that model alone stale.
"""

from datetime import timedelta

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
from blofin_assets.defs.assets.metadata import OWNERS, provenance
from blofin_assets.defs.assets.targets import targets
from blofin_assets.defs.resources import BlofinSettings, DuckDBWarehouse, ModelStoreResource
from blofin_assets.defs.verdicts import check_result
from blofin_assets.ml.gates import REGRESSION_HISTORY
from blofin_assets.ml.metrics import Evaluation
from blofin_assets.ml.publish import PublishedModel, target_definition, train_and_publish
from blofin_assets.ml.specs import ModelSpec
from blofin_assets.ml.training import training_columns
from blofin_assets.storage.candles import candle_sources, newest_candle_ts
from blofin_assets.storage.results import promoted_skills
from blofin_assets.storage.training_rows import read_training_frame
from blofin_assets.storage.warehouse import check_clock

GATE_DESCRIPTIONS = {
    "leakage_alarm": "ERROR when a score is implausibly good for this target (likely leakage). "
    "Blocks serving.",
    "metric_regression": "Skill over baseline against the median of the last promoted versions "
    "in ml_model_results: WARN beyond a small drop, ERROR (blocks serving) beyond a large one.",
    "beats_baseline": "WARN when the model does not beat its naive baseline.",
}
# The schedule is hourly; two hours without a retrain means a run was missed.
MODEL_FRESHNESS = FreshnessPolicy.time_window(fail_window=timedelta(hours=2))


def importance_markdown(importances: dict[str, float] | None, top: int = 15) -> str:
    if not importances:
        return "This estimator does not expose feature importances."
    lines = ["| feature | importance |", "| --- | --- |"]
    lines += [f"| {name} | {value:.4f} |" for name, value in list(importances.items())[:top]]
    return "\n".join(lines)


def baselines_markdown(evaluation: Evaluation) -> str:
    """Every naive rule's test metrics beside the model's, the strongest one marked."""
    metrics = list(evaluation.metrics)
    header = ["rule", *metrics]
    rows = [["**model**", *(f"{evaluation.metrics[m]:.6g}" for m in metrics)]]
    for name, values in evaluation.baselines.items():
        label = f"{name} (strongest)" if name == evaluation.baseline_name else name
        rows.append([label, *(f"{values[m]:.6g}" if m in values else "" for m in metrics)])
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def materialization_metadata(published: PublishedModel) -> dict[str, object]:
    trained = published.trained
    evaluation = trained.evaluation
    metadata: dict[str, object] = {
        "version": published.version,
        "status": published.status,
        "status_reason": published.status_reason,
        "served_version": published.served_version or "none",
        "model_path": MetadataValue.path(str(published.version_dir / "model.pkl")),
        "model_type": trained.spec.model_type,
        "train_rows": MetadataValue.int(trained.train_rows),
        "test_rows": MetadataValue.int(trained.test_rows),
        "data_window": f"{trained.data_window[0]} .. {trained.data_window[1]} "
        f"(test from {trained.split.test_start}, purge {trained.split.purge_bars} bars)",
        "primary_metric": evaluation.primary_metric,
        "baseline_kind": trained.evaluation.baseline_name,
        "skill": MetadataValue.float(evaluation.skill),
        "skill_p_value": MetadataValue.float(
            evaluation.comparison.p_value if evaluation.comparison else float("nan")
        ),
        "skill_by_baseline": MetadataValue.json(evaluation.skills()),
        "baselines": MetadataValue.md(baselines_markdown(evaluation)),
        "train_seconds": MetadataValue.float(trained.train_seconds),
        "feature_importances": MetadataValue.md(importance_markdown(trained.feature_importances)),
    }
    for name, value in evaluation.metrics.items():
        metadata[f"test_{name}"] = MetadataValue.float(value)
        strongest = evaluation.strongest(name)  # per metric: log loss has its own rivals
        if strongest is not None:
            metadata[f"baseline_{name}"] = MetadataValue.float(
                evaluation.baselines[strongest][name]
            )
    for name, value in trained.train_metrics.items():
        metadata[f"train_{name}"] = MetadataValue.float(value)
    return metadata


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


def build_model_asset(spec: ModelSpec) -> AssetsDefinition:
    @asset(
        name=spec.name,
        # candles too: new bars make a model Unsynced at once, not only after features and
        # targets are rebuilt (Dagster's staleness follows direct parents' data versions).
        deps=[candles, features, targets],
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
            # A models-only run as of an earlier time must not train on bars after its now.
            check_clock(con, now=settings.now(), bar=settings.bar_delta(), as_of=settings.as_of)
            frame = read_training_frame(con, training_columns(spec))
            data_until = newest_candle_ts(con, settings.market().instrument_list())
            history = promoted_skills(
                con, spec.name, target_definition(spec, settings.horizon), REGRESSION_HISTORY
            )
            sources = candle_sources(con)
        published = train_and_publish(
            spec,
            frame,
            store=model_store.store(),
            horizon=settings.horizon,
            promoted_skills=history,
            run_id=context.run.run_id,
            data_sources=sources,
            data_until=data_until,
        )
        log_outcome(context, published)
        return MaterializeResult(
            metadata={**materialization_metadata(published), **provenance(sources)},
            check_results=[
                check_result(gate, check_name=gate.check_name) for gate in published.gates
            ],
            data_version=DataVersion(published.version),
        )

    return model_asset
