"""The code location: ``blofin_assets.definitions:defs``."""


from dagster import Definitions, in_process_executor

from blofin_assets.assets.candles import candles
from blofin_assets.assets.features import features
from blofin_assets.assets.models import MODEL_ASSETS
from blofin_assets.assets.results import ml_model_results
from blofin_assets.assets.targets import targets
from blofin_assets.checks import DATA_CHECKS, SERVED_MODEL_CHECKS
from blofin_assets.resources import default_resources
from blofin_assets.schedules import hourly_training_job, hourly_training_schedule


def build_definitions() -> Definitions:
    """Built from the environment at load time, so tests set BLOFIN_* and call this."""
    return Definitions(
        assets=[candles, features, targets, *MODEL_ASSETS, ml_model_results],
        asset_checks=[*DATA_CHECKS, *SERVED_MODEL_CHECKS],
        jobs=[hourly_training_job],
        schedules=[hourly_training_schedule],
        resources=default_resources(),
        # Steps run in one process by default: a run is ~10 steps of seconds each, and a
        # subprocess per step would cost more than the work. Steps share nothing in memory
        # (every table goes through DuckDB), so the multiprocess executor works unchanged.
        executor=in_process_executor,
    )


defs = build_definitions()
