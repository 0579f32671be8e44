"""The BloFin source through the real `hourly_training` job: FakeBlofin over real HTTP on
127.0.0.1 into a temp DuckDB. Every test checks what `candles` holds afterwards; failing runs
must leave it exactly as it was, never with synthetic rows."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pandas as pd
import pytest
from dagster import (
    AssetCheckSeverity,
    DagsterInstance,
)

from blofin_assets.market.ingest import OVERLAP_BARS
from blofin_assets_tests.conftest import Project
from blofin_assets_tests.fake_blofin import (
    CANDLES_PATH,
    MAX_LIMIT,
    FakeBlofin,
    Fault,
    random_walk_candles,
)
from blofin_assets_tests.in_dagster import (
    BACKFILL_BARS,
    BACKFILL_START,
    BAR,
    EMPTY_STATE,
    INSTRUMENTS,
    NEW_BARS,
    NOW,
    OPEN_BAR,
    PASS,
    TRAINED_NAMES,
    WINDOW_END,
    assert_never_synthetic,
    assert_same_candles,
    backfill_then_publish_newer,
    failure_text,
    metadata,
    ms,
    results_rows,
    run,
    stored,
    table_state,
    tables,
    use_blofin,
    window,
)


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
    """Three days from fake BloFin are enough for the whole graph: six result rows
    (the five and the ensemble)."""
    project.set_env(BLOFIN_LOOKBACK_DAYS="3", BLOFIN_TRAINING_DAYS="1")
    result = run(project, instance, graph=True)
    assert result.success
    assert metadata(result)["synthetic"] is False
    assert [row[0] for row in results_rows(project)] == TRAINED_NAMES
    assert project.query("SELECT count(*) FROM features")[0][0] > 0
    assert_never_synthetic(project, "blofin")
    assert len(blofin.candle_requests()) == len(INSTRUMENTS) * 3  # 4320 slots / 1440


def test_a_transient_code_and_a_5xx_are_retried_and_the_run_succeeds(
    project: Project, instance: DagsterInstance, blofin: FakeBlofin, history: pd.DataFrame
) -> None:
    """BloFin's "Please try again" (code 103013) and a gateway's 502 cost a retry each."""
    blofin.queue_faults(Fault.transient("103013"), Fault.server_error(502))
    result = run(project, instance)
    assert result.success
    assert metadata(result)["requests"] == len(blofin.candle_requests()) == 4 + 2
    assert_same_candles(stored(project), window(history, BACKFILL_START, OPEN_BAR))


# ---- BloFin: failures leave candles exactly as they were -------------------------------------
FAILURES = {
    "error_code": (
        Fault.error_code(code="152002", msg="Parameter after error."),
        ["BloFin returned an error code", "HTTP 200", "code='152002'", "Parameter after error."],
    ),
    "malformed_json": (
        Fault.malformed_json(),
        ["malformed JSON", "HTTP 200", '{"code":"0","msg":"success","data":[["17'],
    ),
    "http_400": (
        Fault.bad_request(),
        ["client error (not retried)", "HTTP 400", "code='400'", "Bad Request"],
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
    blofin.queue_faults(PASS, Fault.error_code(code="152002", msg="Parameter after error."))

    text = failure_text(run(project, instance, graph=True))
    assert [r.query["instId"] for r in blofin.candle_requests()] == INSTRUMENTS
    assert "BloFin candles request for ETH-USDT failed" in text
    assert f"{CANDLES_PATH}?instId=ETH-USDT&bar=1m&after=" in text
    assert "Parameter after error." in text
    assert "request for BTC-USDT" not in text
    assert table_state(project) == state  # BTC's new bars were fetched, not stored
    assert_never_synthetic(project, "blofin")

    # With BloFin well again, the next run stores both instruments' new bars.
    result = run(project, instance)
    assert result.success
    assert metadata(result)["new_rows"] == len(INSTRUMENTS) * NEW_BARS


@pytest.mark.parametrize(
    ("fault", "status"), [(Fault.rate_limited(), 429), (Fault.firewall(), 403)], ids=["429", "403"]
)
def test_a_suspended_ip_stops_the_run_at_once_and_stores_nothing(
    project: Project, instance: DagsterInstance, blofin: FakeBlofin, fault: Fault, status: int
) -> None:
    """BloFin bans the IP mid-run: no retry, no further request, BTC's fetched bars are not
    stored (one transaction for all), and the message says all that; the next run catches up."""
    state = backfill_then_publish_newer(project, instance, blofin)
    blofin.queue_faults(PASS, fault)

    text = failure_text(run(project, instance, graph=True))
    assert [r.query["instId"] for r in blofin.candle_requests()] == INSTRUMENTS  # one each
    assert "BloFin candles request for ETH-USDT failed" in text
    assert f"HTTP {status}" in text and "stopped at once, not retried" in text
    assert "The run stopped there and stored nothing" in text
    refetched = OVERLAP_BARS + 1 + NEW_BARS  # the overlap, the newest stored bar, the new ones
    assert f"Fetched and discarded: BTC-USDT ({refetched} bars)" in text
    assert "not fetched: ETH-USDT" in text
    assert "The next hourly run resumes each instrument from its newest stored bar" in text
    assert "first backfill starts again" not in text  # both are stored already
    assert table_state(project) == state
    assert "features" not in tables(project)

    result = run(project, instance)  # the ban is over
    assert result.success
    assert metadata(result)["new_rows"] == len(INSTRUMENTS) * NEW_BARS


def test_a_ban_during_the_first_backfill_says_it_starts_again(
    project: Project, instance: DagsterInstance, blofin: FakeBlofin
) -> None:
    blofin.queue_faults(Fault.rate_limited())
    text = failure_text(run(project, instance))
    assert len(blofin.candle_requests()) == 1
    assert "Fetched and discarded: none; not fetched: BTC-USDT, ETH-USDT" in text
    assert "(none stored yet for BTC-USDT, ETH-USDT: the first backfill starts again)" in text
    assert table_state(project) == EMPTY_STATE


def test_an_instrument_blofin_does_not_know_fails_the_whole_batch(
    project: Project, instance: DagsterInstance, fake: FakeBlofin
) -> None:
    """An unknown instrument is BloFin's code 152014: the run fails, nothing is stored."""
    use_blofin(project, fake, [*INSTRUMENTS, "XRP-USDT"])
    text = failure_text(run(project, instance))
    assert "BloFin candles request for XRP-USDT failed" in text
    assert "code='152014'" in text and "msg='Instrument ID does not exist'" in text
    assert f"{CANDLES_PATH}?instId=XRP-USDT" in text
    assert len(fake.candle_requests("BTC-USDT")) == 2  # fetched, then thrown away
    assert table_state(project) == EMPTY_STATE


def test_exhausted_retries_on_a_first_backfill_store_nothing_and_never_fall_back(
    project: Project, instance: DagsterInstance, blofin: FakeBlofin
) -> None:
    """A first backfill BloFin keeps answering "500" leaves candles empty, not synthetic."""
    blofin.queue_faults(*[Fault.transient("500")] * 6)  # 1 try + 5 retries
    text = failure_text(run(project, instance, graph=True))
    assert "BloFin candles request for BTC-USDT failed: retries exhausted (5)" in text
    assert "HTTP 200, code='500', msg='Internal Server Error'" in text and "attempts: 6" in text
    assert len(blofin.candle_requests()) == 6
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
