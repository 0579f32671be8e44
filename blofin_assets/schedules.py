"""The hourly retrain: the whole graph, a few minutes past the hour so the last bar has closed."""

from dagster import AssetSelection, DefaultScheduleStatus, ScheduleDefinition, define_asset_job

hourly_training_job = define_asset_job(
    name="hourly_training",
    selection=AssetSelection.all(),
    description="Ingest new candles, rebuild features and targets, retrain and gate the five "
    "models, record results.",
)

hourly_training_schedule = ScheduleDefinition(
    name="hourly_training_schedule",
    job=hourly_training_job,
    cron_schedule="5 * * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
)
