"""Fetch new candles from the configured source, validate them, store them in one transaction.

No source ever falls back to another: a failing source fails the run, and a synthetic source
says so in every report. Before anything is fetched, the run must fit the file: its bar size and
market (storage.warehouse), and a "now" no earlier than the newest stored bar.

Nothing is stored until every instrument is fetched and validated; then all are stored in one
transaction. So a run that fails at any instrument, a BloFin rate-limit ban included
(RateLimitedRun), stores none of them, and the next run resumes from the newest stored bar.
BloFin instruments are fetched several at once (blofin_batch), under one limiter, and put
together in the configured order, so what is stored never depends on which answer came first.
A first backfill that returns less history than BLOFIN_LOOKBACK_DAYS is reported per instrument
(IngestReport.backfill), never passed silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from blofin_assets.market.bars import latest_closed_bar_open
from blofin_assets.market.clock import as_utc
from blofin_assets.market.contract import CANDLE_COLUMNS
from blofin_assets.market.settings import MarketSettings
from blofin_assets.market.sources.blofin_batch import BatchFailed, FetchConfig, fetch_instruments
from blofin_assets.market.sources.blofin_pages import BlofinRateLimited, FetchReport
from blofin_assets.market.sources.demo import demo_candles
from blofin_assets.market.sources.files import read_candles_file
from blofin_assets.market.validation.batch import validate_candles
from blofin_assets.storage import candles, fingerprints, warehouse
from blofin_assets.storage.connection import DuckDBFile
from blofin_assets.storage.sql import table_exists

# Bars re-fetched before the newest stored one, so a bar missed at the edge of the last fetch
# is picked up. Stored closed bars are never rewritten: a re-fetched bar with the same values
# is counted as unchanged, one with other values is a conflict (storage.candle_conflicts).
OVERLAP_BARS = 5
# History starting more than this many bars after the lookback start is short. Fewer missing
# bars at the start are a gap (the gaps check's threshold), more a listing younger than the
# lookback, older bars BloFin does not serve, or a lookback raised after the first backfill.
BACKFILL_SLACK_BARS = 5
DAY = pd.Timedelta(days=1)
# Why history may fall short: what a first backfill knows, and what the stored table adds.
SHORT_FETCH_WHY = (
    "BloFin returned no older bars: a listing younger than the lookback, or older history it "
    "does not serve"
)
SHORT_STORED_WHY = (
    f"{SHORT_FETCH_WHY}; or BLOFIN_LOOKBACK_DAYS was raised after the first backfill (later "
    "runs fetch forward only)"
)


@dataclass(frozen=True)
class BackfillCoverage:
    """One instrument's history, [first_ts, end), against the lookback asked, [start, end)."""

    inst_id: str
    asked_days: float
    received_days: float
    first_ts: pd.Timestamp | None  # None: not one bar
    short: bool


@dataclass
class IngestReport:
    source: str
    synthetic: bool
    fetched_rows: int
    new_rows: int
    unchanged_rows: int  # re-fetched bars already stored with the same values
    conflicting_rows: int  # stored with other values, quarantined (reject mode fails instead)
    rejected_rows: int
    requests: int
    fingerprint: dict[str, Any]
    validation: dict[str, int] = field(default_factory=dict)
    stored_sources: list[str] = field(default_factory=list)
    # Per instrument backfilled for the first time this run (demo, blofin; a file has no
    # lookback): the days received against the days asked.
    backfill: dict[str, BackfillCoverage] = field(default_factory=dict)


@dataclass
class FetchedBatch:
    """The raw batch, what it cost, and the window each instrument was fetched over."""

    raw: pd.DataFrame
    requests: int
    windows: dict[str, tuple[pd.Timestamp, pd.Timestamp]]  # a file source has none


class RateLimitedRun(RuntimeError):
    """BloFin suspended this IP mid-run (429 / 403): what was fetched, and that none of it was
    stored. ``error`` is the client's BlofinRateLimited."""

    def __init__(self, message: str, error: BlofinRateLimited) -> None:
        super().__init__(message)
        self.error = error


def lookback_window(
    settings: MarketSettings, now: pd.Timestamp
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) of a first backfill at ``now``: BLOFIN_LOOKBACK_DAYS back, floored to the
    bar grid, up to and including the newest *closed* bar."""
    bar = settings.bar_delta()
    end = latest_closed_bar_open(now, settings.bar) + bar
    return (now - pd.Timedelta(days=settings.lookback_days)).floor(bar), end


def fetch_window(
    settings: MarketSettings, latest: dict[str, pd.Timestamp], now: pd.Timestamp
) -> dict[str, tuple[pd.Timestamp, pd.Timestamp]]:
    """Per instrument [start, end): from just before the newest stored bar (or the lookback
    start on a first backfill) up to and including the newest *closed* bar."""
    bar = settings.bar_delta()
    lookback_start, end = lookback_window(settings, now)
    return {
        inst_id: (
            latest[inst_id] - OVERLAP_BARS * bar if inst_id in latest else lookback_start,
            end,
        )
        for inst_id in settings.instrument_list()
    }


def history_coverage(
    inst_id: str,
    first_ts: pd.Timestamp | None,
    window: tuple[pd.Timestamp, pd.Timestamp],
    bar: pd.Timedelta,
) -> BackfillCoverage:
    """Days of history from ``first_ts`` to the window's end against the window's days."""
    start, end = window
    received = 0.0 if first_ts is None else max((end - first_ts) / DAY, 0.0)
    short = first_ts is None or first_ts > start + BACKFILL_SLACK_BARS * bar
    return BackfillCoverage(
        inst_id, round((end - start) / DAY, 4), round(received, 4), first_ts, short
    )


def stored_coverage(
    con: duckdb.DuckDBPyConnection, settings: MarketSettings
) -> dict[str, BackfillCoverage]:
    """Each configured instrument's *stored* history against the lookback window ending now.

    What the backfill_covered check reads: the candles themselves are the only state needed, so
    the check gives the same answer after the run that fetched or run alone later. As the clock
    moves on, a young listing's warning clears once it has the full lookback stored.
    """
    window = lookback_window(settings, settings.now())
    first: dict[str, pd.Timestamp] = {}
    if table_exists(con, "candles"):  # storage.candles has latest_candle_ts, not this one yet
        rows = con.execute("SELECT inst_id, min(ts) FROM candles GROUP BY inst_id").fetchall()
        first = {inst_id: as_utc(ts) for inst_id, ts in rows}
    bar = settings.bar_delta()
    return {i: history_coverage(i, first.get(i), window, bar) for i in settings.instrument_list()}


def describe_coverage(
    coverage: dict[str, BackfillCoverage], lookback_days: int, what: str, why: str
) -> str:
    """One line: every instrument covered, or which fall short, by how much, and why they may."""
    short = [c for c in coverage.values() if c.short]
    if not short:
        covered = f"covers BLOFIN_LOOKBACK_DAYS={lookback_days}"
        return f"{what} {covered} for all {len(coverage)} instruments"
    details = "; ".join(
        f"{c.inst_id} {c.received_days:g} of {c.asked_days:g} days"
        + (f" (first bar {c.first_ts.isoformat()})" if c.first_ts is not None else " (no bars)")
        for c in short
    )
    return (
        f"{what} shorter than BLOFIN_LOOKBACK_DAYS={lookback_days} for {len(short)} of "
        f"{len(coverage)} instruments: {details}. {why}"
    )


def coverage_metadata(coverage: dict[str, BackfillCoverage]) -> dict[str, Any]:
    """Plain JSON-able figures per instrument, for run metadata and the check alike."""
    return {
        "days_received": {i: c.received_days for i, c in coverage.items()},
        "days_asked": {i: c.asked_days for i, c in coverage.items()},
        "first_ts": {
            i: None if c.first_ts is None else c.first_ts.isoformat() for i, c in coverage.items()
        },
        "short": sorted(i for i, c in coverage.items() if c.short),
    }


def rate_limited_run(
    error: BlofinRateLimited,
    fetched: dict[str, int],
    pending: list[str],
    never_stored: list[str],
    begun: list[str] | None = None,
) -> RateLimitedRun:
    """The client's error, plus what it means for this run's candles and the next run's.
    ``begun``: instruments of ``pending`` that had sent requests when the ban stopped them."""
    done = ", ".join(f"{i} ({rows} bars)" for i, rows in fetched.items()) or "none"
    part_way = f" (begun, stopped part-way: {', '.join(begun)})" if begun else ""
    restart = f" (none stored yet for {', '.join(never_stored)}: the first backfill starts again)"
    return RateLimitedRun(
        f"{error}. The run stopped there and stored nothing: candles are stored only after "
        "every instrument is fetched and validated, in one transaction, so the bars already "
        f"fetched were discarded. Fetched and discarded: {done}; not fetched: "
        f"{', '.join(pending)}{part_way}. The ban lasts minutes (an hour after 1,500 requests "
        "in 5 minutes); a run inside it stops the same way, harmlessly. The next hourly run "
        "resumes each instrument from its newest stored bar" + (restart if never_stored else ""),
        error,
    )


def fetch_blofin(
    settings: MarketSettings,
    windows: dict[str, tuple[pd.Timestamp, pd.Timestamp]],
    latest: dict[str, pd.Timestamp],
    config: FetchConfig | None = None,
) -> dict[str, tuple[pd.DataFrame, FetchReport]]:
    """Every window from BloFin, several instruments at once. A ban stops them all and becomes
    RateLimitedRun (what was fetched and discarded); any other failure is raised as the
    instrument's own error, naming it and its request."""
    try:
        return fetch_instruments(settings.api_url, windows, settings.bar, config=config)
    except BatchFailed as failed:
        error = failed.error
        if not isinstance(error, BlofinRateLimited):
            raise error from None
        pending = [i for i in windows if i not in failed.fetched]
        never_stored = [i for i in windows if i not in latest]
        raise rate_limited_run(
            error, failed.fetched, pending, never_stored, failed.begun
        ) from error


def fetch_raw(
    settings: MarketSettings,
    latest: dict[str, pd.Timestamp],
    now: pd.Timestamp,
    fetch: FetchConfig | None = None,
) -> FetchedBatch:
    """The raw batch from the configured source, the requests it cost and its windows;
    ``fetch``: how BloFin is fetched (workers, budget), BloFin's limits by default."""
    if settings.source == "file":
        return FetchedBatch(read_candles_file(settings.candles_file), 0, {})
    windows = {k: w for k, w in fetch_window(settings, latest, now).items() if w[0] < w[1]}
    frames: list[pd.DataFrame] = []
    requests = 0
    if settings.source == "blofin":
        for frame, report in fetch_blofin(settings, windows, latest, fetch).values():
            frames.append(frame)
            requests += report.requests
    else:  # the demo market is computed locally: no HTTP session is opened for it
        for inst_id, (start, end) in windows.items():
            frame = demo_candles([inst_id], settings.bar, start, end)
            frame["origin"] = f"demo market {inst_id} {start.isoformat()}..{end.isoformat()}"
            frames.append(frame)
    if not frames:
        return FetchedBatch(pd.DataFrame(columns=[*CANDLE_COLUMNS, "origin"]), requests, windows)
    return FetchedBatch(pd.concat(frames, ignore_index=True), requests, windows)


def first_bars(clean: pd.DataFrame) -> dict[str, pd.Timestamp]:
    """Each instrument's first bar in a validated batch, which is sorted by (inst_id, ts): the
    first row of each instrument's run, found in one pass without hashing every row."""
    ids = clean["inst_id"].to_numpy()
    if len(ids) == 0:
        return {}
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ts = clean["ts"].iloc[starts]
    return {str(inst): as_utc(stamp) for inst, stamp in zip(ids[starts], ts, strict=True)}


def ingest_candles(
    settings: MarketSettings, db: DuckDBFile, *, fetch: FetchConfig | None = None
) -> IngestReport:
    """One incremental ingestion: all instruments validated, then stored together or not at
    all. ``fetch``: workers and budget for BloFin (a test scales the budget down)."""
    now = settings.now()
    with db.connect() as con:
        warehouse.check_identity(con, bar=settings.bar, source=settings.source)
        warehouse.check_clock(con, now=now, bar=settings.bar_delta(), as_of=settings.as_of)
        candles.ensure_schema(con)
        latest = candles.latest_candle_ts(con)
    batch = fetch_raw(settings, latest, now, fetch)
    validated = validate_candles(
        batch.raw,
        bar=settings.bar,
        now=now,
        instruments=settings.instrument_list(),
        on_bad_rows=settings.on_bad_rows,
        allow_empty=bool(latest),
        source_label=settings.source,
    )
    # The raw batch is not needed past validation: a first backfill of the whole market is
    # millions of rows, which would otherwise stay in memory through the insert.
    fetched_rows, requests, windows = len(batch.raw), batch.requests, batch.windows
    del batch
    never_stored = sorted(set(settings.instrument_list()) - set(latest))
    first_ts = first_bars(validated.clean)
    empty = [i for i in never_stored if i not in first_ts]
    if empty:
        raise ValueError(
            f"{settings.source} source: no candles for {empty} on their first backfill "
            f"({len(validated.clean)} clean rows for the other instruments); nothing stored"
        )
    backfill = {
        i: history_coverage(i, first_ts[i], windows[i], settings.bar_delta())
        for i in never_stored
        if i in windows
    }
    with db.connect() as con:
        inserted = candles.insert_new_candles(
            con,
            validated.clean,
            source=settings.source,
            bar=settings.bar,
            on_bad_rows=settings.on_bad_rows,
            rejected=validated.rejected,
        )
        fingerprint = fingerprints.whole_table_fingerprint(con)
        stored_sources = candles.candle_sources(con)
    return IngestReport(
        source=settings.source,
        synthetic=settings.source == "demo",
        fetched_rows=fetched_rows,
        new_rows=inserted.new_rows,
        unchanged_rows=inserted.unchanged_rows,
        conflicting_rows=inserted.conflicting_rows,
        rejected_rows=len(validated.rejected),
        requests=requests,
        fingerprint=fingerprint,
        validation=dict(validated.stats),
        stored_sources=stored_sources,
        backfill=backfill,
    )
