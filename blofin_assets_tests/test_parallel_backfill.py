"""A first backfill of 100 instruments fetched several at once, against FakeBlofin over real
HTTP: requests overlap, both per-IP windows hold (the budgets scaled down 10x in count and 75x
in time, so the 5-minute one binds within seconds), a ban or a failing instrument stops every
thread, a retry goes alone, and what is stored equals a one-at-a-time fetch."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from blofin_assets.market.ingest import RateLimitedRun, ingest_candles
from blofin_assets.market.settings import MarketSettings
from blofin_assets.market.sources.blofin import RateLimit
from blofin_assets.market.sources.blofin_batch import (
    FETCH_WORKERS,
    BatchFailed,
    FetchConfig,
    fetch_instruments,
)
from blofin_assets.market.sources.blofin_pages import BlofinAPIError, BlofinRateLimited
from blofin_assets.storage.connection import DuckDBFile
from blofin_assets_tests.fake_blofin import (
    FakeBlofin,
    Fault,
    RecordedRequest,
    random_walk_candles,
)
from blofin_assets_tests.virtual_clock import most_in_any_window

NOW = pd.Timestamp("2024-03-15T12:00:30Z")
END = NOW.floor("1min")  # the window's exclusive end: the 11:59 bar is the newest closed one
DAYS = 2  # 2880 one-minute bars: two full pages per instrument
INSTRUMENTS = [f"C{number:03d}-USDT" for number in range(100)]
WINDOWS = {inst_id: (END - pd.Timedelta(days=DAYS), END) for inst_id in INSTRUMENTS}
REQUESTS = len(INSTRUMENTS) * DAYS
# BloFin's limits and the client's 80 % of them, scaled: requests / 10, seconds / 75 (one start
# per 20 ms at most: slow enough for a busy 2-core machine to keep up, so the budgets bind).
SCALED_BLOFIN = (RateLimit(50, 0.8), RateLimit(150, 4.0))  # 500 a minute, 1,500 per 5 minutes
SCALED = FetchConfig(rate_limits=(RateLimit(40, 0.8), RateLimit(120, 4.0)))
MINUTE, FIVE_MINUTES = (limit.seconds for limit in SCALED.rate_limits)
QUICK = FetchConfig(rate_limits=(RateLimit(400, 2.0),))  # pacing out of the way (5 ms apart)
LATENCY = 0.05  # each answer takes this long: requests overlap only if the client overlaps them
PASS = Fault.timeout(0.0)  # a slot in the fault queue served normally


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    return random_walk_candles(INSTRUMENTS, end=END, periods=DAYS * 1440 + 30, seed=21)


@pytest.fixture(scope="module")
def shared_fake(history: pd.DataFrame) -> Iterator[FakeBlofin]:
    with FakeBlofin(history, latency_seconds=LATENCY) as fake:
        yield fake


@pytest.fixture
def fake(shared_fake: FakeBlofin) -> Iterator[FakeBlofin]:
    shared_fake.reset()
    shared_fake.latency_seconds = LATENCY
    yield shared_fake
    shared_fake.reset()


def settings(fake: FakeBlofin, instruments: list[str] = INSTRUMENTS) -> MarketSettings:
    return MarketSettings(
        source="blofin",
        instruments=",".join(instruments),
        bar="1m",
        lookback_days=DAYS,
        training_days=DAYS,
        horizon=5,
        api_url=fake.url,
        candles_file="",
        on_bad_rows="reject",
        as_of=NOW.isoformat(),
    )


def stored(path: Path) -> pd.DataFrame:
    """The candles table, ingest time aside."""
    with duckdb.connect(str(path), read_only=True) as con:
        sql = "SELECT * EXCLUDE (ingested_at) FROM candles ORDER BY inst_id, ts"
        return con.execute(sql).df()


def candle_count(path: Path) -> int:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("SELECT count(*) FROM candles").fetchone()[0]


def answered_after(log: list[RecordedRequest], request: RecordedRequest) -> list[RecordedRequest]:
    """Requests that reached the fake after ``request`` had been answered."""
    assert request.done_at is not None
    return [r for r in log if r.at > request.done_at]


def test_a_hundred_instruments_overlap_and_keep_both_windows(fake: FakeBlofin) -> None:
    """200 pages: several in flight at once, yet no scaled minute holds more than 40 starts nor
    any scaled 5 minutes more than 120, so the limiter waited (the 121st start is a whole
    window after the 1st) instead of overrunning; BloFin's side saw under its own limits."""
    fetched = fetch_instruments(fake.url, WINDOWS, "1m", config=SCALED)

    assert list(fetched) == INSTRUMENTS
    assert all(len(frame) == DAYS * 1440 for frame, _ in fetched.values())
    log = fake.candle_requests()
    assert len(log) == sum(report.requests for _, report in fetched.values()) == REQUESTS

    # (a) parallel: requests overlapped at the fake, never more than the workers
    assert 2 <= fake.most_in_flight <= FETCH_WORKERS
    assert any(b.at < a.done_at for a, b in itertools.pairwise(log))  # type: ignore[operator]

    # (b) the limiter's starts keep both client budgets exactly; the second one binds
    starts = sorted(t for _, report in fetched.values() for t in report.started_at)
    assert len(starts) == REQUESTS
    assert most_in_any_window(starts, MINUTE) <= 40
    assert most_in_any_window(starts, FIVE_MINUTES) == 120
    assert starts[120] - starts[0] >= FIVE_MINUTES
    # ... and what reached the fake (a little later each, by how much varies) keeps BloFin's
    arrivals = [r.at for r in log]
    for limit in SCALED_BLOFIN:
        assert most_in_any_window(arrivals, limit.seconds) <= limit.requests

    # first requests leave in the configured order, whatever the threads did
    firsts = [report.started_at[0] for _, report in fetched.values()]
    assert firsts == sorted(firsts) and len(set(firsts)) == len(firsts)


def test_the_parallel_backfill_stores_what_one_at_a_time_stores(
    fake: FakeBlofin, history: pd.DataFrame, tmp_path: Path
) -> None:
    """Same rows, same values, same fingerprint, same coverage: what is stored does not depend
    on which answer came back first."""
    parallel, sequential = tmp_path / "parallel.duckdb", tmp_path / "sequential.duckdb"
    report = ingest_candles(settings(fake), DuckDBFile(str(parallel)), fetch=QUICK)
    assert fake.most_in_flight >= 2
    fake.latency_seconds = 0.0  # one at a time is slow enough without it
    one_at_a_time = FetchConfig(workers=1, rate_limits=QUICK.rate_limits)
    alone = ingest_candles(settings(fake), DuckDBFile(str(sequential)), fetch=one_at_a_time)

    assert report.requests == alone.requests == REQUESTS
    assert report.new_rows == alone.new_rows == len(INSTRUMENTS) * DAYS * 1440
    assert report.fingerprint == alone.fingerprint
    assert report.backfill == alone.backfill and not any(c.short for c in report.backfill.values())
    frame = stored(parallel)
    pd.testing.assert_frame_equal(frame, stored(sequential))
    expected = history[history["ts"] >= END - pd.Timedelta(days=DAYS)].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        frame[list(expected.columns)].assign(ts=pd.to_datetime(frame["ts"], utc=True)),
        expected,
        check_dtype=False,
    )


def test_a_ban_stops_every_thread_at_once_and_stores_nothing(
    fake: FakeBlofin, tmp_path: Path
) -> None:
    """The 31st request meets a 429, and so do the few already in flight (a ban answers every
    request): one message, no request after the ban but those already sent, nothing stored."""
    fake.queue_faults(*[PASS] * 30, *[Fault.rate_limited()] * 10)
    db = tmp_path / "banned.duckdb"
    with pytest.raises(RateLimitedRun) as caught:
        ingest_candles(settings(fake), DuckDBFile(str(db)), fetch=SCALED)

    log = fake.candle_requests()
    banned = log[30]
    assert len(answered_after(log, banned)) <= FETCH_WORKERS - 1
    assert len(log) <= 30 + FETCH_WORKERS
    error = caught.value.error
    assert isinstance(error, BlofinRateLimited) and error.status == 429
    text = str(caught.value)
    assert text.count("BloFin candles request for") == 1  # the first ban, not one per thread
    assert "rate limit reached" in text and "stopped at once, not retried" in text
    assert "The run stopped there and stored nothing" in text
    done, rest = text.split("Fetched and discarded: ")[1].split("; not fetched: ")
    fetched = [item.split(" (")[0] for item in done.split(", ")] if done != "none" else []
    pending = rest.split(" (begun")[0].split(". ")[0].split(", ")
    assert sorted(fetched + pending) == INSTRUMENTS  # every instrument, once, in one list
    assert pending == [i for i in INSTRUMENTS if i in pending]  # in the configured order
    assert error.inst_id in pending
    assert "the first backfill starts again" in text
    assert candle_count(db) == 0


def test_one_failing_instrument_fails_the_batch_naming_it(fake: FakeBlofin, tmp_path: Path) -> None:
    """An instrument BloFin does not know, 51st of 101: its own error (code 152014), the other
    threads stopped within their requests in flight, nothing stored."""
    instruments = [*INSTRUMENTS[:50], "NOPE-USDT", *INSTRUMENTS[50:]]
    db = tmp_path / "failed.duckdb"
    with pytest.raises(BlofinAPIError) as caught:
        ingest_candles(settings(fake, instruments), DuckDBFile(str(db)), fetch=SCALED)

    assert not isinstance(caught.value, BlofinRateLimited)
    assert caught.value.inst_id == "NOPE-USDT" and caught.value.code == "152014"
    assert str(caught.value).startswith("BloFin candles request for NOPE-USDT failed")
    log = fake.candle_requests()
    (failed,) = fake.candle_requests("NOPE-USDT")
    assert len(answered_after(log, failed)) <= FETCH_WORKERS - 1
    assert len(log) < REQUESTS
    assert candle_count(db) == 0


def test_a_retry_goes_alone_then_the_batch_goes_on(fake: FakeBlofin) -> None:
    """BloFin's "try again" (103013) on the 21st request: until its retry has succeeded, no
    other request starts (only those already in flight arrive), then all 100 are fetched."""
    fake.queue_faults(*[PASS] * 20, Fault.transient("103013"))
    config = FetchConfig(rate_limits=QUICK.rate_limits, backoff_base_seconds=0.2)
    fetched = fetch_instruments(fake.url, WINDOWS, "1m", config=config)

    assert sum(report.retries for _, report in fetched.values()) == 1
    assert all(len(frame) == DAYS * 1440 for frame, _ in fetched.values())
    log = fake.candle_requests()
    assert len(log) == REQUESTS + 1
    failed = log[20]
    retry = next(r for r in log[21:] if r.query == failed.query)
    between = [r for r in answered_after(log, failed) if r.at < retry.at]
    assert len(between) <= FETCH_WORKERS - 1


def test_a_ban_wakes_a_thread_waiting_out_a_full_window(fake: FakeBlofin) -> None:
    """Four starts fill a 120 s budget; the fourth request is banned. The threads queued for the
    fifth start give up at once instead of sleeping out the window first."""
    fake.queue_faults(PASS, PASS, PASS, Fault.rate_limited())
    config = FetchConfig(rate_limits=(RateLimit(4, 0.04), RateLimit(4, 120.0)))
    windows = {inst_id: WINDOWS[inst_id] for inst_id in INSTRUMENTS[:6]}
    began = time.monotonic()
    with pytest.raises(BatchFailed) as caught:
        fetch_instruments(fake.url, windows, "1m", config=config)
    assert time.monotonic() - began < 60  # not the 120 s the window would have made it wait
    assert isinstance(caught.value.error, BlofinRateLimited)
    assert len(fake.candle_requests()) == 4
    assert caught.value.fetched == {}
    assert caught.value.begun == INSTRUMENTS[:4]


def test_fetch_config_refuses_no_workers() -> None:
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        FetchConfig(workers=0)
