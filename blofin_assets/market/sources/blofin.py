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

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import requests

from blofin_assets.market.bars import bar_duration
from blofin_assets.market.clock import as_utc
from blofin_assets.market.contract import (
    CANDLE_COLUMNS,
    OPTIONAL_CANDLE_COLUMNS,
    validate_instrument_id,
)

DEFAULT_API_URL = "https://openapi.blofin.com"
CANDLES_PATH = "/api/v1/market/candles"
MAX_LIMIT = 1440
RAW_COLUMNS: list[str] = [*CANDLE_COLUMNS, *OPTIONAL_CANDLE_COLUMNS, "origin"]
# Index of each output column in a BloFin candle row.
ROW_FIELDS: dict[str, int] = {
    "open": 1,
    "high": 2,
    "low": 3,
    "close": 4,
    "volume": 6,  # volCurrency: base currency (vol, index 5, is contracts)
    "volume_currency": 6,
    "volume_quote": 7,
}
TS_INDEX, CONFIRM_INDEX, ROW_LENGTH = 0, 8, 9
RETRYABLE_EXCEPTIONS: tuple[type[BaseException], ...] = (
    requests.Timeout,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
)


class BlofinAPIError(RuntimeError):
    """A candles request failed; names the instrument, request, HTTP status and BloFin's msg."""

    def __init__(
        self,
        reason: str,
        *,
        inst_id: str,
        url: str,
        status: int | None,
        code: str | None = None,
        msg: str | None = None,
        attempts: int = 1,
    ) -> None:
        status_text = f"HTTP {status}" if status is not None else "no HTTP response"
        super().__init__(
            f"BloFin candles request for {inst_id} failed: {reason}; {status_text}, "
            f"code={code!r}, msg={msg!r}; request GET {url} (attempts: {attempts})"
        )
        self.inst_id = inst_id
        self.url = url
        self.status = status
        self.code = code
        self.msg = msg
        self.attempts = attempts


@dataclass
class FetchReport:
    """What one fetch cost: HTTP requests (incl. retries), retries, pages, rows, open bars."""

    requests: int = 0
    retries: int = 0
    pages: int = 0
    rows: int = 0
    unconfirmed_dropped: int = 0


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


def _to_ms_ceil(stamp: pd.Timestamp) -> int:
    return -((-stamp.value) // 1_000_000)


def empty_raw_candles() -> pd.DataFrame:
    """A typed empty raw frame: 'no new bars' flows on like any batch."""
    frame = pd.DataFrame({column: pd.Series(dtype=object) for column in RAW_COLUMNS})
    frame["ts"] = pd.Series(dtype="datetime64[ns, UTC]")
    return frame


def _error_fields(response: requests.Response) -> tuple[str | None, str | None]:
    """BloFin's code/msg from an error body, or the start of the body if it isn't JSON."""
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:200] or None
    if isinstance(body, dict):
        code = body.get("code")
        return (None if code is None else str(code)), body.get("msg")
    return None, str(body)[:200]


def _retry_after(response: requests.Response) -> float | None:
    header = response.headers.get("Retry-After")
    if header is None:
        return None
    try:
        seconds = float(header)
    except ValueError:  # HTTP-date form: fall back to our own backoff
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


@dataclass
class _RetryableFailure:
    """Why one attempt failed in a way worth retrying, and any wait the server asked for."""

    reason: str
    status: int | None = None
    code: str | None = None
    msg: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class _PageRequest:
    """One page's request, which every error about that page names."""

    inst_id: str
    params: dict[str, str]
    base_url: str

    @property
    def url(self) -> str:
        return f"{self.base_url}{CANDLES_PATH}?{urlencode(self.params)}"

    @property
    def origin(self) -> str:
        return f"GET {CANDLES_PATH}?{urlencode(self.params)}"

    def error(self, reason: str, **details: Any) -> BlofinAPIError:
        """BlofinAPIError naming this request; ``details`` are its status/code/msg/attempts."""
        return BlofinAPIError(reason, inst_id=self.inst_id, url=self.url, **details)


def _page_data(
    request: _PageRequest, response: requests.Response, attempts: int
) -> list[list[Any]]:
    """Validate the envelope; BloFin's error codes and malformed bodies fail at once."""

    def fail(reason: str, code: str | None = None, msg: str | None = None) -> BlofinAPIError:
        status = response.status_code
        return request.error(reason, status=status, code=code, msg=msg, attempts=attempts)

    try:
        body = response.json()
    except ValueError:
        raise fail("malformed JSON", msg=response.text[:200]) from None
    if not isinstance(body, dict):
        raise fail("response is not a JSON object", msg=str(body)[:200])
    code = None if body.get("code") is None else str(body.get("code"))
    msg = body.get("msg")
    if code != "0":
        raise fail("BloFin returned an error code", code=code, msg=msg)
    data = body.get("data")
    if not isinstance(data, list) or not all(
        isinstance(row, list) and len(row) >= ROW_LENGTH for row in data
    ):
        raise fail(f"data is not a list of {ROW_LENGTH}-field rows", code=code, msg=msg)
    return data


def _page_params(inst_id: str, bar: str, after: int, start_ms: int, step_ms: int) -> dict[str, str]:
    """Ask for no more bars than slots remain, so a short incremental fetch is one request."""
    missing_bars = -((start_ms - after) // step_ms)  # ceil((after - start) / step)
    return {
        "instId": inst_id,
        "bar": bar,
        "after": str(after),
        "limit": str(min(MAX_LIMIT, missing_bars)),
    }


def _page_stamps(request: _PageRequest, data: list[list[Any]]) -> list[int]:
    """Bar open times of a page; paging steers by them, so a bad one stops the fetch."""
    try:
        return [int(row[TS_INDEX]) for row in data]
    except (TypeError, ValueError):
        reason = "a candle ts is not integer epoch milliseconds"
        raise request.error(reason, status=200, code="0") from None


class _WindowRows:
    """Confirmed rows with start <= ts < end, gathered page by page in BloFin's newest-first
    order and sorted once at the end."""

    def __init__(self, start_ms: int, end_ms: int) -> None:
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.stamps: list[int] = []
        self.fields: dict[str, list[str]] = {column: [] for column in ROW_FIELDS}
        self.origins: list[str] = []

    def add_page(
        self, page_ts: list[int], data: list[list[Any]], origin: str, report: FetchReport
    ) -> None:
        for ts, row in zip(page_ts, data, strict=True):
            if str(row[CONFIRM_INDEX]) == "0":
                report.unconfirmed_dropped += 1
                continue
            if self.start_ms <= ts < self.end_ms:
                self.stamps.append(ts)
                for column, index in ROW_FIELDS.items():
                    self.fields[column].append(row[index])
                self.origins.append(origin)

    def frame(self, inst_id: str) -> pd.DataFrame:
        if not self.stamps:
            return empty_raw_candles()
        stamps = np.asarray(self.stamps, dtype=np.int64)
        order = np.argsort(stamps, kind="stable")
        frame = pd.DataFrame(
            {
                "inst_id": inst_id,
                "ts": pd.to_datetime(stamps[order], unit="ms", utc=True),
                **{
                    column: np.asarray(values, dtype=object)[order]
                    for column, values in self.fields.items()
                },
                "origin": np.asarray(self.origins, dtype=object)[order],
            }
        )[RAW_COLUMNS]
        frame["ts"] = frame["ts"].astype("datetime64[ns, UTC]")
        return frame


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
        start_ms = _to_ms_ceil(as_utc(start, refuse_naive="start"))
        end_ms = _to_ms_ceil(as_utc(end, refuse_naive="end"))
        report = FetchReport()
        rows = _WindowRows(start_ms, end_ms)
        if start_ms < end_ms:
            self._page_backwards(inst_id, bar, step_ms, rows, report)
        frame = rows.frame(inst_id)
        report.rows = len(frame)
        return frame, report

    def _page_backwards(
        self, inst_id: str, bar: str, step_ms: int, rows: _WindowRows, report: FetchReport
    ) -> None:
        """Walk ``after`` back from the window's end, one page per request, into ``rows``."""
        after = rows.end_ms
        while True:
            params = _page_params(inst_id, bar, after, rows.start_ms, step_ms)
            request = _PageRequest(inst_id, params, self.base_url)
            data = self._get_page(request, report)
            report.pages += 1
            if not data:
                return
            page_ts = _page_stamps(request, data)
            rows.add_page(page_ts, data, request.origin, report)
            oldest = min(page_ts)
            if oldest >= after:
                reason = f"paging made no progress (oldest ts {oldest} >= after {after})"
                raise request.error(reason, status=200, code="0")
            if oldest - step_ms < rows.start_ms:  # no bar opens in [start, oldest) on the grid
                return
            after = oldest

    def _get_page(self, request: _PageRequest, report: FetchReport) -> list[list[Any]]:
        """One page, with retries for timeouts, connection errors, 429 and 5xx only."""
        for attempt in range(self.max_retries + 1):
            self._limiter.wait()
            report.requests += 1
            outcome = self._attempt(request, attempt + 1)
            if not isinstance(outcome, _RetryableFailure):
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

    def _attempt(self, request: _PageRequest, attempts: int) -> list[list[Any]] | _RetryableFailure:
        """One request: the page's rows, a failure worth retrying, or a raised 4xx/bad body."""
        try:
            response = self.session.get(
                self.base_url + CANDLES_PATH,
                params=request.params,
                headers={"Accept": "application/json"},
                timeout=self.timeout_seconds,
            )
        except RETRYABLE_EXCEPTIONS as exc:
            return _RetryableFailure(f"{type(exc).__name__}: {exc}")
        status = response.status_code
        if status == 429 or status >= 500:
            code, msg = _error_fields(response)
            reason = "rate limited" if status == 429 else "server error"
            return _RetryableFailure(reason, status, code, msg, _retry_after(response))
        if status >= 400:
            code, msg = _error_fields(response)
            raise request.error(
                "client error (not retried)", status=status, code=code, msg=msg, attempts=attempts
            )
        return _page_data(request, response, attempts)
