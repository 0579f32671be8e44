"""Alerts end to end: `dagster dev` with its daemon on a temp instance, a webhook receiver on
127.0.0.1; a failed run and a leaking candidate each arrive once, the candidate's alerts also
when the receiver was down when its run ended (docs/alerts.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from blofin_assets_tests.conftest import FROZEN_NOW
from blofin_assets_tests.markets import periodic_market
from blofin_assets_tests.test_ui import (
    LAUNCH_RUN,
    LOCATION,
    REPO_ROOT,
    RUN_STATUS,
    RUN_TIMES,
    SCHEDULE,
    STOP_SCHEDULE,
    repository_selector,
    schedule_state,
    server_env,
    wait_until_idle,
)
from blofin_assets_tests.webhook_receiver import Receiver
from blofin_assets_tests.webserver import DagsterDev, dagster_dev

UI = "http://dagster.example:3000"  # BLOFIN_UI_URL: where a person opens the run


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


SENSOR_TICKS = """
query($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status ticks(limit: 50) { status timestamp skipReason } } }
  }
}
"""
RUN_EVENTS = """
query($id: ID!) {
  logsForRun(runId: $id, limit: 100000) {
    __typename
    ... on EventConnection {
      hasMore
      events {
        __typename
        ... on AssetCheckEvaluationEvent {
          evaluation { checkName assetKey { path } success severity }
        }
        ... on MaterializationEvent {
          assetKey { path }
          metadataEntries { label ... on TextMetadataEntry { text } }
        }
      }
    }
  }
}
"""
LEAK_RUN = ["candles", "features", "targets", "direction_predictor"]


def sensor_ticks(server: DagsterDev, repository: dict[str, str], name: str) -> list[dict]:
    selector = {**repository, "sensorName": name}
    found = server.graphql(SENSOR_TICKS, {"selector": selector})["sensorOrError"]
    assert found["__typename"] == "Sensor", found
    assert found["sensorState"]["status"] == "RUNNING"  # on by default, no click needed
    return found["sensorState"]["ticks"]


def wait_for_tick(
    server: DagsterDev, repository: dict[str, str], name: str, after: float, reason: str = ""
) -> dict:
    """The first tick of ``name`` after ``after`` (epoch s) whose skip reason starts so."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        for found in sensor_ticks(server, repository, name):
            if found["timestamp"] > after and (found["skipReason"] or "").startswith(reason):
                return found
        time.sleep(1)
    raise TimeoutError(f"no {name} tick after {after} starting {reason!r}: {server.log_tail()}")


def launch(server: DagsterDev, selector: dict, run_config: dict) -> str:
    params = {"selector": {**selector, "jobName": "hourly_training"}, "runConfigData": run_config}
    result = server.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def wait_for_status(server: DagsterDev, run_id: str, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = server.graphql(RUN_STATUS, {"id": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(1)
    raise TimeoutError(f"run {run_id} not finished after {timeout:.0f}s")


def expected_alerts(server: DagsterDev, run_id: str) -> set[tuple[str, str, str | None]]:
    """What the run recorded, read back through the webserver: every failed ERROR check and
    every rejected candidate, as (event, asset, check)."""
    found = server.graphql(RUN_EVENTS, {"id": run_id})["logsForRun"]
    assert found["__typename"] == "EventConnection" and not found["hasMore"]
    expected: set[tuple[str, str, str | None]] = set()
    for event in found["events"]:
        if event["__typename"] == "AssetCheckEvaluationEvent":
            evaluation = event["evaluation"]
            if not evaluation["success"] and evaluation["severity"] == "ERROR":
                name = evaluation["checkName"]
                kind = "live_skill_error" if name == "live_skill" else "check_failed"
                expected.add((kind, "/".join(evaluation["assetKey"]["path"]), name))
        elif event["__typename"] == "MaterializationEvent":
            texts = {e["label"]: e.get("text") for e in event["metadataEntries"]}
            if texts.get("status") == "rejected":
                expected.add(("candidate_rejected", "/".join(event["assetKey"]["path"]), None))
    return expected


def leaking_market_csv(path: Path) -> Path:
    """Three days of a perfect sine up to the frozen clock: direction is 'predictable', which
    the leakage gate calls a leak (as in test_promotion)."""
    market = periodic_market(3 * 1440)
    end = pd.Timestamp(FROZEN_NOW).floor("min")
    market["ts"] = market["ts"] - market["ts"].max() + end - pd.Timedelta(minutes=1)
    market["ts"] = market["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    market.to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_dagster_dev_posts_each_failure_once_also_after_the_receiver_was_down(
    tmp_path: Path, receiver: Receiver
) -> None:
    env = server_env(tmp_path)
    env.update(
        BLOFIN_SOURCE="file",
        BLOFIN_CANDLES_FILE=str(leaking_market_csv(tmp_path / "leak.csv")),
        BLOFIN_INSTRUMENTS="BTC-USDT,ETH-USDT",
        BLOFIN_ALERT_WEBHOOK=receiver.url,
        BLOFIN_UI_URL=UI,
        BLOFIN_ALERT_INTERVAL_SECONDS="4",  # the daemon looks every 5 s: each look ticks
    )
    with dagster_dev(REPO_ROOT, env, tmp_path / "dagster_dev.log", LOCATION) as server:
        repository = repository_selector(server)
        state = schedule_state(server, repository, SCHEDULE)
        server.graphql(STOP_SCHEDULE, {"id": state["id"]})  # no hourly run mid-test
        wait_until_idle(server)
        for name in ("run_failure_alerts", "asset_alerts"):  # their first tick sets the start
            wait_for_tick(server, repository, name, 0.0)

        # (a) A run that fails: its candle file is missing.
        missing = {
            "resources": {"settings": {"config": {"candles_file": str(tmp_path / "missing.csv")}}}
        }
        failed = launch(server, repository, missing)
        assert wait_for_status(server, failed) == "FAILURE"
        bodies = receiver.wait_for(lambda found: len(found) >= 1, timeout=60)
        assert [(b["event"], b["asset"], b["run_id"]) for b in bodies] == [
            ("run_failed", "candles", failed)
        ]
        assert (
            bodies[0]["run_url"] == f"{UI}/runs/{failed}" and "does not exist" in bodies[0]["why"]
        )

        # (b) A leaking candidate, while the receiver is down.
        receiver.stop()
        leak = launch(
            server, {**repository, "assetSelection": [{"path": [a]} for a in LEAK_RUN]}, {}
        )
        assert wait_for_status(server, leak) == "SUCCESS"  # a failed gate does not fail the run
        ended = server.graphql(RUN_TIMES, {"id": leak})["runOrError"]["endTime"]
        wait_for_tick(server, repository, "asset_alerts", ended, "Not delivered, will retry")
        expected = expected_alerts(server, leak)
        assert {
            ("check_failed", "direction_predictor", "leakage_alarm"),
            ("candidate_rejected", "direction_predictor", None),
        } <= expected

        receiver.start()  # back, on the same port
        bodies = receiver.wait_for(lambda found: len(found) >= 1 + len(expected), timeout=60)
        # A few more ticks: nothing is sent twice.
        settled = time.time()
        for _ in range(2):
            settled = wait_for_tick(server, repository, "asset_alerts", settled)["timestamp"]
        bodies = receiver.bodies()
    assert len(bodies) == 1 + len(expected), bodies
    later = bodies[1:]
    assert {(b["event"], b["asset"], b["check"]) for b in later} == expected
    assert {b["run_id"] for b in later} == {leak} and {b["run_url"] for b in later} == {
        f"{UI}/runs/{leak}"
    }
    assert len({b["event_id"] for b in bodies}) == len(bodies)
    rejected = next(b for b in later if b["event"] == "candidate_rejected")
    assert "leakage_alarm" in rejected["why"] and rejected["details"]["served_version"] == "none"
