"""A stand-in for BloFin's public candles endpoint, served over real HTTP on 127.0.0.1.

Every test that needs "BloFin" uses this: the real client, real sockets, no monkeypatching.
``FakeBlofin`` pages exactly like ``GET /api/v1/market/candles`` (``after`` = strictly older,
``before`` = strictly newer, ``limit`` default 500 / max 1440, newest first, all fields strings,
an unconfirmed still-open bar after the last closed one), answers errors with BloFin's documented
codes in an HTTP 200 body (152014 unknown instrument, 152001 / 152002 a missing / bad parameter),
records every request with the time of an injectable clock (when it arrived and when it was
answered, and the most answered at once), plays scripted faults (429, 403, 5xx, the transient
codes 500 and 103013, real bodies from fixtures/blofin), can take a network round trip's time
to answer (``latency_seconds``), and accepts new candles later so incremental fetches can be
tested. Where each body comes from: fixtures/blofin/PROVENANCE.md.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pandas as pd

from blofin_assets.market.bars import bar_duration
from blofin_assets.market.contract import CANDLE_COLUMNS

CANDLES_PATH = "/api/v1/market/candles"
DEFAULT_LIMIT = 500  # BloFin docs, GET Candlesticks: "The maximum is 1440. The default is 500."
MAX_LIMIT = 1440
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "blofin"
# errors.md: 152014 | 200 | Instrument ID does not exist (body constructed: none recorded).
UNKNOWN_INSTRUMENT = {"code": "152014", "msg": "Instrument ID does not exist"}
# errors.md: 103013 | 200 | the message below (body constructed: none recorded).
TRY_AGAIN_MSG = "Internal error; unable to process your request. Please try again."


def fixture_body(name: str) -> bytes:
    """A recorded BloFin response body, byte for byte (fixtures/blofin/PROVENANCE.md)."""
    return (FIXTURES / name).read_bytes()


def bad_parameter(name: str) -> dict[str, str]:
    """BloFin's 152002 "Parameter {} error." (the recorded ccxt body, for any parameter)."""
    return {"code": "152002", "msg": f"Parameter {name} error."}


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour, applied to the next request in the queue: a JSON body with
    ``code``/``msg`` at HTTP ``status``, raw bytes, or a late answer."""

    kind: str  # "json", "raw", "timeout"
    status: int = 200
    code: str = "0"
    msg: str = ""
    body: bytes = b""
    content_type: str = "application/json"
    retry_after: str | None = None
    delay_seconds: float = 0.0

    @classmethod
    def error_code(cls, code: str = "152002", msg: str = "Parameter bar error.") -> Fault:
        """HTTP 200 with a non-"0" BloFin code, the way BloFin reports most errors."""
        return cls("json", code=code, msg=msg)

    @classmethod
    def transient(cls, code: str = "500") -> Fault:
        """HTTP 200 with a code BloFin says to retry: 500 (the body ccxt recorded, verbatim)
        or 103013 "Please try again"."""
        if code == "500":
            return cls.raw(fixture_body("ccxt_err_500_internal.json"))
        return cls.error_code(code, TRY_AGAIN_MSG)

    @classmethod
    def rate_limited(cls) -> Fault:
        """HTTP 429 with the body BloFin documents (errors.md: 429 | 429 | Too Many Requests)."""
        return cls("json", status=429, code="429", msg="Too Many Requests")

    @classmethod
    def firewall(cls) -> Fault:
        """HTTP 403 from BloFin's network firewall; its body is undocumented, so a plain page."""
        page = b"<html><body><h1>403 Forbidden</h1></body></html>"
        return cls("raw", status=403, body=page, content_type="text/html")

    @classmethod
    def server_error(cls, status: int = 502, retry_after: str | None = None) -> Fault:
        """An HTTP 5xx, e.g. from a gateway in front of BloFin."""
        msg = HTTPStatus(status).phrase
        return cls("json", status=status, code=str(status), msg=msg, retry_after=retry_after)

    @classmethod
    def bad_request(cls, msg: str = "Bad Request", code: str = "400") -> Fault:
        """An HTTP 400 (BloFin puts even its code 400 in an HTTP 200 body; a proxy may not)."""
        return cls("json", status=400, code=code, msg=msg)

    @classmethod
    def raw(cls, body: bytes, status: int = 200) -> Fault:
        """These bytes as the whole response body (a recorded fixture)."""
        return cls("raw", status=status, body=body)

    @classmethod
    def malformed_json(cls) -> Fault:
        return cls.raw(b'{"code":"0","msg":"success","data":[["17')

    @classmethod
    def timeout(cls, seconds: float = 1.0) -> Fault:
        """Answer only after `seconds`: longer than the client timeout, so it times out."""
        return cls("timeout", delay_seconds=seconds)


@dataclass
class RecordedRequest:
    path: str
    query: dict[str, str]
    target: str  # path?query exactly as received
    at: float  # the fake's clock when the request arrived
    done_at: float | None = None  # ... and when its answer had been sent (None: not yet)


def random_walk_candles(
    inst_ids: tuple[str, ...] | list[str] = ("BTC-USDT",),
    *,
    end: pd.Timestamp,
    periods: int,
    bar: str = "1m",
    seed: int = 0,
    start_price: float = 100.0,
) -> pd.DataFrame:
    """Deterministic closed candles, contract layout + volume_currency/volume_quote.

    The last bar opens at ``end - bar`` (so it is closed at ``end``); ``end`` must be on the grid.
    """
    step = bar_duration(bar)
    end = pd.Timestamp(end)
    if end.tz is None:
        raise ValueError("end must be timezone-aware")
    rng = np.random.default_rng(seed)
    stamps = pd.date_range(end=end - step, periods=periods, freq=step).tz_convert("UTC")
    frames = []
    for number, inst_id in enumerate(inst_ids):
        price = start_price * (1 + number)
        close = np.round(price * np.exp(np.cumsum(rng.normal(0, 0.001, periods))), 6)
        open_ = np.round(np.r_[price, close[:-1]], 6)
        top = np.maximum(open_, close)
        bottom = np.minimum(open_, close)
        high = np.maximum(np.round(top * (1 + np.abs(rng.normal(0, 0.0005, periods))), 6), top)
        low = np.minimum(np.round(bottom * (1 - np.abs(rng.normal(0, 0.0005, periods))), 6), bottom)
        volume = np.round(rng.gamma(2.0, 5.0, periods), 4)
        frames.append(
            pd.DataFrame(
                {
                    "inst_id": inst_id,
                    "ts": stamps,
                    "open": open_,
                    "high": high,
                    "low": low,
                    "close": close,
                    "volume": volume,
                    "volume_currency": volume,
                    "volume_quote": np.round(volume * close, 4),
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    frame["ts"] = frame["ts"].astype("datetime64[ns, UTC]")
    return frame.sort_values(["inst_id", "ts"], ignore_index=True)


def _fmt(values: np.ndarray) -> list[str]:
    return [repr(v) for v in values.astype(float).tolist()]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeBlofin

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out has closed its socket; that is expected, not news."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    recorded: RecordedRequest

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        fake = self.server.fake
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        request = RecordedRequest(parts.path, query, self.path, fake.clock())
        self.recorded = request
        fault = fake._record_and_pop_fault(request)
        try:
            if fault is not None and fault.kind == "timeout":
                time.sleep(fault.delay_seconds)
                fault = None
            if fake.latency_seconds:
                time.sleep(fake.latency_seconds)
            if fault is not None:
                self._fault(fault)
            elif parts.path == CANDLES_PATH:
                self._json(200, fake._candles_response(query))
            else:
                self._json(404, {"code": "404", "msg": f"no route {parts.path}", "data": []})
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            fake._answered(request)

    def _fault(self, fault: Fault) -> None:
        if fault.kind == "raw":
            self._send(fault.status, fault.body, fault.content_type)
        else:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            self._json(fault.status, {"code": fault.code, "msg": fault.msg}, headers)

    def _json(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        self._send(status, json.dumps(body).encode(), "application/json", headers)

    def _send(
        self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        # Answered before a byte leaves: a client waiting for this answer to send its next
        # request then never counts as two in flight.
        self.server.fake._answered(self.recorded)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


class FakeBlofin:
    """Context manager serving candles for the instruments in `candles` at `.url`."""

    def __init__(
        self,
        candles: pd.DataFrame | None = None,
        *,
        bar: str = "1m",
        unconfirmed: bool = True,
        contract_value: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
        latency_seconds: float = 0.0,
    ) -> None:
        """``clock`` stamps the request log: a test's virtual clock, to check pacing.
        ``latency_seconds``: every answer waits this long first, like a round trip to BloFin
        (real time, whatever the clock; settable between requests)."""
        self.bar = bar
        self.clock = clock
        self.latency_seconds = latency_seconds
        self._in_flight = 0
        self._most_in_flight = 0
        self.step_ms = int(bar_duration(bar).value // 1_000_000)
        self.unconfirmed = unconfirmed
        self.contract_value = contract_value
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._requests: list[RecordedRequest] = []
        self._frame = pd.DataFrame(columns=[*CANDLE_COLUMNS, "volume_currency", "volume_quote"])
        self._books: dict[str, tuple[np.ndarray, list[list[str]]]] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        if candles is not None:
            self.add_candles(candles)

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> FakeBlofin:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="FakeBlofin",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeBlofin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeBlofin is not running; use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ---- data -----------------------------------------------------------------------------
    def add_candles(self, candles: pd.DataFrame) -> None:
        """Add (or replace, same inst_id+ts) closed candles; the open bar moves after them."""
        frame = candles.copy()
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        if "volume_currency" not in frame:
            frame["volume_currency"] = frame["volume"]
        if "volume_quote" not in frame:
            frame["volume_quote"] = frame["volume"] * frame["close"]
        columns = list(self._frame.columns)
        with self._lock:
            merged = (
                pd.concat([self._frame, frame[columns]], ignore_index=True)
                if len(self._frame)
                else frame[columns].copy()
            )
            merged = merged.drop_duplicates(["inst_id", "ts"], keep="last")
            self._frame = merged.sort_values(["inst_id", "ts"], ignore_index=True)
            self._books = {
                str(inst_id): self._book(group) for inst_id, group in self._frame.groupby("inst_id")
            }

    def _book(self, group: pd.DataFrame) -> tuple[np.ndarray, list[list[str]]]:
        ts_ms = (group["ts"].astype("datetime64[ns, UTC]").astype("int64") // 1_000_000).to_numpy()
        volume = group["volume_currency"].to_numpy(dtype=float)
        columns = [
            [str(t) for t in ts_ms],
            _fmt(group["open"].to_numpy(dtype=float)),
            _fmt(group["high"].to_numpy(dtype=float)),
            _fmt(group["low"].to_numpy(dtype=float)),
            _fmt(group["close"].to_numpy(dtype=float)),
            _fmt(np.round(volume / self.contract_value, 6)),
            _fmt(volume),
            _fmt(group["volume_quote"].to_numpy(dtype=float)),
            ["1"] * len(group),
        ]
        rows = [list(row) for row in zip(*columns, strict=True)]
        if self.unconfirmed and len(rows):
            last_close = float(group["close"].iloc[-1])
            open_ts = int(ts_ms[-1]) + self.step_ms
            rows.append(
                [
                    str(open_ts),
                    *_fmt(
                        np.array([last_close, last_close * 1.001, last_close * 0.999, last_close])
                    ),
                    "100",
                    "1",
                    _fmt(np.array([last_close]))[0],
                    "0",
                ]
            )
            ts_ms = np.r_[ts_ms, open_ts]
        return ts_ms.astype(np.int64), rows

    def serve_as(self, inst_id: str, aliases: list[str]) -> None:
        """Serve ``inst_id``'s bars under each alias too, without another copy of its book (a
        hundred instruments of 14 days for a benchmark); until the next ``add_candles``."""
        with self._lock:
            for alias in aliases:
                self._books[alias] = self._books[inst_id]

    def last_closed_ts(self, inst_id: str) -> pd.Timestamp:
        with self._lock:
            return self._frame.loc[self._frame["inst_id"] == inst_id, "ts"].max()

    # ---- faults and request log -----------------------------------------------------------
    def queue_faults(self, *faults: Fault) -> None:
        """Apply these, in order, to the next requests (one fault per request)."""
        with self._lock:
            self._faults.extend(faults)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def candle_requests(self, inst_id: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if r.path == CANDLES_PATH and (inst_id is None or r.query.get("instId") == inst_id)
        ]

    @property
    def most_in_flight(self) -> int:
        """The most requests arrived and not yet answered at any one time since the log was
        last cleared: above 1, a client had requests overlapping."""
        with self._lock:
            return self._most_in_flight

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()
            self._most_in_flight = self._in_flight

    def reset(self) -> None:
        """Forget recorded requests and any faults still queued (between tests)."""
        self.clear_requests()
        with self._lock:
            self._faults.clear()

    def _record_and_pop_fault(self, request: RecordedRequest) -> Fault | None:
        with self._lock:
            self._requests.append(request)
            self._in_flight += 1
            self._most_in_flight = max(self._most_in_flight, self._in_flight)
            return self._faults.pop(0) if self._faults else None

    def _answered(self, request: RecordedRequest) -> None:
        with self._lock:
            if request.done_at is None:  # once: an answer, or a request dropped half-way
                request.done_at = self.clock()
                self._in_flight -= 1

    # ---- the endpoint ---------------------------------------------------------------------
    def _candles_response(self, query: dict[str, str]) -> dict[str, Any]:
        inst_id = query.get("instId", "")
        if not inst_id:
            return {"code": "152001", "msg": "Parameter instId cannot be empty."}
        if query.get("bar", "1m") != self.bar:  # one bar size per fake
            return bad_parameter("bar")
        values: dict[str, int | None] = {}
        for name in ("limit", "after", "before"):
            try:
                values[name] = int(query[name]) if query.get(name) else None
            except ValueError:
                return bad_parameter(name)
        if values["limit"] is not None and values["limit"] < 1:
            return bad_parameter("limit")
        limit = min(values["limit"] or DEFAULT_LIMIT, MAX_LIMIT)
        after, before = values["after"], values["before"]
        with self._lock:
            book = self._books.get(inst_id)
        if book is None:
            return dict(UNKNOWN_INSTRUMENT)
        ts_ms, rows = book
        hi = int(np.searchsorted(ts_ms, after, "left")) if after is not None else len(ts_ms)
        lo = int(np.searchsorted(ts_ms, before, "right")) if before is not None else 0
        first = max(lo, hi - limit)
        return {"code": "0", "msg": "success", "data": rows[first:hi][::-1]}
