"""What the source tests through the real `hourly_training` job share: the frozen clock and
fetch window, running the job, and reading back what `candles` holds."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    ExecuteInProcessResult,
)
from threadpoolctl import threadpool_limits

from blofin_assets.ml.ensemble import ENSEMBLE_SPEC
from blofin_assets.ml.specs import MODEL_SPECS
from blofin_assets_tests.conftest import FROZEN_NOW, Project
from blofin_assets_tests.fake_blofin import (
    FakeBlofin,
    Fault,
    random_walk_candles,
)

NOW = pd.Timestamp(FROZEN_NOW)  # 12:00:30: the 11:59 bar closed at 12:00, 12:00 is open
BAR = pd.Timedelta(minutes=1)
INSTRUMENTS = ["BTC-USDT", "ETH-USDT"]
LOOKBACK_DAYS = 2
WINDOW_END = NOW.floor(BAR)  # exclusive end of the fetch window: 12:00
BACKFILL_START = (NOW - pd.Timedelta(days=LOOKBACK_DAYS)).floor(BAR)
# The fake's newest *confirmed* bar opens at 11:58; it serves 11:59 as its still-open bar
# (closed by the clock, not yet confirmed by "BloFin"), inside the window, so the client sees
# it and must drop it.
OPEN_BAR = WINDOW_END - BAR
BACKFILL_BARS = (OPEN_BAR - BACKFILL_START) // BAR  # closed bars per instrument: 2879
NEW_BARS = 31  # the incremental step: 11:59 .. 12:29 confirmed, 12:30 open
# The fake serves a request that meets this fault normally: a no-op slot in the fault queue.
PASS = Fault.timeout(0.0)
DAY_END = pd.Timestamp("2026-11-20T00:00:00Z")  # file tests: one day of bars before this
CANDLE_FIELDS = ["inst_id", "ts", "open", "high", "low", "close", "volume"]
MODEL_NAMES = sorted(spec.name for spec in MODEL_SPECS)
# Every model a whole-graph run trains and records: the five and the ensemble stacked on them.
TRAINED_NAMES = sorted([*MODEL_NAMES, ENSEMBLE_SPEC.name])


# ---- helpers -------------------------------------------------------------------------------
def run(
    project: Project, instance: DagsterInstance, *, graph: bool = False
) -> ExecuteInProcessResult:
    """The real hourly_training job (whole graph, or just candles + its checks); a failed run
    is returned, not raised, so its step failure can be inspected."""
    job = project.defs().resolve_job_def("hourly_training")
    # One native thread per pool: on a busy 2-core machine OpenMP oversubscription makes the
    # gradient-boosting fits ~10x slower; the results do not depend on it.
    with threadpool_limits(1):
        return job.execute_in_process(
            instance=instance,
            asset_selection=None if graph else [AssetKey("candles")],
            raise_on_error=False,
        )


def failure_text(result: ExecuteInProcessResult) -> str:
    """The failed run's error text; only the candles step may have failed, nothing materialized."""
    assert not result.success
    failures = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    assert [e.step_key for e in failures] == ["candles"]
    materialized = [
        e for e in result.all_events if e.event_type == DagsterEventType.ASSET_MATERIALIZATION
    ]
    assert materialized == []
    error = failures[0].step_failure_data.error
    assert error is not None
    return error.to_string()


def metadata(result: ExecuteInProcessResult, asset: str = "candles") -> dict[str, Any]:
    events = result.asset_materializations_for_node(asset)
    assert len(events) == 1
    return {key: value.value for key, value in events[0].metadata.items()}


def table_state(project: Project, table: str = "candles") -> tuple[int, str]:
    """Row count and a hash of every column of every row (ingested_at and source included)."""
    count, digest = project.query(
        f"SELECT count(*), md5(coalesce(string_agg(CAST(t AS VARCHAR), chr(10) "
        f"ORDER BY CAST(t AS VARCHAR)), '')) FROM {table} AS t"
    )[0]
    return int(count), str(digest)


EMPTY_STATE = (0, hashlib.md5(b"").hexdigest())  # table_state of an empty table


def tables(project: Project) -> set[str]:
    return {row[0] for row in project.query("SELECT table_name FROM information_schema.tables")}


def stored(project: Project) -> pd.DataFrame:
    with duckdb.connect(str(project.db_path), read_only=True) as con:
        frame = con.execute(
            "SELECT inst_id, ts, open, high, low, close, volume, volume_currency, volume_quote, "
            "source FROM candles ORDER BY inst_id, ts"
        ).df()
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).astype("datetime64[ns, UTC]")
    return frame


def window(candles: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The rows of `candles` with start <= ts < end, sorted like `stored`."""
    inside = candles[(candles["ts"] >= start) & (candles["ts"] < end)]
    return inside.sort_values(["inst_id", "ts"], ignore_index=True)


def assert_same_candles(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        actual[CANDLE_FIELDS].reset_index(drop=True),
        expected[CANDLE_FIELDS].reset_index(drop=True),
        check_exact=False,
        rtol=1e-12,
    )


def ms(stamp: pd.Timestamp) -> int:
    return stamp.value // 1_000_000


def use_blofin(project: Project, fake: FakeBlofin, instruments: list[str] = INSTRUMENTS) -> None:
    project.set_env(
        BLOFIN_SOURCE="blofin",
        BLOFIN_API_URL=fake.url,
        BLOFIN_LOOKBACK_DAYS=str(LOOKBACK_DAYS),
        BLOFIN_INSTRUMENTS=",".join(instruments),
    )


def use_file(project: Project, path: Path) -> None:
    project.set_env(
        BLOFIN_SOURCE="file",
        BLOFIN_CANDLES_FILE=str(path),
        BLOFIN_INSTRUMENTS=",".join(INSTRUMENTS),
    )


def backfill_then_publish_newer(
    project: Project, instance: DagsterInstance, fake: FakeBlofin
) -> tuple[int, str]:
    """A good first backfill, then NEW_BARS more bars at the fake and the clock moved on.
    Returns the candles state the next (failing) run must leave untouched."""
    assert run(project, instance).success
    fake.add_candles(
        random_walk_candles(INSTRUMENTS, end=OPEN_BAR + NEW_BARS * BAR, periods=NEW_BARS, seed=5)
    )
    project.set_env(BLOFIN_AS_OF=(NOW + (NEW_BARS - 1) * BAR).isoformat())
    fake.clear_requests()
    state = table_state(project)
    assert state[0] == len(INSTRUMENTS) * BACKFILL_BARS
    return state


def assert_never_synthetic(project: Project, source: str) -> None:
    assert {row[0] for row in project.query("SELECT DISTINCT source FROM candles")} <= {source}
    assert project.query("SELECT count(*) FROM candles WHERE source = 'demo'")[0][0] == 0


def results_rows(project: Project) -> list[tuple]:
    return project.query("SELECT model_name FROM ml_model_results ORDER BY model_name")
