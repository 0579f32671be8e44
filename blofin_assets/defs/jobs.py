"""Jobs: the hourly retrain of the whole graph."""

from dagster import AssetSelection, define_asset_job

hourly_training_job = define_asset_job(
    name="hourly_training",
    selection=AssetSelection.all(),
    description="Ingest new candles, rebuild features and targets, retrain and gate the five "
    "models, record results.",
)
