"""The market-data sources through the real `hourly_training` job: BloFin (FakeBlofin over real
HTTP on 127.0.0.1) and CSV/Parquet files, into a temp DuckDB; every test checks what `candles`
holds afterwards, and failing runs must leave it exactly as it was, never with synthetic rows."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    ExecuteInProcessResult,
)
from threadpoolctl import threadpool_limits

from blofin_assets.market.ingest import OVERLAP_BARS
from blofin_assets.ml.specs import MODEL_SPECS
from blofin_assets_tests.conftest import FROZEN_NOW, Project
from blofin_assets_tests.fake_blofin import (
    CANDLES_PATH,
    MAX_LIMIT,
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


# ---- fixtures ------------------------------------------------------------------------------
@pytest.fixture
def history() -> pd.DataFrame:
    """Three days of closed 1m bars per instrument, the newest opening at 11:58."""
    return random_walk_candles(INSTRUMENTS, end=OPEN_BAR, periods=3 * 1440, seed=11)


@pytest.fixture
def fake(history: pd.DataFrame) -> Iterator[FakeBlofin]:
    with FakeBlofin(history) as server:
        yield server


@pytest.fixture
def blofin(project: Project, fake: FakeBlofin) -> FakeBlofin:
    use_blofin(project, fake)
    return fake


# ---- BloFin: backfill, incremental, whole graph ----------------------------------------------
def test_first_backfill_stores_every_closed_bar_of_the_lookback_and_no_open_bar(
    project: Project, instance: DagsterInstance, blofin: FakeBlofin, history: pd.DataFrame
) -> None:
    """First run: the whole lookback, paged backwards, minus the bar BloFin still has open."""
    result = run(project, instance)
    assert result.success

    frame = stored(project)
    assert len(frame) == len(INSTRUMENTS) * BACKFILL_BARS
    assert_same_candles(frame, window(history, BACKFILL_START, OPEN_BAR))
    assert (frame["volume_currency"] == frame["volume"]).all()  # base volume, not contracts
    assert OPEN_BAR not in set(frame["ts"])
    assert frame["ts"].max() == OPEN_BAR - BAR
    assert_never_synthetic(project, "blofin")

    # Paged backwards from the window end (so the first page held the open bar), one request
    # per 1440 bar slots and instrument.
    slots = (WINDOW_END - BACKFILL_START) // BAR
    for inst_id in INSTRUMENTS:
        sent = blofin.candle_requests(inst_id)
        assert len(sent) == math.ceil(slots / MAX_LIMIT) == 2
        assert int(sent[0].query["after"]) == ms(WINDOW_END)
        assert int(sent[1].query["after"]) < int(sent[0].query["after"])

    meta = metadata(result)
    assert meta["source"] == "blofin"
    assert meta["synthetic"] is False
    assert "SYNTHETIC" not in meta["data_label"].upper()
    assert meta["requests"] == len(blofin.candle_requests()) == 4
    rows = len(INSTRUMENTS) * BACKFILL_BARS
    assert meta["new_rows"] == meta["fetched_rows"] == meta["dagster/row_count"] == rows
    assert meta["rejected_rows"] == 0
    assert meta["validation"]["rows_rejected"] == 0
    assert meta["validation"]["gaps"] == 0
    assert meta["last_ts"] == str(OPEN_BAR - BAR)


def test_incremental_runs_fetch_only_newer_bars_in_one_request_per_instrument(
    project: Project, instance: DagsterInstance, blofin: FakeBlofin
) -> None:
    """Later runs ask only for bars after the stored max ts (small overlap): 1 request each."""
    assert run(project, instance).success
    before = stored(project)
    newer = random_walk_candles(
        INSTRUMENTS, end=OPEN_BAR + NEW_BARS * BAR, periods=NEW_BARS, seed=12
    )
    blofin.add_candles(newer)
    later = NOW + NEW_BARS * BAR  # 12:31:30: 12:30 closed by the clock, still open at BloFin
    project.set_env(BLOFIN_AS_OF=later.isoformat())
    blofin.clear_requests()

    result = run(project, instance)
    assert result.success
    meta = metadata(result)
    assert meta["new_rows"] == len(INSTRUMENTS) * NEW_BARS
    assert meta["requests"] == len(blofin.candle_requests()) == len(INSTRUMENTS)
    start = before["ts"].max() - OVERLAP_BARS * BAR
    for inst_id in INSTRUMENTS:
        (sent,) = blofin.candle_requests(inst_id)
        assert int(sent.query["after"]) == ms(later.floor(BAR))
        assert int(sent.query["limit"]) == (later.floor(BAR) - start) // BAR  # a handful
    frame = stored(project)
    assert len(frame) == len(before) + len(INSTRUMENTS) * NEW_BARS
    old = frame[frame["ts"] <= before["ts"].max()].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, before)
    assert_same_candles(frame[frame["ts"] > before["ts"].max()], window(newer, OPEN_BAR, later))
    assert frame["ts"].max() == OPEN_BAR + (NEW_BARS - 1) * BAR  # 12:30 was still open

    # Nothing new at BloFin: still one request each, nothing stored.
    state = table_state(project)
    blofin.clear_requests()
    result = run(project, instance)
    assert result.success
    assert metadata(result)["new_rows"] == 0
    assert len(blofin.candle_requests()) == len(INSTRUMENTS)
    assert table_state(project) == state
    assert_never_synthetic(project, "blofin")


def test_whole_graph_trains_on_fake_blofin_history(
    project: Project, instance: DagsterInstance, blofin: FakeBlofin
) -> None:
    """Three days from fake BloFin are enough for the whole graph: five result rows."""
    project.set_env(BLOFIN_LOOKBACK_DAYS="3", BLOFIN_TRAINING_DAYS="1")
    result = run(project, instance, graph=True)
    assert result.success
    assert metadata(result)["synthetic"] is False
    assert [row[0] for row in results_rows(project)] == MODEL_NAMES
    assert project.query("SELECT count(*) FROM features")[0][0] > 0
    assert_never_synthetic(project, "blofin")
    assert len(blofin.candle_requests()) == len(INSTRUMENTS) * 3  # 4320 slots / 1440


def test_a_429_and_a_500_are_retried_and_the_run_succeeds(
    project: Project, instance: DagsterInstance, blofin: FakeBlofin, history: pd.DataFrame
) -> None:
    """Rate limiting and a server error cost a retry each, not the run."""
    blofin.queue_faults(Fault.rate_limited(retry_after=0), Fault.server_error(500))
    result = run(project, instance)
    assert result.success
    assert metadata(result)["requests"] == len(blofin.candle_requests()) == 4 + 2
    assert_same_candles(stored(project), window(history, BACKFILL_START, OPEN_BAR))


# ---- BloFin: failures leave candles exactly as they were -------------------------------------
FAILURES = {
    "error_code": (
        Fault.error_code(code="152001", msg="Parameter after error"),
        ["BloFin returned an error code", "HTTP 200", "code='152001'", "Parameter after error"],
    ),
    "malformed_json": (
        Fault.malformed_json(),
        ["malformed JSON", "HTTP 200", '{"code":"0","msg":"success","data":[["17'],
    ),
    "http_400": (
        Fault.bad_request(msg="Parameter limit error", code="152004"),
        ["client error (not retried)", "HTTP 400", "code='152004'", "Parameter limit error"],
    ),
}


@pytest.mark.parametrize("name", FAILURES)
def test_a_non_retryable_failure_fails_the_run_and_changes_nothing(
    project: Project, instance: DagsterInstance, blofin: FakeBlofin, name: str
) -> None:
    """A BloFin error code, malformed JSON or a 400 fails at once, naming request and msg."""
    state = backfill_then_publish_newer(project, instance, blofin)
    fault, expected = FAILURES[name]
    blofin.queue_faults(fault)

    text = failure_text(run(project, instance, graph=True))
    assert "BloFin candles request for BTC-USDT failed" in text
    assert f"request GET {blofin.url}{CANDLES_PATH}?instId=BTC-USDT&bar=1m&after=" in text
    for part in expected:
        assert part in text
    assert len(blofin.candle_requests()) == 1  # not retried, nothing else asked
    assert table_state(project) == state
    assert_never_synthetic(project, "blofin")
    assert "features" not in tables(project)  # nothing downstream ran


def test_second_instrument_failing_after_the_first_was_fetched_stores_nothing(
    project: Project, instance: DagsterInstance, blofin: FakeBlofin
) -> None:
    """All-or-nothing per run: the first instrument's fetched bars are not stored either."""
    state = backfill_then_publish_newer(project, instance, blofin)
    blofin.queue_faults(PASS, Fault.error_code(code="152001", msg="System busy"))

    text = failure_text(run(project, instance, graph=True))
    assert [r.query["instId"] for r in blofin.candle_requests()] == INSTRUMENTS
    assert "BloFin candles request for ETH-USDT failed" in text
    assert f"{CANDLES_PATH}?instId=ETH-USDT&bar=1m&after=" in text
    assert "System busy" in text
    assert "request for BTC-USDT" not in text
    assert table_state(project) == state  # BTC's new bars were fetched, not stored
    assert_never_synthetic(project, "blofin")

    # With BloFin well again, the next run stores both instruments' new bars.
    result = run(project, instance)
    assert result.success
    assert metadata(result)["new_rows"] == len(INSTRUMENTS) * NEW_BARS


def test_an_instrument_blofin_does_not_know_fails_the_whole_batch(
    project: Project, instance: DagsterInstance, fake: FakeBlofin
) -> None:
    """An unknown instrument is BloFin's code 152002: the run fails, nothing is stored."""
    use_blofin(project, fake, [*INSTRUMENTS, "XRP-USDT"])
    text = failure_text(run(project, instance))
    assert "BloFin candles request for XRP-USDT failed" in text
    assert "code='152002'" in text and "Instrument ID does not exist." in text
    assert f"{CANDLES_PATH}?instId=XRP-USDT" in text
    assert len(fake.candle_requests("BTC-USDT")) == 2  # fetched, then thrown away
    assert table_state(project) == EMPTY_STATE


def test_exhausted_retries_on_a_first_backfill_store_nothing_and_never_fall_back(
    project: Project, instance: DagsterInstance, blofin: FakeBlofin
) -> None:
    """A first backfill that cannot reach BloFin leaves candles empty, not synthetic."""
    blofin.queue_faults(*[Fault.rate_limited(retry_after=0)] * 6)  # 1 try + 5 retries
    text = failure_text(run(project, instance, graph=True))
    assert "BloFin candles request for BTC-USDT failed: retries exhausted (5)" in text
    assert "HTTP 429" in text and "Too Many Requests" in text and "attempts: 6" in text
    assert f"{CANDLES_PATH}?instId=BTC-USDT" in text
    assert table_state(project) == EMPTY_STATE
    assert {"features", "targets"}.isdisjoint(tables(project))


def test_blofin_down_fails_after_retries_and_keeps_candles(
    project: Project, instance: DagsterInstance, blofin: FakeBlofin
) -> None:
    """Connection refused is retried, then fails the run; stored candles stay as they were."""
    state = backfill_then_publish_newer(project, instance, blofin)
    url = blofin.url
    blofin.stop()  # the port is closed now: connection refused

    text = failure_text(run(project, instance))
    assert "BloFin candles request for BTC-USDT failed: retries exhausted (5)" in text
    assert "ConnectionError" in text and "no HTTP response" in text
    assert f"request GET {url}{CANDLES_PATH}?instId=BTC-USDT&bar=1m&after=" in text
    assert table_state(project) == state
    assert_never_synthetic(project, "blofin")


def test_an_empty_first_backfill_is_an_error(project: Project, instance: DagsterInstance) -> None:
    """Nothing at all in the lookback window on a first backfill fails the run."""
    stale = random_walk_candles(INSTRUMENTS, end=NOW.floor("D") - pd.Timedelta(days=10), periods=90)
    with FakeBlofin(stale) as fake:
        use_blofin(project, fake)
        text = failure_text(run(project, instance))
    assert "empty batch" in text and "0 candle rows" in text
    assert table_state(project) == EMPTY_STATE


# ---- BloFin: bad bars, gaps ------------------------------------------------------------------
def broken_eth_bar(history: pd.DataFrame) -> tuple[pd.DataFrame, pd.Timestamp]:
    """`history` with one ETH bar inside the backfill window whose high is below its low."""
    bad_ts = OPEN_BAR - 100 * BAR
    broken = history.copy()
    row = (broken["inst_id"] == "ETH-USDT") & (broken["ts"] == bad_ts)
    broken.loc[row, "high"] = broken.loc[row, "low"] * 0.99
    return broken, bad_ts


def test_a_bad_bar_from_blofin_rejects_the_whole_batch_by_default(
    project: Project, instance: DagsterInstance, history: pd.DataFrame
) -> None:
    """Default reject mode: one bad bar refuses the batch, naming its request and reason."""
    broken, bad_ts = broken_eth_bar(history)
    with FakeBlofin(broken) as fake:
        use_blofin(project, fake)
        text = failure_text(run(project, instance))
    total = len(INSTRUMENTS) * BACKFILL_BARS
    assert f"blofin: 1 of {total} candle rows rejected (inconsistent_ohlc: 1)" in text
    line = next(x for x in text.splitlines() if "high < low" in x)
    assert f"GET {CANDLES_PATH}?instId=ETH-USDT&bar=1m&after=" in line
    assert f"ts={bad_ts.strftime('%Y-%m-%d %H:%M:%S')}" in line
    assert table_state(project) == EMPTY_STATE
    assert table_state(project, "candles_rejected") == EMPTY_STATE


def test_quarantine_stores_the_good_blofin_bars_and_sets_the_bad_one_aside(
    project: Project, instance: DagsterInstance, history: pd.DataFrame
) -> None:
    """Quarantine mode: good bars stored, the bad one in candles_rejected with its reason."""
    broken, bad_ts = broken_eth_bar(history)
    project.set_env(BLOFIN_ON_BAD_ROWS="quarantine")
    with FakeBlofin(broken) as fake:
        use_blofin(project, fake)
        result = run(project, instance)
    assert result.success, failure_text(result)
    total = len(INSTRUMENTS) * BACKFILL_BARS
    meta = metadata(result)
    assert meta["rejected_rows"] == 1
    assert meta["new_rows"] == total - 1
    assert meta["validation"]["rejected_inconsistent_ohlc"] == 1
    frame = stored(project)
    assert len(frame) == total - 1
    assert not ((frame["inst_id"] == "ETH-USDT") & (frame["ts"] == bad_ts)).any()
    ((inst_id, ts, origin, reason, source),) = project.query(
        "SELECT inst_id, ts, origin, reason, source FROM candles_rejected"
    )
    assert (inst_id, pd.Timestamp(ts), source) == ("ETH-USDT", bad_ts, "blofin")
    assert origin.startswith(f"GET {CANDLES_PATH}?instId=ETH-USDT&bar=1m&after=")
    assert "high < low" in reason


def test_gaps_are_allowed_counted_in_metadata_and_warned_by_the_check(
    project: Project, instance: DagsterInstance, history: pd.DataFrame
) -> None:
    """A 600-bar hole is stored around, counted in metadata and WARNed by the gaps check."""
    gap_start, gap_bars = OPEN_BAR - 1000 * BAR, 600
    hole = (
        (history["inst_id"] == "BTC-USDT")
        & (history["ts"] >= gap_start)
        & (history["ts"] < gap_start + gap_bars * BAR)
    )
    with FakeBlofin(history[~hole]) as fake:
        use_blofin(project, fake)
        result = run(project, instance)
    assert result.success
    meta = metadata(result)
    assert meta["validation"]["gaps"] == 1
    assert meta["validation"]["largest_gap_bars"] == gap_bars
    assert meta["rejected_rows"] == 0
    assert len(stored(project)) == len(INSTRUMENTS) * BACKFILL_BARS - gap_bars

    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "gaps"]
    assert check.passed is False
    assert check.severity == AssetCheckSeverity.WARN
    assert check.metadata["gaps"].value == 1
    assert check.metadata["per_instrument"].value == {"BTC-USDT": 1, "ETH-USDT": 0}


# ---- file source -----------------------------------------------------------------------------
def write_candles(frame: pd.DataFrame, path: Path, layout: str) -> Path:
    """Write contract candles as a generic CSV (ISO ts), Parquet (typed ts) or BloFin CSV."""
    if layout == "generic_csv":
        out = frame[CANDLE_FIELDS].copy()
        out["ts"] = out["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        out.to_csv(path, index=False)
    elif layout == "parquet":
        frame[CANDLE_FIELDS].to_parquet(path, index=False)
    else:
        out = pd.DataFrame(
            {
                "instId": frame["inst_id"],
                "ts": frame["ts"].astype("int64") // 1_000_000,
                "open": frame["open"],
                "high": frame["high"],
                "low": frame["low"],
                "close": frame["close"],
                "vol": (frame["volume"] / 0.01).round(6),  # contracts
                "volCurrency": frame["volume"],
                "volCurrencyQuote": (frame["volume"] * frame["close"]).round(4),
                "confirm": "1",
            }
        )
        open_bar = out.iloc[[-1]].assign(ts=ms(DAY_END), confirm="0")  # exported still open
        pd.concat([out, open_bar], ignore_index=True).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("layout", "name"),
    [
        ("generic_csv", "candles.csv"),
        ("parquet", "candles.parquet"),
        ("blofin", "blofin_export.csv"),
    ],
)
def test_a_clean_file_loads_and_a_rerun_adds_nothing(
    project: Project, instance: DagsterInstance, tmp_path: Path, layout: str, name: str
) -> None:
    """Generic CSV (ISO ts), Parquet and BloFin-layout CSV load exactly; a rerun adds nothing."""
    day = random_walk_candles(INSTRUMENTS, end=DAY_END, periods=1440, seed=3)
    use_file(project, write_candles(day, tmp_path / name, layout))

    result = run(project, instance)
    assert result.success
    meta = metadata(result)
    assert (meta["source"], meta["synthetic"]) == ("file", False)
    assert "SYNTHETIC" not in meta["data_label"].upper()
    assert meta["new_rows"] == meta["fetched_rows"] == len(day)
    assert meta["rejected_rows"] == 0 and meta["requests"] == 0
    frame = stored(project)
    assert_same_candles(frame, day)  # volume is volCurrency for the BloFin layout
    assert frame["ts"].max() < DAY_END  # BloFin layout: the confirm=0 row is not stored
    assert_never_synthetic(project, "file")

    state = table_state(project)
    result = run(project, instance)
    assert result.success
    assert metadata(result)["new_rows"] == 0
    assert table_state(project) == state


def test_whole_graph_trains_from_a_parquet_file(
    project: Project, instance: DagsterInstance, tmp_path: Path
) -> None:
    """Three days from a Parquet file are enough for the whole graph: five result rows."""
    history = random_walk_candles(INSTRUMENTS, end=DAY_END, periods=3 * 1440, seed=21)
    use_file(project, write_candles(history, tmp_path / "history.parquet", "parquet"))
    project.set_env(BLOFIN_TRAINING_DAYS="1")
    result = run(project, instance, graph=True)
    assert result.success
    assert metadata(result)["new_rows"] == len(history)
    assert [row[0] for row in results_rows(project)] == MODEL_NAMES
    assert_never_synthetic(project, "file")


def test_an_empty_file_on_a_first_load_is_an_error(
    project: Project, instance: DagsterInstance, tmp_path: Path
) -> None:
    """A header-only file on a first load fails the run."""
    path = tmp_path / "empty.csv"
    path.write_text(",".join(CANDLE_FIELDS) + "\n")
    use_file(project, path)
    text = failure_text(run(project, instance))
    assert "file: empty batch: 0 candle rows" in text
    assert table_state(project) == EMPTY_STATE


def bad_hour_file(tmp_path: Path) -> tuple[Path, dict[int, str]]:
    """The hour after DAY_END as a generic CSV with four bad rows; returns the path and each
    bad row's 1-based data row number with the text its rejection reason must contain."""
    hour = random_walk_candles(INSTRUMENTS, end=DAY_END + 60 * BAR, periods=60, seed=4)
    rows = hour[CANDLE_FIELDS].astype(object)
    rows["ts"] = hour["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    btc_10 = int(rows.index[(rows["inst_id"] == "BTC-USDT")][10])
    eth_20 = int(rows.index[(rows["inst_id"] == "ETH-USDT")][20])
    rows.loc[btc_10, "high"] = float(hour.loc[btc_10, "low"]) * 0.9
    rows.loc[eth_20, "close"] = "n/a"
    unknown = rows.iloc[[0]].assign(inst_id="DOGE-USDT")
    future = rows.iloc[[1]].assign(ts="2026-11-20T12:05:00Z")  # after BLOFIN_AS_OF
    rows = pd.concat([rows, unknown, future], ignore_index=True)
    path = tmp_path / "bad_hour.csv"
    rows.to_csv(path, index=False)
    n = len(rows)
    return path, {
        btc_10 + 1: "high < low",
        eth_20 + 1: "close is not a number",
        n - 1: "not in the instrument list",
        n: "bar not closed",
    }


def test_bad_file_rows_reject_the_whole_batch_naming_file_and_rows(
    project: Project, instance: DagsterInstance, tmp_path: Path
) -> None:
    """Default reject mode: the error names file, rows, reasons and counts; candles unchanged."""
    day = random_walk_candles(INSTRUMENTS, end=DAY_END, periods=1440, seed=3)
    use_file(project, write_candles(day, tmp_path / "day.csv", "generic_csv"))
    assert run(project, instance).success
    state = table_state(project)
    path, bad = bad_hour_file(tmp_path)
    use_file(project, path)

    text = failure_text(run(project, instance, graph=True))
    assert f"file: 4 of {2 * 60 + 2} candle rows rejected" in text
    for reason in ("unknown_instrument", "non_numeric", "inconsistent_ohlc", "unclosed_bar"):
        assert f"{reason}: 1" in text
    for row, reason in bad.items():
        assert f"bad_hour.csv row {row}: " in text
        line = next(x for x in text.splitlines() if f"bad_hour.csv row {row}: " in x)
        assert reason in line
    assert table_state(project) == state
    assert table_state(project, "candles_rejected") == EMPTY_STATE


def test_quarantine_loads_the_good_file_rows_and_keeps_the_bad_ones_with_reasons(
    project: Project, instance: DagsterInstance, tmp_path: Path
) -> None:
    """Quarantine mode: good rows loaded, bad rows in candles_rejected with their reasons."""
    path, bad = bad_hour_file(tmp_path)
    use_file(project, path)
    project.set_env(BLOFIN_ON_BAD_ROWS="quarantine")

    result = run(project, instance)
    assert result.success, failure_text(result)
    meta = metadata(result)
    assert meta["rejected_rows"] == len(bad) == 4
    assert meta["new_rows"] == 2 * 60 - 2
    assert meta["validation"]["rows_rejected"] == 4
    assert meta["validation"]["rejected_unknown_instrument"] == 1
    assert meta["validation"]["rejected_unclosed_bar"] == 1
    frame = stored(project)
    assert len(frame) == 2 * 60 - 2
    assert set(frame["inst_id"]) == set(INSTRUMENTS)
    assert frame["ts"].max() == DAY_END + 59 * BAR  # the 12:05 future bar is not stored
    rejected = project.query("SELECT origin, reason, source FROM candles_rejected ORDER BY origin")
    assert {origin: reason for origin, reason, _ in rejected}.keys() == {
        f"bad_hour.csv row {row}" for row in bad
    }
    for origin, reason, source in rejected:
        assert source == "file"
        assert bad[int(origin.rsplit(" ", 1)[1])] in reason

    # Importing the same file again quarantines nothing twice and adds no candle.
    again = run(project, instance)
    assert again.success, failure_text(again)
    assert metadata(again)["new_rows"] == 0
    assert project.query("SELECT count(*) FROM candles_rejected")[0][0] == len(bad)


def test_an_instrument_missing_from_its_first_backfill_fails_the_run(
    project: Project, instance: DagsterInstance, tmp_path: Path
) -> None:
    """A configured instrument with no candles at all is an error, not a silent gap."""
    path, _ = bad_hour_file(tmp_path)
    use_file(project, path)
    project.set_env(
        BLOFIN_ON_BAD_ROWS="quarantine", BLOFIN_INSTRUMENTS=",".join([*INSTRUMENTS, "XRP-USDT"])
    )
    result = run(project, instance)
    assert not result.success
    assert "no candles for ['XRP-USDT'] on their first backfill" in failure_text(result)
    assert project.query("SELECT count(*) FROM candles")[0][0] == 0
