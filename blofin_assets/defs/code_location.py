"""Everything the code location serves, assembled from the spec table and the environment."""

from collections.abc import Sequence

from dagster import Definitions

from blofin_assets.defs.assets.candles import candles
from blofin_assets.defs.assets.ensemble import build_ensemble_asset
from blofin_assets.defs.assets.features import features
from blofin_assets.defs.assets.forward_performance import (
    build_forward_performance_asset,
    build_live_skill_checks,
)
from blofin_assets.defs.assets.models import build_model_asset
from blofin_assets.defs.assets.outcomes import build_outcomes_asset
from blofin_assets.defs.assets.params import build_params_asset
from blofin_assets.defs.assets.predictions import build_predictions_asset
from blofin_assets.defs.assets.results import build_results_asset
from blofin_assets.defs.assets.targets import targets
from blofin_assets.defs.backtest import walk_forward_backtest_job
from blofin_assets.defs.candle_checks import CANDLE_CHECKS
from blofin_assets.defs.checks import DATA_CHECKS, build_served_model_check
from blofin_assets.defs.drift_checks import build_drift_checks
from blofin_assets.defs.executors import code_location_executor
from blofin_assets.defs.jobs import hourly_training_job, tune_models_job
from blofin_assets.defs.resources import default_resources
from blofin_assets.defs.schedules import hourly_training_schedule, tune_models_schedule
from blofin_assets.defs.sensors import ALERT_SENSORS
from blofin_assets.ml.ensemble import ENSEMBLE_SPEC
from blofin_assets.ml.specs import MODEL_SPECS, ModelSpec


def build_definitions(specs: Sequence[ModelSpec] = MODEL_SPECS) -> Definitions:
    """Built from the environment and the spec table at load time; tests set BLOFIN_* (or pass
    edited specs) and call this. The ensemble joins when all its members are in ``specs``."""
    model_assets = [build_model_asset(spec) for spec in specs]
    members = list(ENSEMBLE_SPEC.params["members"])
    by_name = {a.key.to_user_string(): a for a in model_assets}
    served = list(specs)
    if all(name in by_name for name in members):
        model_assets.append(build_ensemble_asset([by_name[name] for name in members]))
        served.append(ENSEMBLE_SPEC)
    names = [spec.name for spec in served]
    results = build_results_asset(model_assets)
    predictions = build_predictions_asset(results, names)
    outcomes = build_outcomes_asset(results, names)
    forward = build_forward_performance_asset(served)
    return Definitions(
        assets=[
            candles,
            features,
            targets,
            *(build_params_asset(spec) for spec in specs),
            *model_assets,
            results,
            predictions,
            outcomes,
            forward,
        ],
        asset_checks=[
            *DATA_CHECKS,
            *CANDLE_CHECKS,
            *(build_served_model_check(name) for name in names),
            *(check for spec in served for check in build_drift_checks(spec)),
            build_live_skill_checks(served),
        ],
        jobs=[hourly_training_job, tune_models_job, walk_forward_backtest_job],
        schedules=[hourly_training_schedule, tune_models_schedule],
        sensors=[*ALERT_SENSORS],
        resources=default_resources(),
        # In-process unless run config selects multiprocess; Celery by BLOFIN_EXECUTOR=celery
        # (see executors.py).
        executor=code_location_executor(),
    )
