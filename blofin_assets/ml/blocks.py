"""Candles as per-instrument blocks: sorted and checked once, computed block by block (on a
thread pool for large inputs), each block written to its own slice of the output."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from blofin_assets.market.contract import PRICE_COLUMNS


def _scan_blocks(candles: pd.DataFrame) -> tuple[np.ndarray, bool, bool]:
    """Block starts, whether the input is sorted, and whether a (inst_id, ts) repeats."""
    inst = candles["inst_id"].to_numpy()
    change = np.flatnonzero(inst[1:] != inst[:-1]) + 1
    starts = np.concatenate(([0], change)).astype(np.int64)
    step = np.diff(candles["ts"].array.asi8)
    step[change - 1] = 1  # block boundaries are not time steps
    blocks_sorted = bool(np.all(inst[starts[:-1]] < inst[starts[1:]]))
    return starts, blocks_sorted and bool(np.all(step > 0)), bool(np.any(step == 0))


def instrument_blocks(candles: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Return candles sorted by (inst_id, ts) and the start offset of each instrument block.

    The contract already promises sorted input, so the common path only verifies it cheaply
    (O(n), no sort); unsorted input is sorted.  Duplicate (inst_id, ts) bars are refused: a
    bar is closed once, and a duplicate would silently shift every trailing window.
    """
    ts = candles["ts"]
    if str(ts.dtype) != "datetime64[ns, UTC]":
        candles = candles.assign(ts=pd.to_datetime(ts, utc=True).astype("datetime64[ns, UTC]"))
    if len(candles) == 0:
        return candles, np.zeros(0, dtype=np.int64)
    starts, is_sorted, _ = _scan_blocks(candles)
    if not is_sorted:
        candles = candles.sort_values(["inst_id", "ts"], kind="stable", ignore_index=True)
        starts, is_sorted, has_duplicates = _scan_blocks(candles)
        if has_duplicates or not is_sorted:
            raise ValueError("candles contain duplicate (inst_id, ts) bars")
    return candles, starts


def check_prices(
    candles: pd.DataFrame,
    columns: tuple[str, ...] = tuple(PRICE_COLUMNS),
    *,
    volume: bool = True,
) -> None:
    """Log returns need positive finite prices; one bad bar would poison every later window.

    min/max propagate NaN, so two reductions per column check everything without a copy.
    """
    for column in columns:
        values = candles[column].to_numpy(dtype=np.float64)
        if not (values.min() > 0 and values.max() < np.inf):
            raise ValueError(f"candle {column} must be finite and > 0")
    if volume:
        values = candles["volume"].to_numpy(dtype=np.float64)
        if not (values.min() >= 0 and values.max() < np.inf):
            raise ValueError("candle volume must be finite and >= 0")


# Below this many candles a thread pool costs more than it saves (an hourly append is far
# below it; a first build far above).
PARALLEL_MIN_CANDLES = 200_000


def worker_count() -> int:
    """Cores this process may use (the affinity mask, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_blocks(work: Callable[[int], None], blocks: Iterable[int], candles: int) -> None:
    """Run ``work`` for every instrument block, on all cores for a large input.

    TA-Lib and numpy release the GIL on whole arrays and each block writes only its own
    slice of the output, so threads give the same bytes as a loop, faster on every core.
    """
    workers = min(worker_count(), 8)
    if candles < PARALLEL_MIN_CANDLES or workers < 2:
        for block in blocks:
            work(block)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="blofin-block") as pool:
        for _ in pool.map(work, blocks):
            pass  # re-raises the first block's exception


def first_output_rows(
    ts_ns: np.ndarray, starts: np.ndarray, ends: np.ndarray, warmup: int, start: pd.Timestamp | None
) -> np.ndarray:
    """Per instrument block, the first row that has `warmup` bars before it and ts >= start."""
    first = starts + warmup
    if start is not None:
        start_ns = pd.Timestamp(start).as_unit("ns").value
        for i, (lo, hi) in enumerate(zip(starts, ends, strict=True)):
            first[i] = max(first[i], lo + np.searchsorted(ts_ns[lo:hi], start_ns, side="left"))
    return first
