"""One page of BloFin's candles endpoint, read strictly: its rows, its error fields, the window
they fall in. The client (blofin.py) decides what to fetch and when to retry.

BloFin reports most errors as HTTP 200 with a non-"0" body ``code`` (docs, "Errors"). Two of
them say "try again" and are retried like a 5xx; an HTTP 429 or 403 means the IP is suspended
and stops the fetch at once; every other code fails at once, naming BloFin's ``msg``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import requests

from blofin_assets.market.contract import CANDLE_COLUMNS, OPTIONAL_CANDLE_COLUMNS

CANDLES_PATH = "/api/v1/market/candles"
MAX_LIMIT = 1440
# Body codes BloFin documents as transient (errors.md, all with HTTP 200): 500 "Internal Server
# Error" and 103013 "Internal error; unable to process your request. Please try again."
TRANSIENT_CODES = frozenset({"500", "103013"})
# HTTP 429 is BloFin's rate limit (the IP is suspended for 5 minutes after 500 requests in a
# minute, for 1 hour after 1,500 in 5 minutes); HTTP 403 its network firewall ("in most cases
# ... due to excessive requests and will result in a five-minute temporary ban").
SUSPENDED_STATUSES = frozenset({429, 403})
RATE_LIMIT_CODE = "429"  # the body code of a 429, seen with HTTP 200 too: treated the same
RAW_COLUMNS: list[str] = [*CANDLE_COLUMNS, *OPTIONAL_CANDLE_COLUMNS, "origin"]

TS_INDEX, CONFIRM_INDEX, ROW_LENGTH = 0, 8, 9
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


@dataclass
class FetchReport:
    """What one fetch cost: HTTP requests (incl. retries), retries, pages, rows, open bars;
    ``started_at``: when each request started by the limiter's clock, so the pacing of a batch
    can be checked from its reports (not compared: two equal fetches differ in time)."""

    requests: int = 0
    retries: int = 0
    pages: int = 0
    rows: int = 0
    unconfirmed_dropped: int = 0
    started_at: list[float] = field(default_factory=list, compare=False, repr=False)


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


class BlofinRateLimited(BlofinAPIError):
    """BloFin has suspended this IP (HTTP 429 or 403): stop now, retrying cannot succeed."""


def suspension_reason(status: int | None) -> str:
    """What a 429 / 403 means at BloFin, and what the client did about it."""
    if status == 403:
        what = (
            "blocked by BloFin's network firewall: the IP is banned, usually for five minutes, "
            "after excessive requests"
        )
    else:
        what = (
            "rate limit reached: BloFin suspends the IP for 5 minutes after 500 requests in a "
            "minute, for 1 hour after 1,500 in 5 minutes"
        )
    return f"{what}; stopped at once, not retried (no request succeeds until the ban ends)"


def to_ms_ceil(stamp: pd.Timestamp) -> int:
    return -((-stamp.value) // 1_000_000)


def empty_raw_candles() -> pd.DataFrame:
    """A typed empty raw frame: 'no new bars' flows on like any batch."""
    frame = pd.DataFrame({column: pd.Series(dtype=object) for column in RAW_COLUMNS})
    frame["ts"] = pd.Series(dtype="datetime64[ns, UTC]")
    return frame


def error_fields(response: requests.Response) -> tuple[str | None, str | None]:
    """BloFin's code/msg from an error body, or the start of the body if it isn't JSON."""
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:200] or None
    if isinstance(body, dict):
        code = body.get("code")
        return (None if code is None else str(code)), body.get("msg")
    return None, str(body)[:200]


def retry_after(response: requests.Response) -> float | None:
    header = response.headers.get("Retry-After")
    if header is None:
        return None
    try:
        seconds = float(header)
    except ValueError:  # HTTP-date form: fall back to our own backoff
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


@dataclass
class RetryableFailure:
    """Why one attempt failed in a way worth retrying, and any wait the server asked for."""

    reason: str
    status: int | None = None
    code: str | None = None
    msg: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class PageRequest:
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

    def suspended(self, status: int, **details: Any) -> BlofinRateLimited:
        """BlofinRateLimited naming this request: BloFin answered 429 / 403 (or code 429)."""
        reason = suspension_reason(status)
        url = self.url
        return BlofinRateLimited(reason, inst_id=self.inst_id, url=url, status=status, **details)


def page_data(
    request: PageRequest, response: requests.Response, attempts: int
) -> list[list[Any]] | RetryableFailure:
    """Validate the envelope: the rows, or a transient code to retry; any other error code and
    a malformed body fail at once (a 429 code as BlofinRateLimited)."""

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
    if code in TRANSIENT_CODES:
        return RetryableFailure(f"BloFin code {code} (transient)", response.status_code, code, msg)
    if code == RATE_LIMIT_CODE:
        raise request.suspended(response.status_code, code=code, msg=msg, attempts=attempts)
    if code != "0":
        raise fail("BloFin returned an error code", code=code, msg=msg)
    data = body.get("data")
    if not isinstance(data, list) or not all(
        isinstance(row, list) and len(row) >= ROW_LENGTH for row in data
    ):
        raise fail(f"data is not a list of {ROW_LENGTH}-field rows", code=code, msg=msg)
    return data


def page_params(inst_id: str, bar: str, after: int, start_ms: int, step_ms: int) -> dict[str, str]:
    """Ask for no more bars than slots remain, so a short incremental fetch is one request."""
    missing_bars = -((start_ms - after) // step_ms)  # ceil((after - start) / step)
    return {
        "instId": inst_id,
        "bar": bar,
        "after": str(after),
        "limit": str(min(MAX_LIMIT, missing_bars)),
    }


def page_stamps(request: PageRequest, data: list[list[Any]]) -> list[int]:
    """Bar open times of a page; paging steers by them, so a bad one stops the fetch."""
    try:
        return [int(row[TS_INDEX]) for row in data]
    except (TypeError, ValueError):
        reason = "a candle ts is not integer epoch milliseconds"
        raise request.error(reason, status=200, code="0") from None


class WindowRows:
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
