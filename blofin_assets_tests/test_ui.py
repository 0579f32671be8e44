"""End to end through what a user sees: `dagster dev` on a temp instance, "materialize all" over
the webserver's GraphQL API, new candles making the five models stale, and a screenshot of the
asset graph taken by headless Chromium (written to docs/asset_graph.png too, the README's
picture, when UPDATE_DOCS_SCREENSHOT=1)."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import duckdb
import pytest
from playwright.sync_api import Page, sync_playwright

from blofin_assets.ml.specs import MODEL_SPECS
from blofin_assets_tests.conftest import FROZEN_NOW
from blofin_assets_tests.webserver import DagsterDev, dagster_dev

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCATION = "blofin_assets"
JOB = "hourly_training"
SCHEDULE = "hourly_training_schedule"
MODEL_NAMES = sorted(spec.name for spec in MODEL_SPECS)
MODEL_CHECKS = {
    "leakage_alarm", "metric_regression", "beats_baseline", "served_files_intact", "live_skill",
    "feature_drift", "label_drift",
}  # fmt: skip
DATA_ASSETS = ["candles", "features", "targets"]
ALL_ASSETS = {*DATA_ASSETS, *MODEL_NAMES, "ml_model_results"}
LATER_AS_OF = "2026-11-20T13:00:30Z"  # one hour after FROZEN_NOW: 60 new bars per instrument
INSTRUMENTS = "BTC-USDT,ETH-USDT,SOL-USDT"
SCREENSHOT = REPO_ROOT / "docs" / "asset_graph.png"
MODEL_PAGE_SCREENSHOT = REPO_ROOT / "docs" / "model_page.png"
MODEL_PAGE = "risk_scorer"
# What the model page must answer before any scrolling, in this order.
MODEL_PAGE_HEADLINE = ["status", "served_version", "skill", "metric", "baseline"]
# The README's screenshot is a tracked file: a test run writes it only when asked to, so
# running the tests leaves the working tree clean.
UPDATE_SCREENSHOT = os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# A fresh browser profile would show the "Join the Dagster community" dialog over the graph;
# a vertical layout fits five models side by side in a landscape screenshot.
BROWSER_STORAGE = (
    "window.localStorage.setItem('communityNux', JSON.stringify('1'));"
    "window.localStorage.setItem('asset-graph-direction', JSON.stringify('vertical'));"
)
TERMINAL_FAILURES = {"FAILURE", "CANCELED", "CANCELING"}

REPOSITORIES = """
{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }
"""
SCHEDULES = """
query($repo: RepositorySelector!) {
  schedulesOrError(repositorySelector: $repo) {
    __typename
    ... on Schedules { results { name cronSchedule scheduleState { id status } } }
  }
}
"""
STOP_SCHEDULE = """
mutation($id: String!) {
  stopRunningSchedule(id: $id) {
    __typename
    ... on ScheduleStateResult { scheduleState { status } }
    ... on PythonError { message }
  }
}
"""
RUNS = "{ runsOrError { ... on Runs { results { runId status } } } }"
LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}
"""
RUN_TIMES = "query($id: ID!) { runOrError(runId: $id) { ... on Run { startTime endTime } } }"
RUN_STATUS = "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"
ASSET_NODES = """
{
  assetNodes {
    assetKey { path }
    groupName
    staleStatus
    staleCauses { key { path } category reason dependency { path } }
    assetChecksOrError { ... on AssetChecks { checks { name } } }
  }
}
"""
LATEST_MATERIALIZATION = """
query($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) {
    ... on Asset {
      assetMaterializations(limit: 1) {
        runId
        metadataEntries { label ... on IntMetadataEntry { intValue } }
      }
    }
  }
}
"""


def server_env(tmp_path: Path) -> dict[str, str]:
    """A temp instance and warehouse, and a frozen clock, whatever the caller's shell has set."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLOFIN_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(home),
        BLOFIN_DUCKDB_PATH=str(tmp_path / "data" / "blofin.duckdb"),
        BLOFIN_MODELS_DIR=str(tmp_path / "models"),
        BLOFIN_AS_OF=FROZEN_NOW,
        BLOFIN_LOOKBACK_DAYS="3",
        BLOFIN_TRAINING_DAYS="3",
        BLOFIN_INSTRUMENTS=INSTRUMENTS,
    )
    return env


def repository_selector(server: DagsterDev) -> dict[str, str]:
    """The repository name is Dagster's (`__repository__` for a Definitions); ask, not guess."""
    nodes = server.graphql(REPOSITORIES)["repositoriesOrError"]["nodes"]
    names = [node["name"] for node in nodes if node["location"]["name"] == LOCATION]
    assert len(names) == 1, nodes
    return {"repositoryLocationName": LOCATION, "repositoryName": names[0]}


def schedule_state(server: DagsterDev, repository: dict[str, str], name: str) -> dict[str, str]:
    found = server.graphql(SCHEDULES, {"repo": repository})["schedulesOrError"]
    assert found["__typename"] == "Schedules", found
    states = {s["name"]: s["scheduleState"] for s in found["results"]}
    assert name in states, states
    return states[name]


def wait_until_idle(server: DagsterDev, timeout: float = 240) -> None:
    """A schedule tick that fired before we stopped it would race our runs: let it finish."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = server.graphql(RUNS)["runsOrError"]["results"]
        if all(run["status"] in ("SUCCESS", "FAILURE", "CANCELED") for run in runs):
            return
        time.sleep(2)
    raise TimeoutError(f"runs still active after {timeout:.0f}s: {runs}")


def launch_run(server: DagsterDev, selector: dict[str, Any], run_config: dict[str, Any]) -> str:
    """What the UI's "Materialize" button sends: launchRun on the job, optionally a subset."""
    params = {"selector": {**selector, "jobName": JOB}, "runConfigData": run_config}
    result = server.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def wait_for_run(server: DagsterDev, run_id: str, timeout: float = 240) -> None:
    """Runs are queued (max_concurrent_runs: 1) and dequeued by the daemon dagster dev runs."""
    deadline = time.monotonic() + timeout
    status = "unknown"
    while time.monotonic() < deadline:
        status = server.graphql(RUN_STATUS, {"id": run_id})["runOrError"]["status"]
        if status == "SUCCESS":
            return
        assert status not in TERMINAL_FAILURES, f"run {run_id} ended {status}"
        time.sleep(2)
    raise TimeoutError(f"run {run_id} still {status} after {timeout:.0f}s")


def run_window(server: DagsterDev, run_id: str) -> tuple[float, float]:
    """When a run really executed (start and end time, epoch seconds)."""
    run = server.graphql(RUN_TIMES, {"id": run_id})["runOrError"]
    return run["startTime"], run["endTime"]


def asset_nodes(server: DagsterDev) -> dict[str, dict[str, Any]]:
    nodes = server.graphql(ASSET_NODES)["assetNodes"]
    return {"/".join(node["assetKey"]["path"]): node for node in nodes}


def latest_int_metadata(server: DagsterDev, asset: str) -> dict[str, int]:
    found = server.graphql(LATEST_MATERIALIZATION, {"key": {"path": [asset]}})["assetOrError"]
    entries = found["assetMaterializations"][0]["metadataEntries"]
    return {entry["label"]: entry["intValue"] for entry in entries if "intValue" in entry}


def visible_text(page: Page, text: str, timeout: float = 30_000) -> None:
    page.get_by_text(text, exact=True).filter(visible=True).first.wait_for(timeout=timeout)


def fit_graph(page: Page) -> None:
    """Zoom to fit, then make sure the whole graph is clear of the toolbar that overlays the
    graph's top edge, zooming out no further than node names stay legible."""
    graph = page.locator("svg", has_text="candles")
    legible = page.get_by_text(MODEL_NAMES[0], exact=True).filter(visible=True)
    viewport = page.locator("div").filter(has=page.locator("[data-zoom-control]")).filter(has=graph)
    frame = viewport.last.bounding_box()
    toolbar = page.get_by_role("button", name="Materialize all").bounding_box()
    assert frame and toolbar
    left, right = frame["x"], frame["x"] + frame["width"]
    top, bottom = toolbar["y"] + toolbar["height"] + 12, frame["y"] + frame["height"]
    page.mouse.dblclick(left + 20, bottom - 15)  # on the background: Dagster's zoom to fit
    page.wait_for_timeout(1_000)  # its animation
    zoom_out = page.locator('button:has([aria-label="zoom_out"])')
    zoom_in = page.locator('button:has([aria-label="zoom_in"])')
    for _ in range(10):
        box = graph.bounding_box()
        assert box
        if box["height"] <= bottom - top and box["width"] <= right - left:
            break
        zoom_out.click()
        page.wait_for_timeout(300)
        if not legible.count():  # below 0.6 Dagster draws bare boxes with clipped names
            zoom_in.click()
            page.wait_for_timeout(300)
            break
    box = graph.bounding_box()
    assert box
    dx = (left + right) / 2 - (box["x"] + box["width"] / 2)
    dy = (top + bottom) / 2 - (box["y"] + box["height"] / 2)
    page.mouse.move(left + 20, bottom - 15)  # drag the background to pan
    page.mouse.down()
    page.mouse.move(left + 20 + dx, bottom - 15 + dy, steps=8)
    page.mouse.up()
    page.wait_for_timeout(500)


VIEWPORT = {"width": 1600, "height": 1000}


@contextmanager
def browser_page() -> Iterator[Page]:
    """A fresh headless Chromium page of the README pictures' size; always closed."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport=VIEWPORT)
            context.add_init_script(BROWSER_STORAGE)
            yield context.new_page()
        finally:
            browser.close()


def save_png(png: bytes, targets: list[Path]) -> None:
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(png)


def screenshot_asset_graph(base_url: str, groups: list[str], targets: list[Path]) -> None:
    """The global lineage page with every group expanded and the whole graph in view."""
    expanded = ",".join(f"global@global:{group}" for group in groups)
    url = f"{base_url}/asset-groups?{urlencode({'expanded': expanded})}"
    with browser_page() as page:
        page.goto(url, timeout=60_000)
        visible_text(page, "candles", timeout=90_000)
        # Give the graph the whole window: hide the navigation and the asset tree.
        page.get_by_text("Hide navigation").click()
        page.locator('button:has([aria-label="panel_show_right"])').click()
        fit_graph(page)
        for name in [*MODEL_NAMES, "Unsynced (3)"]:
            visible_text(page, name)
        save_png(page.screenshot(), targets)


def screenshot_model_page(base_url: str, name: str, targets: list[Path]) -> None:
    """The model's page as it opens: its first screen must hold the headline rows, in order."""
    with browser_page() as page:
        page.goto(f"{base_url}/assets/{name}", timeout=60_000)
        visible_text(page, "served_version", timeout=90_000)
        page.wait_for_timeout(1_000)  # the status and history panels settle
        tops = []
        for key in MODEL_PAGE_HEADLINE:
            cell = page.locator("td").filter(has_text=re.compile(f"^{key}$")).first
            box = cell.bounding_box()
            assert box is not None, key
            assert box["y"] + box["height"] <= VIEWPORT["height"], f"{key} is below the fold"
            tops.append(box["y"])
        assert tops == sorted(tops), f"headline out of order: {tops}"
        save_png(page.screenshot(), targets)


@pytest.mark.slow
def test_materialize_all_in_dagster_dev_then_new_candles_make_models_stale(
    tmp_path: Path,
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium")
    env = server_env(tmp_path)
    with dagster_dev(REPO_ROOT, env, tmp_path / "dagster_dev.log", LOCATION) as server:
        repository = repository_selector(server)
        state = schedule_state(server, repository, SCHEDULE)
        assert state["status"] == "RUNNING"  # on by default, no click needed
        # A tick at hh:05 would retrain everything mid-test and make the models fresh again.
        stopped = server.graphql(STOP_SCHEDULE, {"id": state["id"]})["stopRunningSchedule"]
        assert stopped["scheduleState"]["status"] == "STOPPED", stopped
        wait_until_idle(server)

        nodes = asset_nodes(server)
        assert set(nodes) >= ALL_ASSETS, sorted(nodes)
        for name in MODEL_NAMES:
            checks = {c["name"] for c in nodes[name]["assetChecksOrError"]["checks"]}
            assert checks == MODEL_CHECKS, name

        # "Materialize all": the hourly job, whole graph.
        wait_for_run(server, launch_run(server, repository, {}))
        model_page = tmp_path / "model_page.png"
        screenshot_model_page(
            server.url, MODEL_PAGE, [model_page, *([MODEL_PAGE_SCREENSHOT] * UPDATE_SCREENSHOT)]
        )
        nodes = asset_nodes(server)
        # The hourly job never tunes: the <model>_params assets stay unmaterialized.
        tuning = {key for key in nodes if key.endswith("_params")}
        assert tuning == {f"{name}_params" for name in MODEL_NAMES}
        assert {key: node["staleStatus"] for key, node in nodes.items() if key not in tuning} == (
            dict.fromkeys(set(nodes) - tuning, "FRESH")
        )

        # An hour later: new candles, features and targets only; the models are not retrained.
        subset = {**repository, "assetSelection": [{"path": [key]} for key in DATA_ASSETS]}
        # One field overridden from the launchpad; the others keep their environment defaults.
        run_config = {"resources": {"settings": {"config": {"as_of": LATER_AS_OF}}}}
        wait_for_run(server, launch_run(server, subset, run_config))
        assert latest_int_metadata(server, "candles")["new_rows"] == 3 * 60

        nodes = asset_nodes(server)
        for key, node in sorted(nodes.items()):
            print(key, node["staleStatus"], node["staleCauses"])
        for key in DATA_ASSETS:
            assert nodes[key]["staleStatus"] == "FRESH", key
        for name in MODEL_NAMES:
            assert nodes[name]["staleStatus"] == "STALE", name
            causes = {
                ("/".join(c["key"]["path"]), c["category"], c["reason"])
                for c in nodes[name]["staleCauses"]
            }
            assert causes == {
                ("candles", "DATA", "has a new data version"),
                ("features", "DATA", "has a new data version"),
                ("targets", "DATA", "has a new data version"),
            }, name

        # The graph picture is retaken only on request: with the ensemble and the tuning group
        # the zoom-to-fit no longer keeps every name legible (docs/asset_graph.png predates
        # them; fit_graph needs a new layout rule before it runs in every test again).
        if UPDATE_SCREENSHOT:
            groups = sorted({node["groupName"] for node in nodes.values()} - {"tuning"})
            screenshot_asset_graph(server.url, groups, [tmp_path / "asset_graph.png", SCREENSHOT])

        # The schedule and a manual "Materialize all" overlap: the shipped dagster.yaml queues
        # them, so both succeed, one after the other, with no duplicate or lost rows. They run
        # as of the later clock too: the environment's is now before the newest stored bar,
        # which candles refuses.
        first, second = (launch_run(server, repository, run_config) for _ in range(2))
        for run_id in (first, second):
            wait_for_run(server, run_id)
        windows = sorted(run_window(server, run_id) for run_id in (first, second))
        assert windows[0][1] <= windows[1][0], f"runs overlapped: {windows}"
    assert model_page.stat().st_size > 10_000
    with duckdb.connect(env["BLOFIN_DUCKDB_PATH"], read_only=True) as con:
        assert con.execute(
            "SELECT count(*), count(DISTINCT (inst_id, ts)) FROM candles"
        ).fetchone() == (3 * 3 * 1440 + 3 * 60, 3 * 3 * 1440 + 3 * 60)  # 3 days + 1 hour
        # One full run, a data-only run, then two full runs: 3 x 6 results (the five and the
        # ensemble), none twice.
        assert con.execute(
            "SELECT count(*), count(DISTINCT (model_name, version)) FROM ml_model_results"
        ).fetchone() == (18, 18)
