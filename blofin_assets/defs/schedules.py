"""The hourly retrain, a few minutes past the hour so the last bar has closed."""

from dagster import DefaultScheduleStatus, ScheduleDefinition

from blofin_assets.defs.jobs import hourly_training_job

hourly_training_schedule = ScheduleDefinition(
    name="hourly_training_schedule",
    job=hourly_training_job,
    cron_schedule="5 * * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
)
