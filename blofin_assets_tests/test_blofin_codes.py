"""BloFin as it really answers, against FakeBlofin over real HTTP: the transient body codes
(retried), the suspensions (429 / 403: stopped at once), recorded bodies read as documented, and
the limiter that keeps both per-IP budgets (checked from the fake's request log)."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from blofin_assets.market.sources.blofin import (
    BLOFIN_RATE_LIMITS,
    CANCEL_POLL_SECONDS,
    CLIENT_RATE_LIMITS,
    BlofinClient,
    FetchStopped,
    RateLimit,
    RateLimiter,
)
from blofin_assets.market.sources.blofin_pages import (
    ROW_FIELDS,
    BlofinAPIError,
    BlofinRateLimited,
)
from blofin_assets_tests.fake_blofin import (
    CANDLES_PATH,
    TRY_AGAIN_MSG,
    FakeBlofin,
    Fault,
    fixture_body,
    random_walk_candles,
)
from blofin_assets_tests.virtual_clock import VirtualClock, most_in_any_window

END = pd.Timestamp("2024-03-15T12:00:00Z")
FIVE_BARS = (END - pd.Timedelta(minutes=5), END)  # one request: five closed 1m bars
FAST = (RateLimit(6000, 60.0),)  # pacing out of the way where a test is about something else


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def fake(clock: VirtualClock) -> Iterator[FakeBlofin]:
    """One day of BTC and ETH; the request log is stamped with the test's virtual clock."""
    history = random_walk_candles(["BTC-USDT", "ETH-USDT"], end=END, periods=1440, seed=3)
    with FakeBlofin(history, clock=clock.clock) as server:
        yield server


def make_client(fake: FakeBlofin, clock: VirtualClock, **kwargs: Any) -> BlofinClient:
    options: dict[str, Any] = {"sleep": clock.sleep, "clock": clock.clock, "rng_seed": 1}
    return BlofinClient(fake.url, **{**options, **kwargs})


# ---- transient codes: retried like a 5xx ------------------------------------------------------
@pytest.mark.parametrize("code", ["500", "103013"])
def test_a_transient_code_is_retried_with_backoff_then_succeeds(
    fake: FakeBlofin, clock: VirtualClock, code: str
) -> None:
    """HTTP 200 with code 500 (ccxt's recorded body, an integer code) or 103013 "Please try
    again" costs a retry, not the run."""
    fake.queue_faults(Fault.transient(code), Fault.transient(code))
    client = make_client(fake, clock, rate_limits=FAST, backoff_base_seconds=0.5)
    frame, report = client.fetch_candles("BTC-USDT", "1m", *FIVE_BARS)
    assert len(frame) == 5
    assert (report.requests, report.retries) == (3, 2)
    assert len(fake.candle_requests()) == 3
    assert len(clock.sleeps) == 2  # full jitter: uniform(0, 0.5) then uniform(0, 1.0)
    assert 0 <= clock.sleeps[0] <= 0.5 and 0 <= clock.sleeps[1] <= 1.0


@pytest.mark.parametrize(
    ("fault", "code", "msg"),
    [
        (Fault.transient("500"), "500", "Internal Server Error"),
        (Fault.transient("103013"), "103013", TRY_AGAIN_MSG),
    ],
    ids=["500", "103013"],
)
def test_a_transient_code_past_the_retry_budget_fails_naming_it(
    fake: FakeBlofin, clock: VirtualClock, fault: Fault, code: str, msg: str
) -> None:
    fake.queue_faults(*[fault] * 3)
    client = make_client(fake, clock, rate_limits=FAST, max_retries=2)
    with pytest.raises(BlofinAPIError) as caught:
        client.fetch_candles("ETH-USDT", "1m", *FIVE_BARS)
    error = caught.value
    assert not isinstance(error, BlofinRateLimited)
    assert str(error).startswith(
        "BloFin candles request for ETH-USDT failed: retries exhausted (2); "
        f"last error: BloFin code {code} (transient); HTTP 200, code='{code}', msg={msg!r}; "
        f"request GET {fake.url}{CANDLES_PATH}?instId=ETH-USDT&bar=1m&after="
    )
    assert (error.code, error.msg, error.attempts) == (code, msg, 3)
    assert len(fake.candle_requests()) == 3


# ---- suspensions: stop at once ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("fault", "status", "what"),
    [
        (Fault.rate_limited(), 429, "rate limit reached: BloFin suspends the IP for 5 minutes"),
        (Fault.firewall(), 403, "blocked by BloFin's network firewall"),
        (Fault.error_code("429", "Too Many Requests"), 200, "rate limit reached"),
    ],
    ids=["http_429", "http_403", "code_429_in_http_200"],
)
def test_a_suspension_stops_at_once_and_spends_no_retry(
    fake: FakeBlofin, clock: VirtualClock, fault: Fault, status: int, what: str
) -> None:
    fake.queue_faults(fault)
    client = make_client(fake, clock)
    with pytest.raises(BlofinRateLimited) as caught:
        client.fetch_candles("ETH-USDT", "1m", END - pd.Timedelta(days=1), END)  # 2 pages
    error = caught.value
    text = str(error)
    assert text.startswith(f"BloFin candles request for ETH-USDT failed: {what}")
    assert "stopped at once, not retried" in text and f"HTTP {status}" in text
    assert f"{CANDLES_PATH}?instId=ETH-USDT&bar=1m&after=" in text
    assert (error.status, error.attempts) == (status, 1)
    assert len(fake.candle_requests()) == 1  # the fake heard one request, no retry, no page 2
    assert clock.sleeps == []  # and no backoff was slept


def test_after_the_ban_the_same_client_fetches_normally(
    fake: FakeBlofin, clock: VirtualClock
) -> None:
    """A suspension leaves nothing behind in the client: the next fetch is an ordinary one."""
    fake.queue_faults(Fault.rate_limited())
    client = make_client(fake, clock)
    with pytest.raises(BlofinRateLimited):
        client.fetch_candles("BTC-USDT", "1m", *FIVE_BARS)
    frame, report = client.fetch_candles("BTC-USDT", "1m", *FIVE_BARS)
    assert len(frame) == 5 and (report.requests, report.retries) == (1, 0)


# ---- recorded bodies ------------------------------------------------------------------------
def test_the_documented_candles_body_is_read_field_by_field(
    fake: FakeBlofin, clock: VirtualClock
) -> None:
    """BloFin's docs example, byte for byte: volume is volCurrency (8.35), not vol (835)."""
    fake.queue_faults(Fault.raw(fixture_body("docs_candles_response.json")))
    ts = pd.Timestamp(1703484240000, unit="ms", tz="UTC")
    frame, report = make_client(fake, clock).fetch_candles(
        "ETH-USDT", "1m", ts, ts + pd.Timedelta(minutes=1)
    )
    ((_, row),) = frame.iterrows()
    fields = ["ts", "open", "high", "low", "close", "volume", "volume_currency", "volume_quote"]
    assert [row[f] for f in fields] == [
        ts, "2283.45", "2283.45", "2282.8", "2282.8", "8.35", "8.35", "19063.9805"
    ]  # fmt: skip
    assert (report.requests, report.unconfirmed_dropped) == (1, 0)


def test_ccxts_recorded_open_daily_bar_is_dropped_and_its_volume_field_is_ours(
    fake: FakeBlofin, clock: VirtualClock
) -> None:
    """ccxt's recorded 1D answer holds one bar with confirm "0": still forming, never stored.
    ccxt's own parse of it takes the volume we take (volCurrency, index 6)."""
    body = fixture_body("ccxt_fetchOHLCV_1d_httpResponse.json")
    fake.queue_faults(Fault.raw(body))
    ts = pd.Timestamp(1707177600000, unit="ms", tz="UTC")
    frame, report = make_client(fake, clock).fetch_candles(
        "BTC-USDT", "1D", ts, ts + pd.Timedelta(days=1)
    )
    assert frame.empty and report.unconfirmed_dropped == 1
    (row,) = json.loads(body)["data"]
    (parsed,) = json.loads(fixture_body("ccxt_fetchOHLCV_1d_parsedResponse.json"))
    assert parsed[5] == float(row[ROW_FIELDS["volume"]]) == 13302.089


# ---- the limiter --------------------------------------------------------------------------------
def test_the_limits_are_80_percent_of_blofins_published_ones() -> None:
    published, ours = BLOFIN_RATE_LIMITS, CLIENT_RATE_LIMITS
    assert published == (RateLimit(500, 60.0), RateLimit(1500, 300.0))
    assert ours == (RateLimit(400, 60.0), RateLimit(1200, 300.0))


def test_many_requests_keep_both_windows_under_budget_retries_included(
    fake: FakeBlofin, clock: VirtualClock
) -> None:
    """150 fetches and 3 retries, as the fake logged them (virtual time), under budgets scaled
    down 10x (40 a minute, 100 per 5 minutes) so the 5-minute one binds quickly: never more in
    any 60 s or 300 s window, and no slower than that either (the 101st request waits for the
    1st to leave the 5-minute window, not longer)."""
    fake.queue_faults(*[Fault.transient("103013")] * 3)  # retries are paced like any request
    limits = (RateLimit(40, 60.0), RateLimit(100, 300.0))
    client = make_client(fake, clock, rate_limits=limits, backoff_base_seconds=0.01)
    for _ in range(150):
        client.fetch_candles("BTC-USDT", "1m", *FIVE_BARS)
    stamps = [request.at for request in fake.candle_requests()]
    assert len(stamps) == 153 and stamps == sorted(stamps)
    assert most_in_any_window(stamps, 60.0) == 40
    assert most_in_any_window(stamps, 300.0) == 100
    assert min(b - a for a, b in itertools.pairwise(stamps)) == pytest.approx(1.5)  # 60 s / 40
    assert stamps[100] - stamps[0] == pytest.approx(300.0)


def test_the_default_limiter_keeps_80_percent_of_both_blofin_windows() -> None:
    """1,300 starts from the limiter every client gets: at most 400 in any minute and 1,200 in
    any 5 minutes, evenly spaced (0.15 s), the 1,201st exactly when the 1st leaves the window."""
    clock = VirtualClock()
    limiter = RateLimiter(clock=clock.clock, sleep=clock.sleep)
    starts = [limiter.wait() for _ in range(1300)]
    assert most_in_any_window(starts, 60.0) == 400
    assert most_in_any_window(starts, 300.0) == 1200
    assert min(b - a for a, b in itertools.pairwise(starts)) == pytest.approx(0.15)
    assert starts[1200] - starts[0] == pytest.approx(300.0)


def test_two_clients_sharing_one_limiter_share_its_budget(
    fake: FakeBlofin, clock: VirtualClock
) -> None:
    """The budget is BloFin's per IP: clients handed one limiter pace as one."""
    limiter = RateLimiter((RateLimit(10, 60.0),), clock=clock.clock, sleep=clock.sleep)
    clients = [make_client(fake, clock, limiter=limiter) for _ in range(2)]
    for _ in range(6):
        for client in clients:
            client.fetch_candles("ETH-USDT", "1m", *FIVE_BARS)
    stamps = [request.at for request in fake.candle_requests()]
    assert len(stamps) == 12 and most_in_any_window(stamps, 60.0) == 10
    assert stamps[10] - stamps[0] == pytest.approx(60.0)


def test_one_limiter_waited_on_by_many_threads_keeps_every_window() -> None:
    """Thread-safe: four threads taking 30 starts each from one limiter never overfill a
    window. (The starts it grants are checked: under a virtual clock another thread's sleep
    may move time before a request reaches a server, so a server's log would blur them.)"""
    clock = VirtualClock()
    limiter = RateLimiter(
        (RateLimit(10, 60.0), RateLimit(25, 300.0)), clock=clock.clock, sleep=clock.sleep
    )
    starts: list[float] = []

    def take_thirty() -> None:
        for _ in range(30):
            starts.append(limiter.wait())  # list.append is atomic

    threads = [threading.Thread(target=take_thirty) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads) and len(starts) == 120
    assert len(set(starts)) == 120  # every start its own slot
    assert most_in_any_window(starts, 60.0) == 10
    assert most_in_any_window(starts, 300.0) == 25


def test_a_called_off_wait_gives_up_at_once_and_takes_no_start() -> None:
    """A batch that stopped: a request behind a full window, or backing off, raises instead of
    sleeping it out, and leaves the budget as it was for the next request."""
    clock = VirtualClock()
    limiter = RateLimiter((RateLimit(1, 60.0),), clock=clock.clock, sleep=clock.sleep)
    first = limiter.wait()
    stopped = threading.Event()
    stopped.set()
    with pytest.raises(FetchStopped):
        limiter.wait(cancel=stopped)
    with pytest.raises(FetchStopped):
        limiter.wait(backoff=30.0, cancel=stopped)
    assert clock.sleeps == []
    assert limiter.wait() == first + 60.0  # the called-off waits took no start


def test_a_wait_called_off_while_it_sleeps_ends_within_one_slice() -> None:
    """The 5-minute budget can make a request wait minutes: called off meanwhile, it notices
    within CANCEL_POLL_SECONDS, not at the end of the window."""
    clock = VirtualClock()
    stopped = threading.Event()

    def sleep_then_stop(seconds: float) -> None:  # another thread stops the batch meanwhile
        clock.sleep(seconds)
        stopped.set()

    limiter = RateLimiter((RateLimit(1, 300.0),), clock=clock.clock, sleep=sleep_then_stop)
    limiter.wait()
    with pytest.raises(FetchStopped):
        limiter.wait(cancel=stopped)
    assert clock.sleeps == [CANCEL_POLL_SECONDS]


def test_the_limiter_refuses_an_impossible_budget() -> None:
    with pytest.raises(ValueError, match="at least one RateLimit"):
        RateLimiter(())
    with pytest.raises(ValueError, match="requests must be >= 1 and seconds > 0"):
        RateLimiter((RateLimit(0, 60.0),))
