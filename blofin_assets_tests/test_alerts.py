"""Alerts (docs/alerts.md): the payload, the post against a real receiver on 127.0.0.1 (up,
failing, stalled, gone), delivery once per event, and the sensors on a real Dagster instance.
End to end in `dagster dev`: test_alerts_in_dagster_dev.py."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, AssetSelection, DagsterInstance, build_sensor_context

from blofin_assets.alerts.delivery import AlertCursor, AlertGroup, deliver
from blofin_assets.alerts.payload import (
    MAX_TEXT,
    MAX_WHY,
    StepFailure,
    alert_payload,
    candidate_alert,
    check_alert,
    run_failed_alert,
)
from blofin_assets.alerts.webhook import Delivery, interval_seconds, post_json
from blofin_assets.defs.sensors import ALERT_SENSORS, RUN_ENDED, run_ends
from blofin_assets_tests.conftest import Project
from blofin_assets_tests.webhook_receiver import Receiver
from blofin_assets_tests.webserver import free_port

UI = "http://dagster.example:3000"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


def check(name: str, passed: bool, severity: str, key: str = "run-1/7", **metadata: object):
    return check_alert(
        event_id=key,
        run_id="run-1",
        job="hourly_training",
        timestamp=1_700_000_000.0,
        asset="direction_predictor",
        check=name,
        passed=passed,
        severity=severity,
        description=f"{name} said why",
        metadata=metadata,
    )


# ---- the payload ----------------------------------------------------------------------------
def test_a_failed_run_names_its_steps_their_errors_and_the_run_page() -> None:
    alert = run_failed_alert(
        run_id="abc-123",
        job="hourly_training",
        timestamp=0.0,
        failures=[StepFailure("candles", "FileNotFoundError: candle file x.csv does not exist")],
        run_error="ignored when a step failed",
    )
    body = alert_payload(alert, UI + "/")
    assert body["event"] == "run_failed" and body["severity"] == "ERROR"
    assert body["asset"] == "candles" and body["check"] is None
    assert body["why"] == "candles: FileNotFoundError: candle file x.csv does not exist"
    assert body["run_url"] == f"{UI}/runs/abc-123" and body["run_id"] == "abc-123"
    assert body["timestamp"] == "1970-01-01T00:00:00Z"
    assert body["text"] == body["content"]  # Slack reads text, Discord content
    assert "Run failed: job hourly_training" in body["text"] and "x.csv" in body["text"]
    assert body["text"].endswith(body["run_url"])
    assert json.loads(json.dumps(body, allow_nan=False)) == body


def test_a_run_that_failed_before_any_step_says_the_run_error() -> None:
    alert = run_failed_alert(
        run_id="r", job="j", timestamp=0.0, failures=[], run_error="run worker exited"
    )
    assert (alert.asset, alert.why) == (None, "run worker exited")


@pytest.mark.parametrize(
    ("name", "passed", "severity", "event"),
    [
        ("leakage_alarm", False, "ERROR", "check_failed"),
        ("no_duplicate_bars", False, "ERROR", "check_failed"),
        ("metric_regression", False, "WARN", None),  # a WARN is shown, not sent
        ("served_files_intact", True, "ERROR", None),
        ("live_skill", False, "ERROR", "live_skill_error"),
        ("live_skill", False, "WARN", None),
    ],
)
def test_only_failed_error_checks_alert_and_live_skill_has_its_own_event(
    name: str, passed: bool, severity: str, event: str | None
) -> None:
    alert = check(name, passed, severity)
    assert (alert.event if alert else None) == event
    if alert:
        body = alert_payload(alert, UI)
        assert (body["asset"], body["check"]) == ("direction_predictor", name)
        assert body["why"] == f"{name} said why" and body["event_id"] == "run-1/7"


def test_a_rejected_candidate_says_why_and_what_stays_served() -> None:
    common = dict(event_id="r/9", run_id="r", job="j", timestamp=0.0, asset="risk_scorer")
    promoted = {"status": "promoted", "status_reason": "all ERROR checks passed"}
    assert candidate_alert(**common, metadata=promoted) is None
    rejected = {
        "status": "rejected",
        "status_reason": "leakage_alarm: LEAKAGE? accuracy 0.97",
        "served_version": "v1",
        "version": "v2",
    }
    body = alert_payload(candidate_alert(**common, metadata=rejected), UI)
    assert body["event"] == "candidate_rejected" and body["asset"] == "risk_scorer"
    assert body["why"] == "leakage_alarm: LEAKAGE? accuracy 0.97"
    assert body["details"] == {"version": "v2", "served_version": "v1"}
    assert "Still serving v1." in body["text"]
    first = candidate_alert(**common, metadata={**rejected, "served_version": "none"})
    assert "Nothing is served yet." in alert_payload(first, UI)["text"]


def test_metadata_json_has_no_type_for_is_posted_as_null_or_text() -> None:
    alert = check("leakage_alarm", False, "ERROR", skill=math.nan, p=math.inf, when=object())
    details = alert_payload(alert, UI)["details"]
    assert details["skill"] is None and details["p"] is None and details["when"].startswith("<")


def test_a_long_why_is_cut_so_a_chat_takes_it() -> None:
    alert = run_failed_alert(
        run_id="r", job="j", timestamp=0.0, failures=[StepFailure("candles", "x" * 50_000)],
        run_error=None,
    )  # fmt: skip
    body = alert_payload(alert, UI)
    assert len(body["why"]) == MAX_WHY and len(body["text"]) <= MAX_TEXT
    assert body["text"].endswith(f"{UI}/runs/r")


# ---- the post ------------------------------------------------------------------------------
def test_a_post_arrives_as_json_and_counts_as_delivered(receiver: Receiver) -> None:
    body = alert_payload(check("leakage_alarm", False, "ERROR"), UI)
    result = post_json(receiver.url, body)
    assert result == Delivery(True, "HTTP 200")
    (received,) = receiver.received
    assert received.body == body and received.content_type == "application/json"
    assert received.path == "/hooks/secret-token"


def test_a_receiver_error_is_not_delivered(receiver: Receiver) -> None:
    receiver.answers = [503]
    result = post_json(receiver.url, {"text": "x"})
    assert not result.delivered and "HTTP 503" in result.detail and receiver.bodies() == []


def test_a_stalled_receiver_times_out(receiver: Receiver) -> None:
    receiver.stall = 1.5
    result = post_json(receiver.url, {"text": "x"}, timeout=(0.5, 0.5))
    assert not result.delivered and "timed out" in result.detail


def test_a_refused_connection_is_not_delivered_and_the_secret_stays_out_of_the_log() -> None:
    url = f"http://127.0.0.1:{free_port()}/hooks/secret-token"  # nothing listens there
    result = post_json(url, {"text": "x"})
    assert not result.delivered and "refused" in result.detail
    assert "secret-token" not in result.detail
    assert not post_json("hooks.example/secret", {"text": "x"}).delivered


# ---- delivery once per event ---------------------------------------------------------------
def test_delivery_stops_at_the_first_failure_and_resends_only_what_is_missing(
    receiver: Receiver,
) -> None:
    first, second, third = (check("leakage_alarm", False, "ERROR", key=k) for k in "abc")
    groups = [AlertGroup(5, [first, second]), AlertGroup(9, [third])]

    def send(alert):
        return post_json(receiver.url, alert_payload(alert, UI))

    receiver.answers = [200, 503]  # the second post meets a receiver in trouble
    outcome = deliver(groups, AlertCursor(-1), send)
    assert outcome.cursor == AlertCursor(-1, frozenset({"a"})) and "503" in outcome.failure
    outcome = deliver(groups, outcome.cursor, send)
    assert outcome.failure is None and outcome.cursor == AlertCursor(9)
    assert deliver(groups, outcome.cursor, send).delivered == []
    assert [body["event_id"] for body in receiver.bodies()] == ["a", "b", "c"]


def test_a_spent_budget_ends_the_tick_and_loses_nothing(receiver: Receiver) -> None:
    alerts = [check("leakage_alarm", False, "ERROR", key=k) for k in "ab"]
    now = iter([0.0, 1.0, 99.0])  # the deadline passes after the first post
    outcome = deliver(
        [AlertGroup(3, alerts)],
        AlertCursor(-1),
        lambda alert: post_json(receiver.url, alert_payload(alert, UI)),
        budget_seconds=10,
        clock=lambda: next(now),
    )
    assert outcome.stopped_early and outcome.cursor == AlertCursor(-1, frozenset({"a"}))


def test_a_cursor_this_code_did_not_write_starts_afresh() -> None:
    cursor = AlertCursor(12, frozenset({"r/3"}))
    assert AlertCursor.from_json(cursor.to_json()) == cursor
    for foreign in (None, "", "not json", "[]", '{"v": 0, "after": 1, "sent": []}'):
        assert AlertCursor.from_json(foreign) is None


def test_the_interval_setting() -> None:
    assert interval_seconds({}) == 30
    assert interval_seconds({"BLOFIN_ALERT_INTERVAL_SECONDS": "5"}) == 5
    for bad in ("0", "five"):
        with pytest.raises(ValueError, match="BLOFIN_ALERT_INTERVAL_SECONDS"):
            interval_seconds({"BLOFIN_ALERT_INTERVAL_SECONDS": bad})


# ---- the sensors on a real instance --------------------------------------------------------
def tick(instance: DagsterInstance, cursors: dict[str, str | None]) -> dict[str, str]:
    """One evaluation of each alert sensor, as the daemon makes it; returns the skip reasons."""
    reasons = {}
    for alert_sensor in ALERT_SENSORS:
        context = build_sensor_context(instance=instance, cursor=cursors.get(alert_sensor.name))
        result = alert_sensor.evaluate_tick(context)
        assert not result.run_requests
        cursors[alert_sensor.name] = result.cursor
        reasons[alert_sensor.name] = result.skip_message or ""
    return reasons


def test_the_sensors_alert_once_per_event_and_retry_while_the_receiver_is_down(
    project: Project, instance: DagsterInstance, receiver: Receiver, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.csv"
    project.set_env(BLOFIN_SOURCE="file", BLOFIN_CANDLES_FILE=str(missing), BLOFIN_UI_URL=UI)
    cursors: dict[str, str | None] = {}
    project.monkeypatch.delenv("BLOFIN_ALERT_WEBHOOK", raising=False)
    assert set(tick(instance, cursors).values()) == {
        "BLOFIN_ALERT_WEBHOOK is not set: no alerts are sent"
    }
    job = project.defs().resolve_job_def("hourly_training")
    failed = job.execute_in_process(
        instance=instance, asset_selection=[AssetKey("candles")], raise_on_error=False
    )
    assert not failed.success
    tick(instance, cursors)  # still no webhook: this failure is not kept for later
    project.set_env(BLOFIN_ALERT_WEBHOOK=receiver.url)
    assert "No run ended" in tick(instance, cursors)["run_failure_alerts"]

    failed = job.execute_in_process(
        instance=instance, asset_selection=[AssetKey("candles")], raise_on_error=False
    )
    intact = AssetCheckKey(AssetKey("risk_scorer"), "served_files_intact")
    checked = project.materialize(instance, AssetSelection.checks(intact))  # nothing served yet
    assert not failed.success and checked.success
    receiver.stop()
    before = dict(cursors)
    reasons = tick(instance, cursors)
    assert all(r.startswith("Not delivered, will retry next tick") for r in reasons.values())
    # The failure's position stays until the receiver is back (asset_alerts may pass the
    # failed run, which had nothing to alert, but not the check's run).
    assert cursors["run_failure_alerts"] == before["run_failure_alerts"]

    receiver.start()
    tick(instance, cursors)
    for _ in range(2):
        assert set(tick(instance, cursors).values()) == {"No run ended since the last tick"}
    bodies = receiver.bodies()
    assert [(b["event"], b["asset"], b["check"], b["run_id"]) for b in bodies] == [
        ("run_failed", "candles", None, failed.run_id),
        ("check_failed", "risk_scorer", "served_files_intact", checked.run_id),
    ]
    assert str(missing) in bodies[0]["why"] and "no served version" in bodies[1]["why"]
    assert bodies[0]["run_url"] == f"{UI}/runs/{failed.run_id}"


def test_run_ends_are_read_in_order_across_types_a_page_at_a_time(
    project: Project, instance: DagsterInstance, tmp_path: Path
) -> None:
    """Failures and successes interleaved, read one per type per page: none is skipped."""
    project.set_env(BLOFIN_SOURCE="file", BLOFIN_CANDLES_FILE=str(tmp_path / "missing.csv"))
    job = project.defs().resolve_job_def("hourly_training")
    intact = AssetSelection.checks(AssetCheckKey(AssetKey("risk_scorer"), "served_files_intact"))
    runs = []
    for kind in ("fail", "fail", "succeed", "succeed", "fail"):
        if kind == "fail":
            result = job.execute_in_process(
                instance=instance, asset_selection=[AssetKey("candles")], raise_on_error=False
            )
        else:
            result = project.materialize(instance, intact)
        runs.append(result.run_id)
    seen, after = [], -1
    while page := run_ends(instance, RUN_ENDED, after, limit=1):
        seen += [record.event_log_entry.run_id for record in page]
        after = page[-1].storage_id
    assert seen == runs
