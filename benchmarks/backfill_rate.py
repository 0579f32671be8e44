"""How long a first backfill of many instruments takes at BloFin's limits, against the fake.

FakeBlofin on 127.0.0.1 serves ``--days`` of 1m bars under ``--instruments`` names (one book
served under every name, so 100 x 14 days needs one instrument's memory), each answer after
``--latency`` seconds (a round trip to BloFin; 127.0.0.1 alone answers in milliseconds).
``fetch_instruments`` then fetches every instrument's window with the production budget
(CLIENT_RATE_LIMITS: 400 requests a minute, 1,200 per 5 minutes) and ``--workers`` threads;
``--sequential`` times one worker as well, ``--ingest`` the whole first backfill (fetch,
validate, store in a temporary DuckDB file) with the workers.

Printed, one JSON line per run, then a table: requests, wall time, requests per minute, the
most requests the fake saw in any 60 s and any 300 s, the most in flight at once, and the
floor: how long the limiter alone makes that many requests take (its own schedule, replayed on
a virtual clock), which no client within the budget can beat.

Usage (from the repository root, venv active)::

    python benchmarks/backfill_rate.py                       # 100 instruments x 14 days
    python benchmarks/backfill_rate.py --latency 0.5 --sequential
    python benchmarks/backfill_rate.py --instruments 20 --days 3 --ingest
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the fake exchange lives with the tests

import pandas as pd  # noqa: E402

from blofin_assets.market.ingest import ingest_candles  # noqa: E402
from blofin_assets.market.settings import MarketSettings  # noqa: E402
from blofin_assets.market.sources.blofin import CLIENT_RATE_LIMITS, RateLimiter  # noqa: E402
from blofin_assets.market.sources.blofin_batch import (  # noqa: E402
    FETCH_WORKERS,
    FetchConfig,
    fetch_instruments,
)
from blofin_assets.storage.connection import DuckDBFile  # noqa: E402
from blofin_assets_tests.fake_blofin import FakeBlofin, random_walk_candles  # noqa: E402
from blofin_assets_tests.virtual_clock import VirtualClock, most_in_any_window  # noqa: E402

NOW = pd.Timestamp("2024-03-15T12:00:30Z")
END = NOW.floor("1min")


def limiter_floor(requests: int) -> float:
    """Seconds from the first start to the last that the production limiter grants for this
    many requests, on a virtual clock: the budget's own pace, with no network at all."""
    clock = VirtualClock(start=0.0)
    limiter = RateLimiter(CLIENT_RATE_LIMITS, clock=clock.clock, sleep=clock.sleep)
    starts = [limiter.wait() for _ in range(requests)]
    return starts[-1] - starts[0]


def serve(instruments: list[str], days: int, latency: float) -> FakeBlofin:
    history = random_walk_candles([instruments[0]], end=END, periods=days * 1440 + 30, seed=5)
    fake = FakeBlofin(history, latency_seconds=latency).start()
    fake.serve_as(instruments[0], instruments[1:])
    return fake


def figures(fake: FakeBlofin, label: str, seconds: float, workers: int) -> dict[str, Any]:
    arrivals = [request.at for request in fake.candle_requests()]
    count = len(arrivals)
    return {
        "run": label,
        "workers": workers,
        "requests": count,
        "wall_s": round(seconds, 1),
        "per_minute": round(60 * count / seconds, 1),
        "most_in_60s": most_in_any_window(arrivals, 60.0),
        "most_in_300s": most_in_any_window(arrivals, 300.0),
        "most_in_flight": fake.most_in_flight,
        "floor_s": round(limiter_floor(count), 1),
    }


def fetch_run(fake: FakeBlofin, instruments: list[str], days: int, workers: int) -> dict:
    fake.reset()
    windows = {inst_id: (END - pd.Timedelta(days=days), END) for inst_id in instruments}
    began = time.monotonic()
    fetched = fetch_instruments(fake.url, windows, "1m", config=FetchConfig(workers=workers))
    seconds = time.monotonic() - began
    rows = sum(len(frame) for frame, _ in fetched.values())
    return {**figures(fake, "fetch", seconds, workers), "rows": rows}


def ingest_run(fake: FakeBlofin, instruments: list[str], days: int, workers: int) -> dict:
    fake.reset()
    settings = MarketSettings(
        source="blofin",
        instruments=",".join(instruments),
        bar="1m",
        lookback_days=days,
        training_days=days,
        horizon=5,
        api_url=fake.url,
        candles_file="",
        on_bad_rows="reject",
        as_of=NOW.isoformat(),
    )
    with tempfile.TemporaryDirectory() as folder:
        began = time.monotonic()
        report = ingest_candles(
            settings, DuckDBFile(f"{folder}/backfill.duckdb"), fetch=FetchConfig(workers=workers)
        )
        seconds = time.monotonic() - began
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return {
        **figures(fake, "ingest", seconds, workers),
        "rows": report.new_rows,
        "peak_rss_gb": round(peak_gb, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instruments", type=int, default=100)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--latency", type=float, default=0.25, help="seconds per answer")
    parser.add_argument("--workers", type=int, default=FETCH_WORKERS)
    parser.add_argument("--sequential", action="store_true", help="also time one worker")
    parser.add_argument("--ingest", action="store_true", help="also time fetch+validate+store")
    args = parser.parse_args()
    instruments = [f"C{number:03d}-USDT" for number in range(args.instruments)]
    fake = serve(instruments, args.days, args.latency)
    runs = []
    try:
        runs.append(fetch_run(fake, instruments, args.days, args.workers))
        if args.sequential:
            runs.append(fetch_run(fake, instruments, args.days, 1))
        if args.ingest:
            runs.append(ingest_run(fake, instruments, args.days, args.workers))
    finally:
        fake.stop()
    setup = {"instruments": args.instruments, "days": args.days, "latency_s": args.latency}
    for run in runs:
        print(json.dumps({**setup, **run}), flush=True)
    print(
        f"\n{args.instruments} instruments x {args.days} days of 1m bars, "
        f"{args.latency} s per answer, budget {CLIENT_RATE_LIMITS}"
    )
    columns = list(dict.fromkeys(column for run in runs for column in run))
    print(" | ".join(columns))
    for run in runs:
        print(" | ".join(str(run.get(column, "")) for column in columns))


if __name__ == "__main__":
    main()
