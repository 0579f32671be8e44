"""BlofinClient against FakeBlofin over real HTTP: paging, open bars, faults, pacing.

BloFin's own error codes, suspensions (429 / 403) and the two-window limiter have their own
file, test_blofin_codes.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
import requests

from blofin_assets.market.contract import CANDLE_COLUMNS
from blofin_assets.market.sources.blofin import BlofinClient, RateLimit
from blofin_assets.market.sources.blofin_pages import RAW_COLUMNS, BlofinAPIError, FetchReport
from blofin_assets.market.validation.batch import validate_candles
from blofin_assets_tests.fake_blofin import (
    CANDLES_PATH,
    FakeBlofin,
    Fault,
    fixture_body,
    random_walk_candles,
)
from blofin_assets_tests.virtual_clock import VirtualClock

END = pd.Timestamp("2024-03-15T12:00:00Z")  # last closed 1m bar opens at 11:59, closes here
NOW = END + pd.Timedelta(seconds=30)  # the 12:00 bar is still open
DAYS_14 = pd.Timedelta(days=14)
INSTRUMENTS = ["BTC-USDT", "ETH-USDT"]
FAST = (RateLimit(6000, 60.0),)  # pacing out of the way where a test is about something else


class StampingSession(requests.Session):
    """A real session that notes the virtual time at which each request goes out."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.virtual = clock
        self.sent_at: list[float] = []

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.sent_at.append(self.virtual.now)
        return super().request(*args, **kwargs)


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return random_walk_candles(INSTRUMENTS, end=END, periods=14 * 1440 + 300, seed=7)


@pytest.fixture(scope="module")
def shared_fake(candles: pd.DataFrame) -> Iterator[FakeBlofin]:
    with FakeBlofin(candles) as fake:
        yield fake


@pytest.fixture
def fake(shared_fake: FakeBlofin) -> Iterator[FakeBlofin]:
    shared_fake.reset()
    yield shared_fake
    shared_fake.reset()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


def make_client(fake: FakeBlofin, clock: VirtualClock, **kwargs: Any) -> BlofinClient:
    options: dict[str, Any] = {
        "sleep": clock.sleep,
        "clock": clock.clock,
        "rng_seed": 1,
        "timeout_seconds": 2.0,
    }
    options.update(kwargs)
    return BlofinClient(fake.url, **options)


def test_backfill_of_14_days_pages_backwards_in_15_requests(
    fake: FakeBlofin, clock: VirtualClock, candles: pd.DataFrame
) -> None:
    client = make_client(fake, clock)
    frame, report = client.fetch_candles("BTC-USDT", "1m", END - DAYS_14, NOW)

    # 20160 closed bars + the open one = 20161 bar slots in [start, end): ceil(20161/1440) = 15
    assert report == FetchReport(
        requests=15, retries=0, pages=15, rows=20160, unconfirmed_dropped=1
    )
    # each request's start by the limiter's clock: one every 0.15 s (400 a minute)
    gaps = [b - a for a, b in zip(report.started_at, report.started_at[1:], strict=False)]
    assert gaps == pytest.approx([0.15] * 14)
    sent = fake.candle_requests("BTC-USDT")
    assert len(sent) == 15
    afters = [int(r.query["after"]) for r in sent]
    assert afters == sorted(afters, reverse=True) and len(set(afters)) == 15
    assert all(int(r.query["limit"]) <= 1440 and r.query["bar"] == "1m" for r in sent)
    assert "before" not in sent[0].query

    assert list(frame.columns) == RAW_COLUMNS
    assert frame["ts"].is_monotonic_increasing and frame["ts"].is_unique
    assert frame["ts"].iloc[0] == END - DAYS_14
    assert frame["ts"].iloc[-1] == END - pd.Timedelta(minutes=1)
    assert frame["origin"].iloc[-1].startswith(f"GET {CANDLES_PATH}?instId=BTC-USDT&bar=1m&after=")

    result = validate_candles(
        frame, bar="1m", now=NOW, instruments=INSTRUMENTS, source_label="blofin BTC-USDT"
    )
    expected = candles[candles["inst_id"] == "BTC-USDT"].tail(20160).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        result.clean[CANDLE_COLUMNS], expected[CANDLE_COLUMNS], check_exact=False
    )
    # volume is the base-currency volCurrency, not the contract count `vol`
    assert result.clean["volume_quote"].iloc[-1] == pytest.approx(expected["volume_quote"].iloc[-1])


def test_window_ending_on_a_bar_boundary_needs_14_requests(
    fake: FakeBlofin, clock: VirtualClock
) -> None:
    frame, report = make_client(fake, clock).fetch_candles("ETH-USDT", "1m", END - DAYS_14, END)
    assert (report.requests, report.rows, report.unconfirmed_dropped) == (14, 20160, 0)
    assert frame["ts"].iloc[0] == END - DAYS_14


def test_incremental_fetch_of_the_last_hour_is_one_request(
    candles: pd.DataFrame, clock: VirtualClock
) -> None:
    with FakeBlofin(candles[candles["inst_id"] == "BTC-USDT"]) as fake:
        client = make_client(fake, clock)
        stored_until = fake.last_closed_ts("BTC-USDT") + pd.Timedelta(minutes=1)
        later = END + pd.Timedelta(hours=1)
        fake.add_candles(
            random_walk_candles(["BTC-USDT"], end=later, periods=60, seed=99, start_price=110)
        )
        fake.clear_requests()

        frame, report = client.fetch_candles(
            "BTC-USDT", "1m", stored_until, later + pd.Timedelta(seconds=10)
        )
        assert report.requests == 1 and len(fake.candle_requests()) == 1
        assert report.rows == 60 and report.unconfirmed_dropped == 1
        assert frame["ts"].iloc[0] == stored_until
        assert frame["ts"].iloc[-1] == later - pd.Timedelta(minutes=1)
        assert fake.candle_requests()[0].query["limit"] == "61"  # only the slots still missing

        # nothing new yet: one request, an empty (but typed) frame
        again, report = client.fetch_candles(
            "BTC-USDT", "1m", later, later + pd.Timedelta(seconds=20)
        )
        assert again.empty and list(again.columns) == RAW_COLUMNS
        assert report.requests == 1 and report.unconfirmed_dropped == 1


def test_unconfirmed_bar_is_never_returned(fake: FakeBlofin, clock: VirtualClock) -> None:
    far_future = END + pd.Timedelta(days=1)
    frame, report = make_client(fake, clock).fetch_candles(
        "BTC-USDT", "1m", END - pd.Timedelta(minutes=10), far_future
    )
    assert report.unconfirmed_dropped == 1
    assert frame["ts"].max() == END - pd.Timedelta(minutes=1)
    assert len(frame) == 10


def test_a_5xx_is_retried_after_the_servers_retry_after(
    fake: FakeBlofin, clock: VirtualClock
) -> None:
    fake.queue_faults(Fault.server_error(503, retry_after="7"))
    client = make_client(fake, clock, rate_limits=FAST)
    frame, report = client.fetch_candles("BTC-USDT", "1m", END - pd.Timedelta(minutes=5), END)
    assert len(frame) == 5
    assert (report.requests, report.retries) == (2, 1)
    assert 7.0 in clock.sleeps


def test_500_then_success_backs_off_with_jitter(fake: FakeBlofin, clock: VirtualClock) -> None:
    fake.queue_faults(Fault.server_error(500), Fault.server_error(503))
    client = make_client(fake, clock, rate_limits=FAST, backoff_base_seconds=0.5)
    frame, report = client.fetch_candles("BTC-USDT", "1m", END - pd.Timedelta(minutes=5), END)
    assert len(frame) == 5
    assert (report.requests, report.retries) == (3, 2)
    assert len(clock.sleeps) == 2  # full jitter: uniform(0, 0.5) then uniform(0, 1.0)
    assert 0 <= clock.sleeps[0] <= 0.5 and 0 <= clock.sleeps[1] <= 1.0


def test_timeout_then_success(fake: FakeBlofin, clock: VirtualClock) -> None:
    fake.queue_faults(Fault.timeout(seconds=1.5))
    client = make_client(fake, clock, timeout_seconds=0.3, rate_limits=FAST)
    frame, report = client.fetch_candles("BTC-USDT", "1m", END - pd.Timedelta(minutes=5), END)
    assert len(frame) == 5
    assert (report.requests, report.retries) == (2, 1)


def test_retries_exhausted_names_instrument_request_and_status(
    fake: FakeBlofin, clock: VirtualClock
) -> None:
    fake.queue_faults(*[Fault.server_error(502)] * 3)
    client = make_client(fake, clock, max_retries=2, rate_limits=FAST)
    with pytest.raises(BlofinAPIError) as caught:
        client.fetch_candles("BTC-USDT", "1m", END - pd.Timedelta(minutes=5), END)
    error = caught.value
    message = str(error)
    assert "BTC-USDT" in message and "HTTP 502" in message and "retries exhausted (2)" in message
    assert f"{fake.url}{CANDLES_PATH}?instId=BTC-USDT&bar=1m&after=" in message
    assert "Bad Gateway" in message  # the server's own msg
    assert (error.status, error.attempts, error.inst_id) == (502, 3, "BTC-USDT")
    assert len(fake.candle_requests()) == 3


def test_connection_refused_is_retried_then_reported(clock: VirtualClock) -> None:
    with FakeBlofin() as fake:
        url = fake.url
    client = BlofinClient(url, sleep=clock.sleep, clock=clock.clock, max_retries=1)
    with pytest.raises(BlofinAPIError, match=r"(?s)ConnectionError.*no HTTP response"):
        client.fetch_candles("BTC-USDT", "1m", END - pd.Timedelta(minutes=5), END)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault.malformed_json(), r"malformed JSON; HTTP 200"),
        (  # the body ccxt recorded, byte for byte
            Fault.raw(fixture_body("ccxt_err_152002_parameter_bar.json")),
            r"error code; HTTP 200, code='152002', msg='Parameter bar error.'",
        ),
        (
            Fault.bad_request(),
            r"client error \(not retried\); HTTP 400, code='400', msg='Bad Request'",
        ),
    ],
    ids=["malformed_json", "error_code", "http_400"],
)
def test_non_retryable_failures_fail_at_once(
    fake: FakeBlofin, clock: VirtualClock, fault: Fault, expected: str
) -> None:
    fake.queue_faults(fault)
    client = make_client(fake, clock)
    with pytest.raises(BlofinAPIError, match=expected) as caught:
        client.fetch_candles("ETH-USDT", "1m", END - pd.Timedelta(minutes=5), END)
    assert "ETH-USDT" in str(caught.value) and "after=" in str(caught.value)
    assert len(fake.candle_requests()) == 1
    assert caught.value.attempts == 1


def test_unknown_instrument(fake: FakeBlofin, clock: VirtualClock) -> None:
    with pytest.raises(BlofinAPIError) as caught:
        make_client(fake, clock).fetch_candles("DOGE-USDT", "1m", END - DAYS_14, END)
    assert caught.value.code == "152014"  # BloFin's code for it (errors.md)
    assert "msg='Instrument ID does not exist'" in str(caught.value)
    assert "DOGE-USDT" in str(caught.value)
    assert len(fake.candle_requests()) == 1


def test_rate_limiter_spaces_requests(fake: FakeBlofin, clock: VirtualClock) -> None:
    session = StampingSession(clock)
    client = make_client(fake, clock, session=session)  # the default limits
    for _ in range(3):
        client.fetch_candles("BTC-USDT", "1m", END - pd.Timedelta(minutes=5), END)
    client.fetch_candles("BTC-USDT", "1m", END - pd.Timedelta(days=3), END)  # 3 pages
    gaps = [b - a for a, b in zip(session.sent_at, session.sent_at[1:], strict=False)]
    assert len(session.sent_at) == 6
    assert gaps == pytest.approx([0.15] * 5)  # 400 a minute, evenly: one every 0.15 s


def test_rate_limiter_counts_backoff_as_waiting(fake: FakeBlofin, clock: VirtualClock) -> None:
    fake.queue_faults(Fault.server_error(503, retry_after="2"))
    session = StampingSession(clock)
    client = make_client(fake, clock, session=session, rate_limits=(RateLimit(60, 60.0),))
    client.fetch_candles("BTC-USDT", "1m", END - pd.Timedelta(minutes=5), END)
    client.fetch_candles("BTC-USDT", "1m", END - pd.Timedelta(minutes=5), END)
    assert clock.sleeps == pytest.approx([2.0, 1.0])  # retry-after, then the limiter's 1 s
    gaps = [b - a for a, b in zip(session.sent_at, session.sent_at[1:], strict=False)]
    assert gaps == pytest.approx([2.0, 1.0])


def test_arguments_are_checked(fake: FakeBlofin, clock: VirtualClock) -> None:
    client = make_client(fake, clock)
    with pytest.raises(ValueError, match="invalid instrument id"):
        client.fetch_candles("btc-usdt", "1m", END - DAYS_14, END)
    with pytest.raises(ValueError, match="unknown bar size"):
        client.fetch_candles("BTC-USDT", "1M", END - DAYS_14, END)
    with pytest.raises(ValueError, match="no time zone"):
        client.fetch_candles("BTC-USDT", "1m", pd.Timestamp("2024-03-01"), END)
    frame, report = client.fetch_candles("BTC-USDT", "1m", END, END)
    assert frame.empty and report.requests == 0
    assert fake.candle_requests() == []


def test_fake_pages_like_blofin(fake: FakeBlofin) -> None:
    """The fake itself: default limit 500, max 1440, newest first, before/after exclusive."""
    session = requests.Session()
    url = fake.url + CANDLES_PATH
    end_ms = int(END.value // 1_000_000)
    body = session.get(url, params={"instId": "BTC-USDT"}, timeout=5).json()
    assert body["code"] == "0" and len(body["data"]) == 500
    assert body["data"][0][8] == "0" and body["data"][1][8] == "1"  # open bar first
    assert all(isinstance(v, str) for v in body["data"][1])
    stamps = [int(row[0]) for row in body["data"]]
    assert stamps == sorted(stamps, reverse=True)
    body = session.get(url, params={"instId": "BTC-USDT", "limit": 5000}, timeout=5).json()
    assert len(body["data"]) == 1440
    window = {"instId": "BTC-USDT", "after": end_ms, "before": end_ms - 3 * 60_000}
    body = session.get(url, params=window, timeout=5).json()
    assert [int(r[0]) for r in body["data"]] == [end_ms - 60_000, end_ms - 120_000]
    # errors as BloFin reports them: HTTP 200, a documented code
    unknown = session.get(url, params={"instId": "XRP-USDT"}, timeout=5)
    assert unknown.status_code == 200 and unknown.json()["code"] == "152014"
    for bad in ({"bar": "5m"}, {"limit": "0"}, {"after": "soon"}):
        answer = session.get(url, params={"instId": "BTC-USDT", **bad}, timeout=5).json()
        assert answer == {"code": "152002", "msg": f"Parameter {next(iter(bad))} error."}
    assert session.get(url, timeout=5).json()["code"] == "152001"  # no instId
