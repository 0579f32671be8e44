"""BloFin public REST candles: paged backwards, rate limited, retried, never an open bar.

``BlofinClient.fetch_candles`` returns a *raw* frame (contract columns with the price and volume
fields still as BloFin's strings, ``ts`` already parsed because paging needs it, and ``origin`` =
the request that brought the row) for ``validate_candles``.

Volume: BloFin instruments are perpetual swaps. In a candle row ``[ts, o, h, l, c, vol,
volCurrency, volCurrencyQuote, confirm]``, ``vol`` counts *contracts* and ``volCurrency`` is the
base-currency volume, so the contract's ``volume`` (base currency) is ``volCurrency`` -- the
field ccxt's BloFin ``parse_ohlcv`` uses (index 6). ``volume_currency`` repeats it and
``volume_quote`` is ``volCurrencyQuote``; ``vol`` itself is not kept.

Failures: timeouts, connection errors, HTTP 5xx and BloFin's transient body codes (500, 103013)
are retried with jittered exponential backoff; HTTP 429 / 403 (the IP is suspended) stops at
once with BlofinRateLimited; any other error fails at once. ``RateLimiter`` keeps every request
under 80 % of both per-IP limits BloFin publishes, so a suspension should never be earned.

Many instruments at once, sharing one limiter: blofin_batch.py.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd
import requests

from blofin_assets.market.bars import bar_duration
from blofin_assets.market.clock import as_utc
from blofin_assets.market.contract import (
    validate_instrument_id,
)
from blofin_assets.market.sources.blofin_pages import (
    CANDLES_PATH,
    SUSPENDED_STATUSES,
    FetchReport,
    PageRequest,
    RetryableFailure,
    WindowRows,
    error_fields,
    page_data,
    page_params,
    page_stamps,
    retry_after,
    to_ms_ceil,
)

DEFAULT_API_URL = "https://openapi.blofin.com"
RETRYABLE_EXCEPTIONS: tuple[type[BaseException], ...] = (
    requests.Timeout,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
)


@dataclass(frozen=True)
class RateLimit:
    """At most ``requests`` request starts in any window of ``seconds``."""

    requests: int
    seconds: float


# BloFin's published REST limits per IP (API docs, "Rate Limits"): 500 requests a minute (over
# it the IP is suspended for 5 minutes) and 1,500 per 5 minutes (suspended for 1 hour).
BLOFIN_RATE_LIMITS: tuple[RateLimit, ...] = (RateLimit(500, 60.0), RateLimit(1500, 300.0))
# The client keeps to 80 % of each: headroom for retries, clock drift between us and BloFin,
# and anything else calling from the same IP.
SAFE_FRACTION = 0.8
CLIENT_RATE_LIMITS: tuple[RateLimit, ...] = tuple(
    RateLimit(int(limit.requests * SAFE_FRACTION), limit.seconds) for limit in BLOFIN_RATE_LIMITS
)  # 400 a minute, 1,200 per 5 minutes


# A wait that may be called off (a batch that stopped) sleeps in slices this long, checking in
# between: a worker queued behind a full 5-minute window quits within this, not minutes later.
CANCEL_POLL_SECONDS = 0.05


class FetchStopped(Exception):
    """A fetch called off before its next request because its batch stopped: another
    instrument failed (or the run was interrupted). Not a failure of its own."""


class Pacer(Protocol):
    """What a client waits on before each request (a RateLimiter, or a batch's view of one):
    ``backoff`` None for a first attempt, else the retry's backoff, waited out first."""

    def wait(self, backoff: float | None = None) -> float: ...


class RateLimiter:
    """Request starts kept under every budget in any window (a sliding log per limit), and at
    least the shortest even spacing of any budget apart (60 s / 400 = 0.15 s), so no burst
    reaches BloFin's firewall. Thread-safe and fair: callers are served one at a time in the
    order they came (a ticket each), and the one served keeps its turn while it sleeps, since
    nobody may start before it; so threads sharing the limiter take turns, none starves. It
    counts this process's requests only: another process on the IP needs its own headroom."""

    def __init__(
        self,
        limits: Sequence[RateLimit] = CLIENT_RATE_LIMITS,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not limits:
            raise ValueError("RateLimiter needs at least one RateLimit")
        for limit in limits:
            if limit.requests < 1 or not limit.seconds > 0:
                raise ValueError(f"{limit}: requests must be >= 1 and seconds > 0")
        self.limits = tuple(limits)
        self.interval = min(limit.seconds / limit.requests for limit in self.limits)
        self._clock = clock
        self._sleep = sleep
        self._starts: list[deque[float]] = [deque(maxlen=limit.requests) for limit in self.limits]
        self._turn = threading.Condition()
        self._tickets = itertools.count()
        self._serving = 0

    def wait(self, backoff: float | None = None, cancel: threading.Event | None = None) -> float:
        """Block until a request may start (a retry: ``backoff`` seconds first); returns (and
        records) that start time. Once ``cancel`` is set, raises FetchStopped instead."""
        if backoff:
            self._pause(backoff, cancel)
        with self._turn:
            ticket = next(self._tickets)
            self._turn.wait_for(lambda: self._serving == ticket)
        try:
            return self._next_start(cancel)
        finally:
            with self._turn:
                self._serving += 1
                self._turn.notify_all()

    def _pause(self, seconds: float, cancel: threading.Event | None) -> None:
        """Sleep ``seconds``, in slices that check ``cancel`` if there is one."""
        if cancel is None:
            self._sleep(seconds)
            return
        end = self._clock() + seconds
        while (left := end - self._clock()) > 0:
            if cancel.is_set():
                raise FetchStopped("the batch stopped while this request backed off")
            self._sleep(min(left, CANCEL_POLL_SECONDS))

    def _next_start(self, cancel: threading.Event | None) -> float:
        now = self._clock()
        earliest = now
        for limit, starts in zip(self.limits, self._starts, strict=True):
            if starts:
                earliest = max(earliest, starts[-1] + self.interval)
            if len(starts) == limit.requests:  # the window after the oldest one is full
                earliest = max(earliest, starts[0] + limit.seconds)
        while True:
            if cancel is not None and cancel.is_set():
                raise FetchStopped("the batch stopped while this request waited for its turn")
            if now >= earliest:
                break
            pause = earliest - now
            self._sleep(pause if cancel is None else min(pause, CANCEL_POLL_SECONDS))
            now = self._clock()
        for starts in self._starts:
            starts.append(now)
        return now


class BlofinClient:
    """Reads BloFin market candles politely: under 80 % of both published per-IP limits."""

    def __init__(
        self,
        base_url: str = DEFAULT_API_URL,
        *,
        rate_limits: Sequence[RateLimit] = CLIENT_RATE_LIMITS,
        limiter: Pacer | None = None,
        timeout_seconds: float = 10.0,
        max_retries: int = 5,
        backoff_base_seconds: float = 0.5,
        backoff_max_seconds: float = 30.0,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng_seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``limiter``: one shared with other clients on this IP (or a batch's view of one);
        otherwise a new one from ``rate_limits``, ``clock`` and ``sleep``. The limiter waits
        out a retry's backoff too, so a shared one can hold the others back meanwhile."""
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.base_url = base_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self._own_session = session is None
        self.session = session or requests.Session()
        self._rng = random.Random(rng_seed)
        self.limiter: Pacer = limiter or RateLimiter(rate_limits, clock=clock, sleep=sleep)

    def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._own_session:
            self.session.close()

    def __enter__(self) -> BlofinClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def backoff_delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter: uniform(0, min(max, base * 2**attempt))."""
        ceiling = min(self.backoff_max_seconds, self.backoff_base_seconds * (2**attempt))
        return self._rng.uniform(0.0, ceiling)

    def fetch_candles(
        self, inst_id: str, bar: str, start: pd.Timestamp, end: pd.Timestamp
    ) -> tuple[pd.DataFrame, FetchReport]:
        """Closed bars with start <= ts < end, oldest first, as a raw frame + what it cost.

        Pages backwards with ``after`` (strictly earlier than) from ``end`` until a page reaches
        back to ``start`` or comes back empty. Each request asks for at most the number of bar
        slots still missing (``limit`` <= 1440), so a full window costs ceil(slots / 1440)
        requests, slots = bar opens in [start, end) (14 days of 1m ending mid-bar: 20161 ->
        15), and a one-hour incremental fetch of 1m bars is a single request. Rows with
        ``confirm`` "0" (the bar still forming) are dropped and counted.
        """
        validate_instrument_id(inst_id)
        step_ms = int(bar_duration(bar).value // 1_000_000)
        start_ms = to_ms_ceil(as_utc(start, refuse_naive="start"))
        end_ms = to_ms_ceil(as_utc(end, refuse_naive="end"))
        report = FetchReport()
        rows = WindowRows(start_ms, end_ms)
        if start_ms < end_ms:
            self._page_backwards(inst_id, bar, step_ms, rows, report)
        frame = rows.frame(inst_id)
        report.rows = len(frame)
        return frame, report

    def _page_backwards(
        self, inst_id: str, bar: str, step_ms: int, rows: WindowRows, report: FetchReport
    ) -> None:
        """Walk ``after`` back from the window's end, one page per request, into ``rows``."""
        after = rows.end_ms
        while True:
            params = page_params(inst_id, bar, after, rows.start_ms, step_ms)
            request = PageRequest(inst_id, params, self.base_url)
            data = self._get_page(request, report)
            report.pages += 1
            if not data:
                return
            page_ts = page_stamps(request, data)
            rows.add_page(page_ts, data, request.origin, report)
            oldest = min(page_ts)
            if oldest >= after:
                reason = f"paging made no progress (oldest ts {oldest} >= after {after})"
                raise request.error(reason, status=200, code="0")
            if oldest - step_ms < rows.start_ms:  # no bar opens in [start, oldest) on the grid
                return
            after = oldest

    def _get_page(self, request: PageRequest, report: FetchReport) -> list[list[Any]]:
        """One page, with retries for timeouts, connection errors, 5xx and BloFin's transient
        codes only; a suspension (429 / 403) raises BlofinRateLimited on the first answer."""
        backoff: float | None = None  # a first attempt waits for its turn only
        for attempt in range(self.max_retries + 1):
            report.started_at.append(self.limiter.wait(backoff))
            report.requests += 1
            outcome = self._attempt(request, attempt + 1)
            if not isinstance(outcome, RetryableFailure):
                return outcome
            if attempt == self.max_retries:
                raise request.error(
                    f"retries exhausted ({self.max_retries}); last error: {outcome.reason}",
                    status=outcome.status,
                    code=outcome.code,
                    msg=outcome.msg,
                    attempts=attempt + 1,
                )
            report.retries += 1
            wait = outcome.retry_after
            backoff = wait if wait is not None else self.backoff_delay(attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, request: PageRequest, attempts: int) -> list[list[Any]] | RetryableFailure:
        """One request: the page's rows, a failure worth retrying, or a raised 4xx/bad body."""
        try:
            response = self.session.get(
                self.base_url + CANDLES_PATH,
                params=request.params,
                headers={"Accept": "application/json"},
                timeout=self.timeout_seconds,
            )
        except RETRYABLE_EXCEPTIONS as exc:
            return RetryableFailure(f"{type(exc).__name__}: {exc}")
        status = response.status_code
        if status in SUSPENDED_STATUSES:
            code, msg = error_fields(response)
            raise request.suspended(status, code=code, msg=msg, attempts=attempts)
        if status >= 500:
            code, msg = error_fields(response)
            return RetryableFailure("server error", status, code, msg, retry_after(response))
        if status >= 400:
            code, msg = error_fields(response)
            raise request.error(
                "client error (not retried)", status=status, code=code, msg=msg, attempts=attempts
            )
        return page_data(request, response, attempts)
