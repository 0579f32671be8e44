"""Jobs: the hourly retrain of the whole graph, and the tuning of the models' parameters.

The hourly job's last step is the live_skill checks (assets/forward_performance.py): they
depend on the end of the chain, and end the run's log with one line per model it trained. A
headless `dg launch --assets '*'` (or `dagster asset materialize --select '*'`) runs the same
steps and the tuning too (the `<model>_params` assets are part of '*').

Tuning never runs inside the hourly job: it costs minutes per model, and a parameter change
must be a visible event (the model turns Unsynced with its params asset as the cause), not a
side effect of an hourly retrain.
"""

from dagster import AssetSelection, define_asset_job

from blofin_assets.defs.assets.metadata import TUNING_GROUP

TUNING = AssetSelection.groups(TUNING_GROUP)

hourly_training_job = define_asset_job(
    name="hourly_training",
    selection=AssetSelection.all() - TUNING,
    description="Ingest new candles, rebuild features and targets, retrain and gate the five "
    "models and their ensemble, record results, serve predictions and score the forward "
    "record; the log ends with one line per model: promoted or rejected, skill over which "
    "baseline, version served. Trains with the parameters in force (the <model>_params "
    "assets); never tunes.",
)

tune_models_job = define_asset_job(
    name="tune_models",
    selection=TUNING,
    description="Search each model's hyperparameters (Optuna, seeded, purged walk-forward folds "
    "of the training window; every trial in tuning_trials) and adopt the best only on "
    "walk-forward backtest evidence beyond noise (model_params). An adoption marks that model "
    "Unsynced; the next hourly run trains it with the new set.",
)
