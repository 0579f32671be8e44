"""One `<model>_params` asset per model: the parameter set the model trains with, as data.

Materializing it is tuning: an Optuna search scored by purged walk-forward folds on the
training window, then a walk-forward backtest on the later bars that must show the best trial
better beyond noise before it replaces the set in force (ml/tuning.py, ml/adoption.py). Its
data version is the id of the set in force, so an adoption makes exactly that model Unsynced
in the UI with this asset as the cause, and a search that adopts nothing changes nothing
downstream. It runs in the tune_models job only, never in the hourly one.
"""

import json

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
from blofin_assets.defs.assets.metadata import OWNERS, TUNING_GROUP, params_asset_name
from blofin_assets.defs.assets.targets import targets
from blofin_assets.defs.resources import BlofinSettings, DuckDBWarehouse, TuningSettings
from blofin_assets.ml.adoption import TuningOutcome, record_tuning, run_tuning
from blofin_assets.ml.search_spaces import search_space
from blofin_assets.ml.specs import ModelSpec, params_id
from blofin_assets.ml.training import training_columns
from blofin_assets.ml.tuning import TrialRecord
from blofin_assets.storage.training_rows import read_training_frame
from blofin_assets.storage.tuning import params_in_force
from blofin_assets.storage.warehouse import check_clock

TOP_TRIALS = 10


def number(value: float | None, digits: int = 5) -> str:
    return "none" if value is None else f"{value:.{digits}g}"


def trial_line(spec: ModelSpec, trial: TrialRecord) -> str:
    """What the run log says as each trial ends: progress while the job runs."""
    folds = ", ".join(f"{score:.5g}" for score in trial.fold_scores)
    error = f" ({trial.error})" if trial.error else ""
    return (
        f"{spec.name} trial {trial.trial} {trial.state}{error}: {trial.metric} mean "
        f"{number(trial.mean_score)} (folds {folds or 'none'}) in {trial.seconds:.1f} s, "
        f"params {json.dumps(trial.params)}"
    )


def trials_markdown(outcome: TuningOutcome) -> str:
    """The best trials first (lowest mean loss), the set in force marked."""
    scored = [t for t in outcome.result.trials if t.mean_loss is not None]
    header = "| trial | mean | std | seconds | state | params |\n|---|---|---|---|---|---|"
    best_first = sorted(scored, key=lambda t: (t.mean_loss, t.trial))[:TOP_TRIALS]
    rows = [
        f"| {t.trial}{' (in force)' if t.trial == 0 else ''} | {number(t.mean_score)} "
        f"| {number(t.std_score, 3)} | {t.seconds:.1f} | {t.state} | `{json.dumps(t.params)}` |"
        for t in best_first
    ]
    return "\n".join([header, *rows])


def tuning_metadata(outcome: TuningOutcome) -> dict[str, object]:
    """The decision first: adopted or not and why, then the search that led to it."""
    decision, result = outcome.decision, outcome.result
    failed = sum(1 for t in result.trials if t.state == "failed")
    return {
        "adopted": decision.adopted,
        "decision": decision.reason,
        "params_id": params_id(outcome.params_after),
        "params_source": outcome.source,
        "params": MetadataValue.json(outcome.params_after),
        "backtest_p_value": MetadataValue.float(
            float("nan") if decision.p_value is None else float(decision.p_value)
        ),
        "trials": MetadataValue.int(len(result.trials)),
        "failed_trials": MetadataValue.int(failed),
        "metric": f"{result.metric} per fold (the search minimised it; accuracy as 1 - it)",
        "best_trial": MetadataValue.int(result.best.trial),
        f"best_mean_{result.metric}": number(result.best.mean_score),
        f"in_force_mean_{result.metric}": number(result.current.mean_score),
        "search_seconds": MetadataValue.float(round(result.seconds, 1)),
        "tuning_window": f"{result.tuning_start} to {result.tuning_end} ({result.rows} rows, "
        f"{result.folds} purged walk-forward folds)",
        "top_trials": MetadataValue.md(trials_markdown(outcome)),
    }


def build_params_asset(spec: ModelSpec) -> AssetsDefinition:
    space_text = json.dumps({name: repr(d) for name, d in sorted(search_space(spec).items())})

    @asset(
        name=params_asset_name(spec.name),
        deps=[features, targets],
        group_name=TUNING_GROUP,
        description=f"The parameters {spec.name} trains with. Materializing it tunes them: "
        "Optuna (seeded TPE) on purged walk-forward folds of the training window, and the best "
        "trial is adopted only when a walk-forward backtest on later bars shows it better beyond "
        "noise. Every trial is in tuning_trials, every decision in model_params (DuckDB).",
        kinds={"optuna", "duckdb"},
        owners=OWNERS,
        code_version=params_id({"space": space_text, "defaults": spec.params_id}),
        pool="duckdb_writer",
    )
    def params(
        context: AssetExecutionContext,
        settings: BlofinSettings,
        warehouse: DuckDBWarehouse,
        tuning: TuningSettings,
    ) -> MaterializeResult:
        with warehouse.connect(read_only=True) as con:
            check_clock(con, now=settings.now(), bar=settings.bar_delta(), as_of=settings.as_of)
            frame = read_training_frame(con, training_columns(spec))
            in_force = params_in_force(con, spec)
        context.log.info(
            f"tuning {spec.name}: {tuning.trials} trials or {tuning.timeout_seconds:.0f} s, "
            f"{tuning.folds} folds; in force: {in_force.source} {in_force.params_id}"
        )
        outcome = run_tuning(
            spec,
            frame,
            horizon=settings.horizon,
            params_in_force=in_force.params,
            budget=tuning.budget(),
            on_trial=lambda trial: context.log.info(trial_line(spec, trial)),
        )
        record_tuning(
            warehouse.file(),
            run_id=context.run.run_id,
            model_name=spec.name,
            outcome=outcome,
            decided_at=pd.Timestamp.now(tz="UTC"),
        )
        log = context.log.warning if outcome.decision.adopted else context.log.info
        log(f"{spec.name}: {outcome.decision.reason}")
        return MaterializeResult(
            metadata=tuning_metadata(outcome),
            data_version=DataVersion(params_id(outcome.params_after)),
        )

    return params
