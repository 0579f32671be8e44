"""BloFin public REST candles: paged backwards, rate limited, retried, never an open bar.

``BlofinClient.fetch_candles`` returns a *raw* frame (contract columns with the price and volume
fields still as BloFin's strings, ``ts`` already parsed because paging needs it, and ``origin`` =
the request that brought the row) for ``validate_candles``.

Volume: BloFin instruments are perpetual swaps. In a candle row ``[ts, o, h, l, c, vol,
volCurrency, volCurrencyQuote, confirm]``, ``vol`` counts *contracts* and ``volCurrency`` is the
base-currency volume, so the contract's ``volume`` (base currency) is ``volCurrency`` -- the
field ccxt's BloFin ``parse_ohlcv`` uses (index 6). ``volume_currency`` repeats it and
``volume_quote`` is ``volCurrencyQuote``; ``vol`` itself is not kept.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import requests

from blofin_assets.market.bars import bar_duration
from blofin_assets.market.clock import as_utc
from blofin_assets.market.contract import (
    validate_instrument_id,
)
from blofin_assets.market.sources.blofin_pages import (
    CANDLES_PATH,
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


class _RateLimiter:
    """Minimum spacing between request starts (60 / rpm s); shared by all calls of a client."""

    def __init__(
        self, per_minute: int, clock: Callable[[], float], sleep: Callable[[float], None]
    ) -> None:
        if per_minute <= 0:
            raise ValueError(f"requests_per_minute must be positive, got {per_minute}")
        self.interval = 60.0 / per_minute
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            if self._next is not None and self._next > now:
                self._sleep(self._next - now)
                now = self._clock()
            self._next = max(now, self._next or now) + self.interval


class BlofinClient:
    """Reads BloFin market candles politely: well under the 500 req/min/IP public limit."""

    def __init__(
        self,
        base_url: str = DEFAULT_API_URL,
        *,
        requests_per_minute: int = 120,
        timeout_seconds: float = 10.0,
        max_retries: int = 5,
        backoff_base_seconds: float = 0.5,
        backoff_max_seconds: float = 30.0,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng_seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.base_url = base_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self._own_session = session is None
        self.session = session or requests.Session()
        self._sleep = sleep
        self._rng = random.Random(rng_seed)
        self._limiter = _RateLimiter(requests_per_minute, clock, sleep)

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
        """One page, with retries for timeouts, connection errors, 429 and 5xx only."""
        for attempt in range(self.max_retries + 1):
            self._limiter.wait()
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
            self._sleep(wait if wait is not None else self.backoff_delay(attempt))
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
        if status == 429 or status >= 500:
            code, msg = error_fields(response)
            reason = "rate limited" if status == 429 else "server error"
            return RetryableFailure(reason, status, code, msg, retry_after(response))
        if status >= 400:
            code, msg = error_fields(response)
            raise request.error(
                "client error (not retried)", status=status, code=code, msg=msg, attempts=attempts
            )
        return page_data(request, response, attempts)
