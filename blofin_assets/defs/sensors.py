"""Alert sensors: a failed run, a failed ERROR check, a rejected candidate, a live_skill ERROR,
each posted once to BLOFIN_ALERT_WEBHOOK (see docs/alerts.md).

Why plain ``@sensor``s with their own cursor, not ``@run_failure_sensor``: a run-status sensor
moves its cursor past a run whether or not its function succeeded (Dagster records the error
on the tick and goes on), so an alert posted while the receiver is down would be lost. Here
the cursor is ours and moves only past what arrived (alerts/delivery.py). The events are read
with the same public query the run-status sensors use, ``instance.fetch_run_status_changes``,
which reads the instance's cross-run index in storage-id order (run-sharded SQLite included,
where ``get_event_records`` would refuse a plain cursor for check evaluations).

Why one stream, the runs' ends, for checks and candidates too, not ``asset_sensor`` /
``multi_asset_sensor``: those follow materializations only, not check evaluations. A run's end
is the last event it writes, so once it is recorded every check evaluation and materialization
of that run is final and is read once, from the run's own log (``get_records_for_run``); the
alerts of a run arrive when it ends. An event recorded outside any run (an external
``report_asset_check``) is not seen.

Both sensors are on by default and tick every BLOFIN_ALERT_INTERVAL_SECONDS (30): without a
webhook they skip and say so in the UI. They never request runs and never raise for the
receiver: an alert not delivered is logged, the tick's reason says why, and the next tick
sends it again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DefaultSensorStatus,
    EventLogRecord,
    RunStatusChangeRecordsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from blofin_assets.alerts.delivery import AlertCursor, AlertGroup, deliver
from blofin_assets.alerts.payload import (
    Alert,
    StepFailure,
    alert_payload,
    candidate_alert,
    check_alert,
    run_failed_alert,
)
from blofin_assets.alerts.webhook import (
    WEBHOOK_ENV,
    AlertSettings,
    Delivery,
    interval_seconds,
    post_json,
    redacted,
)

if TYPE_CHECKING:  # Dagster's error record; only its type is named here
    from dagster._utils.error import SerializableErrorInfo

RUN_FAILED = (DagsterEventType.RUN_FAILURE,)
RUN_ENDED = (
    DagsterEventType.RUN_SUCCESS,
    DagsterEventType.RUN_FAILURE,
    DagsterEventType.RUN_CANCELED,
)
FETCH_LIMIT = 50  # run ends read per tick; the rest wait for the next
AlertsFor = Callable[[DagsterInstance, EventLogRecord], list[Alert]]


def run_ends(
    instance: DagsterInstance,
    types: Sequence[DagsterEventType],
    after: int,
    limit: int = FETCH_LIMIT,
) -> list[EventLogRecord]:
    """Run-end events after a position, oldest first, merged across event types. When one
    type has more than a page, the merge stops at its page's last id, so none is skipped."""
    pages = [
        instance.fetch_run_status_changes(
            RunStatusChangeRecordsFilter(event_type, after_storage_id=after),
            limit=limit,
            ascending=True,
        )
        for event_type in types
    ]
    records = sorted((r for page in pages for r in page.records), key=lambda r: r.storage_id)
    full = [page.records[-1].storage_id for page in pages if page.has_more and page.records]
    return [r for r in records if r.storage_id <= min(full)] if full else records


def newest_position(instance: DagsterInstance, types: Sequence[DagsterEventType]) -> int:
    newest = [
        page.records[0].storage_id
        for page in (instance.fetch_run_status_changes(t, limit=1) for t in types)
        if page.records
    ]
    return max(newest, default=-1)


def innermost(error: SerializableErrorInfo) -> str:
    """The user's exception under Dagster's wrappers (the step error's causes)."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip() or error.cls_name or "error"


def run_failed_alerts(instance: DagsterInstance, record: EventLogRecord) -> list[Alert]:
    entry = record.event_log_entry
    steps = instance.get_records_for_run(entry.run_id, of_type=DagsterEventType.STEP_FAILURE)
    failures = []
    for step in steps.records:
        event = step.event_log_entry.dagster_event
        if event is not None and event.step_key:
            error = event.step_failure_data.error
            failures.append(StepFailure(event.step_key, innermost(error) if error else "failed"))
    event = entry.dagster_event
    run_error = event.job_failure_data.error if event is not None else None
    return [
        run_failed_alert(
            run_id=entry.run_id,
            job=entry.job_name,
            timestamp=entry.timestamp,
            failures=failures,
            run_error=innermost(run_error) if run_error else entry.user_message,
        )
    ]


def plain(value: object) -> object:
    """A metadata value as JSON-ready data: scalars and lists, short text; others left out."""
    raw = getattr(value, "value", value)
    if isinstance(raw, str):
        return raw if len(raw) <= 300 else None
    if isinstance(raw, (int, float, bool, list)):
        return raw
    return None


def plain_metadata(metadata: object) -> dict[str, object]:
    items = metadata.items() if isinstance(metadata, dict) else []
    return {k: v for k, v in ((k, plain(v)) for k, v in items) if v is not None}


def asset_alerts(instance: DagsterInstance, record: EventLogRecord) -> list[Alert]:
    """A finished run's failed ERROR checks, live_skill ERRORs and rejected candidates."""
    run_id, job = record.event_log_entry.run_id, record.event_log_entry.job_name
    kinds = {DagsterEventType.ASSET_CHECK_EVALUATION, DagsterEventType.ASSET_MATERIALIZATION}
    alerts = []
    for event_record in instance.get_records_for_run(run_id, of_type=kinds).records:
        entry = event_record.event_log_entry
        event = entry.dagster_event
        if event is None:
            continue
        common = {
            "event_id": f"{run_id}/{event_record.storage_id}",
            "run_id": run_id,
            "job": job,
            "timestamp": entry.timestamp,
        }
        if event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.asset_check_evaluation_data
            alert = check_alert(
                **common,
                asset=evaluation.asset_key.to_user_string(),
                check=evaluation.check_name,
                passed=evaluation.passed,
                severity=evaluation.severity.value,
                description=evaluation.description,
                metadata=plain_metadata(dict(evaluation.metadata)),
            )
        else:
            materialization = event.step_materialization_data.materialization
            alert = candidate_alert(
                **common,
                asset=materialization.asset_key.to_user_string(),
                metadata=plain_metadata(dict(materialization.metadata)),
            )
        if alert is not None:
            alerts.append(alert)
    return alerts


def build_alert_sensor(
    name: str, description: str, types: Sequence[DagsterEventType], alerts_for: AlertsFor
) -> SensorDefinition:
    @sensor(
        name=name,
        description=description,
        minimum_interval_seconds=interval_seconds(os.environ),
        default_status=DefaultSensorStatus.RUNNING,
    )
    def alert_sensor(context: SensorEvaluationContext) -> SkipReason:
        settings = AlertSettings.from_env(os.environ)  # at each tick: a secret, not a definition
        cursor = AlertCursor.from_json(context.cursor)
        if not settings.webhook_url or cursor is None:
            # Keep up with the log, so setting a webhook later does not replay the past.
            context.update_cursor(AlertCursor(newest_position(context.instance, types)).to_json())
            if not settings.webhook_url:
                return SkipReason(f"{WEBHOOK_ENV} is not set: no alerts are sent")
            return SkipReason("Started: alerts for runs that end from now on")

        def groups() -> Iterator[AlertGroup]:
            for record in run_ends(context.instance, types, cursor.after):
                yield AlertGroup(record.storage_id, alerts_for(context.instance, record))

        def send(alert: Alert) -> Delivery:
            return post_json(settings.webhook_url, alert_payload(alert, settings.ui_url))

        outcome = deliver(groups(), cursor, send)
        context.update_cursor(outcome.cursor.to_json())
        receiver = redacted(settings.webhook_url)
        sent = f"sent {len(outcome.delivered)} alert(s) to {receiver}"
        for alert in outcome.delivered:
            context.log.info(f"alert {alert.event} sent ({alert.key})")
        if outcome.failure is not None:
            context.log.warning(f"alert not delivered, retried next tick: {outcome.failure}")
            return SkipReason(f"Not delivered, will retry next tick: {outcome.failure}; {sent}")
        if outcome.stopped_early:
            return SkipReason(f"Tick budget spent, the rest next tick; {sent}")
        if outcome.delivered:
            return SkipReason(f"Sent: {sent} ({outcome.groups_done} run(s) ended)")
        if outcome.groups_done:
            return SkipReason(f"Nothing to alert in {outcome.groups_done} run(s) that ended")
        return SkipReason("No run ended since the last tick")

    return alert_sensor


run_failure_alerts = build_alert_sensor(
    "run_failure_alerts",
    "Posts each failed run (its failed steps and their errors) to BLOFIN_ALERT_WEBHOOK, once.",
    RUN_FAILED,
    run_failed_alerts,
)
asset_alerts_sensor = build_alert_sensor(
    "asset_alerts",
    "Posts each failed ERROR check, live_skill ERROR and rejected candidate of every ended run "
    "to BLOFIN_ALERT_WEBHOOK, once.",
    RUN_ENDED,
    asset_alerts,
)
ALERT_SENSORS = [run_failure_alerts, asset_alerts_sensor]
