"""The hourly retrain, a few minutes past the hour so the last bar has closed; and the daily
tuning, stopped until someone turns it on (it costs minutes of both cores per model)."""

from dagster import DefaultScheduleStatus, ScheduleDefinition

from blofin_assets.defs.jobs import hourly_training_job, tune_models_job

hourly_training_schedule = ScheduleDefinition(
    name="hourly_training_schedule",
    job=hourly_training_job,
    cron_schedule="5 * * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
)

# Between hourly runs (:05), so the two never compete for the DuckDB writer for long.
tune_models_schedule = ScheduleDefinition(
    name="tune_models_schedule",
    job=tune_models_job,
    cron_schedule="30 2 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Daily tuning of every model's parameters; stopped by default: turn it on in "
    "the UI (Automation) once the forward record shows what the defaults do.",
)
