"""Jobs: the hourly retrain of the whole graph.

Its last step is the live_skill checks (assets/forward_performance.py): they depend on the end
of the chain, and end the run's log with one line per model it trained. A headless
`dg launch --assets '*'` (or `dagster asset materialize --select '*'`) runs the same steps, so
it ends the same way.
"""

from dagster import AssetSelection, define_asset_job

hourly_training_job = define_asset_job(
    name="hourly_training",
    selection=AssetSelection.all(),
    description="Ingest new candles, rebuild features and targets, retrain and gate the five "
    "models, record results, serve predictions and score the forward record; the log ends "
    "with one line per model: promoted or rejected, skill over which baseline, version served.",
)
