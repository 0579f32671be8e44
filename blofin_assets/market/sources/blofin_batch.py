"""Many instruments' candles at once from BloFin, under one shared limiter.

A first backfill of 100 instruments x 14 days of 1m bars is 1,400 requests. One at a time, each
waits for the last to come back, so a round trip over 0.15 s leaves the limiter's budget (one
start per 0.15 s) unused; ``fetch_instruments`` keeps up to FETCH_WORKERS in flight, and the
limiter, shared by every thread, still decides when each one starts. The answers come back in
the configured order whatever order the pages arrived in, and the first failure stops every
thread before its next request: a ban (HTTP 429 / 403) is met once, not once per thread.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass

import pandas as pd
import requests

from blofin_assets.market.sources.blofin import (
    CANCEL_POLL_SECONDS,
    CLIENT_RATE_LIMITS,
    BlofinClient,
    FetchStopped,
    RateLimit,
    RateLimiter,
)
from blofin_assets.market.sources.blofin_pages import BlofinRateLimited, FetchReport

# Instruments fetched at once. The limiter sets the pace, not the workers: one request may start
# every 0.15 s, and a page of 1440 bars takes longer than that to come back from BloFin (a round
# trip plus ~100 kB of JSON), so one worker leaves most of the budget unused. Six in flight fill
# it for answers of up to 0.9 s; more would open more sockets, never send faster.
FETCH_WORKERS = 6


@dataclass(frozen=True)
class FetchConfig:
    """How fetch_instruments fetches: instruments at once, the budget they share, and each
    client's timeout and retries. The defaults are BloFin's; tests scale the budget down."""

    workers: int = FETCH_WORKERS
    rate_limits: tuple[RateLimit, ...] = CLIENT_RATE_LIMITS
    timeout_seconds: float = 10.0
    max_retries: int = 5
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"FetchConfig.workers must be >= 1, got {self.workers}")


class BatchFailed(RuntimeError):
    """An instrument's failure stopped the batch. ``error``: that failure (a ban before any
    other, since it explains the rest); ``fetched``: bars of each instrument fetched in full;
    ``begun``: the others that had sent a request. Both in the configured order."""

    def __init__(self, error: BaseException, fetched: dict[str, int], begun: list[str]) -> None:
        super().__init__(str(error))
        self.error = error
        self.fetched = fetched
        self.begun = begun


class _Batch:
    """What one batch's workers share: the stop signal, the failure, per instrument whether its
    first request was let go (first requests leave in the configured order), and which
    instrument, if any, is retrying alone."""

    def __init__(self, count: int) -> None:
        self.stop = threading.Event()
        self.first_let_go = [threading.Event() for _ in range(count)]
        self.begun = [False] * count
        self.failure: BaseException | None = None
        self.retrying: int | None = None
        self._changed = threading.Condition()

    def fail(self, error: BaseException) -> None:
        """Keep the first failure (or the first ban) and stop every worker."""
        with self._changed:
            banned = isinstance(self.failure, BlofinRateLimited)
            if self.failure is None or (isinstance(error, BlofinRateLimited) and not banned):
                self.failure = error
            self.stop.set()
            self._changed.notify_all()

    def hold_back(self, index: int) -> None:
        """Wait while another instrument retries alone; FetchStopped once the batch stops."""
        with self._changed:
            self._others_retried(index)

    def retry_alone(self, index: int) -> None:
        """This instrument's request failed in a way worth retrying: no other request starts
        until its retry has succeeded (``resume``) or failed for good (the batch stops)."""
        with self._changed:
            self._others_retried(index)  # another's retry goes first
            self.retrying = index

    def _others_retried(self, index: int) -> None:
        while self.retrying not in (None, index):
            if self.stop.is_set():
                break
            self._changed.wait(CANCEL_POLL_SECONDS)
        if self.stop.is_set():
            raise FetchStopped("the batch stopped before this request")

    def resume(self, index: int) -> None:
        with self._changed:
            if self.retrying == index:
                self.retrying = None
                self._changed.notify_all()


class _InstrumentPacer:
    """The shared limiter as one instrument's client sees it. Its first request queues only once
    the previous instrument's first was let go, so first requests leave in the configured order
    (a fault or a ban meets the same instrument every run). A retry goes alone: while BloFin
    answers with errors worth retrying, one request at a time probes it, as a circuit breaker
    does half-open, instead of every thread spending the budget on failures. And once the batch
    stops, no request starts."""

    def __init__(self, limiter: RateLimiter, batch: _Batch, index: int) -> None:
        self.limiter, self.batch, self.index = limiter, batch, index

    def wait(self, backoff: float | None = None) -> float:
        batch, index = self.batch, self.index
        if backoff is None:
            batch.resume(index)  # the request before this one (if a retry) succeeded
        else:
            batch.retry_alone(index)
        if index and not batch.begun[index]:
            previous = batch.first_let_go[index - 1]
            while not previous.wait(CANCEL_POLL_SECONDS):
                batch.hold_back(index)
        if backoff and batch.stop.wait(backoff):
            raise FetchStopped("the batch stopped while this request backed off")
        while True:
            batch.hold_back(index)
            start = self.limiter.wait(cancel=batch.stop)
            if batch.retrying in (None, index):
                break  # else another began to retry alone meanwhile: this start goes unused
        batch.begun[index] = True
        batch.first_let_go[index].set()
        return start


def fetch_instruments(
    base_url: str,
    windows: Mapping[str, tuple[pd.Timestamp, pd.Timestamp]],
    bar: str,
    *,
    config: FetchConfig | None = None,
    limiter: RateLimiter | None = None,
) -> dict[str, tuple[pd.DataFrame, FetchReport]]:
    """Each instrument's [start, end) as ``fetch_candles`` returns it, ``config.workers`` at a
    time under one limiter (``limiter``, or a new one from ``config.rate_limits``), in the order
    of ``windows`` whatever order the pages came back in.

    Each worker thread has its own requests.Session: requests does not promise that a Session is
    safe to share between threads (psf/requests#2766). The first failure stops every worker
    before its next request (waits for the limiter and backoffs are cut short); the workers are
    joined, the sessions closed, and BatchFailed says what failed and what was fetched.
    """
    config = config or FetchConfig()
    inst_ids = list(windows)
    if not inst_ids:
        return {}
    shared = limiter or RateLimiter(config.rate_limits)
    batch = _Batch(len(inst_ids))
    local = threading.local()
    sessions: list[requests.Session] = []

    def fetch_one(index: int, inst_id: str) -> tuple[pd.DataFrame, FetchReport]:
        try:
            if not hasattr(local, "session"):
                local.session = requests.Session()
                sessions.append(local.session)  # list.append is atomic
            client = BlofinClient(
                base_url,
                limiter=_InstrumentPacer(shared, batch, index),
                session=local.session,
                timeout_seconds=config.timeout_seconds,
                max_retries=config.max_retries,
                backoff_base_seconds=config.backoff_base_seconds,
                backoff_max_seconds=config.backoff_max_seconds,
            )
            return client.fetch_candles(inst_id, bar, *windows[inst_id])
        except FetchStopped:
            raise
        except BaseException as error:
            batch.fail(error)
            raise
        finally:
            batch.resume(index)
            batch.first_let_go[index].set()  # the next instrument's first request need not wait

    pool = ThreadPoolExecutor(min(config.workers, len(inst_ids)), thread_name_prefix="blofin")
    try:
        futures = [pool.submit(fetch_one, i, inst_id) for i, inst_id in enumerate(inst_ids)]
        wait(futures, return_when=FIRST_EXCEPTION)
    finally:
        batch.stop.set()  # nothing left to stop when all are done; else a failure or interrupt
        pool.shutdown(wait=True, cancel_futures=True)
        for session in sessions:
            session.close()
    if batch.failure is not None:
        done = [(i, f) for i, f in zip(inst_ids, futures, strict=True) if not f.cancelled()]
        fetched = {i: len(f.result()[0]) for i, f in done if f.exception() is None}
        begun = [i for n, i in enumerate(inst_ids) if batch.begun[n] and i not in fetched]
        raise BatchFailed(batch.failure, fetched, begun) from batch.failure
    return {inst_id: future.result() for inst_id, future in zip(inst_ids, futures, strict=True)}
