"""What a benchmark run ingests (the workloads), the frozen clock, and the goals it reports."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FROZEN_NOW = "2026-11-20T12:00:30Z"
INCREMENTAL_MINUTES = 60  # the schedule's period: each follow-up run sees one more hour
TEN_INSTRUMENTS = (
    "BTC-USDT,ETH-USDT,SOL-USDT,XRP-USDT,DOGE-USDT,ADA-USDT,AVAX-USDT,LINK-USDT,DOT-USDT,LTC-USDT"
)
# The whole market: M's ten and 90 more. The demo market takes any valid id (levels and risk
# derived from the id's hash), so the extra ones are numbered like test_parallel_backfill's.
HUNDRED_INSTRUMENTS = ",".join(
    [TEN_INSTRUMENTS, *(f"C{number:03d}-USDT" for number in range(10, 100))]
)


@dataclass(frozen=True)
class Workload:
    name: str
    instruments: str
    bar: str
    days: int  # of candles stored (the lookback)
    training_days: int | None = None  # None: the whole lookback

    @property
    def instrument_count(self) -> int:
        return len(self.instruments.split(","))

    @property
    def candles(self) -> int:
        minutes = {"1m": 1, "5m": 5}[self.bar]
        return self.instrument_count * self.days * 1440 // minutes

    def env(self) -> dict[str, str]:
        return {
            "BLOFIN_INSTRUMENTS": self.instruments,
            "BLOFIN_BAR": self.bar,
            "BLOFIN_LOOKBACK_DAYS": str(self.days),
            "BLOFIN_TRAINING_DAYS": str(self.training_days or self.days),
        }


WORKLOADS: dict[str, Workload] = {
    "S": Workload("S", "BTC-USDT,ETH-USDT,SOL-USDT", "1m", 14),
    "M": Workload("M", TEN_INSTRUMENTS, "1m", 30),
    "L": Workload("L", TEN_INSTRUMENTS, "5m", 365),
    "H": Workload("H", TEN_INSTRUMENTS, "1m", 365, training_days=30),
    "W": Workload("W", HUNDRED_INSTRUMENTS, "1m", 30),
}

# Benchmark goals (reported PASS/FAIL in the summary; never used as test assertions).
GOALS: dict[str, dict[str, float]] = {
    "M": {
        "run_seconds": 90.0,
        "peak_rss_mb": 3 * 1024.0,
        "overhead_share": 0.20,
        "incremental_run_seconds": 2.0,
    },
    "L": {"run_seconds": 240.0, "peak_rss_mb": 6 * 1024.0},
    "W": {"run_seconds": 180.0, "hourly_run_seconds": 120.0, "peak_rss_mb": 4 * 1024.0},
}
FEATURES_TARGETS_GOAL = 1_000_000.0  # candles/s through features + targets, every workload
# A model step within this multiple of its estimator's fit (the rest is overhead to remove);
# judged on the hourly run, the one the schedule makes.
STEP_OVER_FIT_GOAL = 1.3
# time(bigger)/time(smaller) of whole runs, when both ran in one invocation: S->M must not
# grow faster than the rows; M->W (10x the rows) hourly within 4x.
SCALING_GOALS: tuple[tuple[str, str, str, float | None], ...] = (
    ("S", "M", "run_seconds", None),  # None: the row ratio is the limit
    ("M", "W", "hourly_run_seconds", 4.0),
)


def export_candles(workload: Workload, path: Path) -> None:
    """Write the workload's demo candles (the exact window the run ingests) to CSV/Parquet."""
    import pandas as pd

    from blofin_assets.market.bars import bar_duration, latest_closed_bar_open
    from blofin_assets.market.sources.demo import demo_candles

    now = pd.Timestamp(FROZEN_NOW)
    bar = bar_duration(workload.bar)
    start = (now - pd.Timedelta(days=workload.days)).floor(bar)
    end = latest_closed_bar_open(now, workload.bar) + bar
    frame = demo_candles(workload.instruments.split(","), workload.bar, start, end)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    print(json.dumps({"exported": str(path), "rows": len(frame)}))
