"""Fetch new candles from the configured source, validate them, store them in one transaction.

No source ever falls back to another: a failing source fails the run, and a synthetic source
says so in every report. Before anything is fetched, the run must fit the file: its bar size and
market (storage.warehouse), and a "now" no earlier than the newest stored bar.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from blofin_assets.market.bars import latest_closed_bar_open
from blofin_assets.market.contract import CANDLE_COLUMNS
from blofin_assets.market.settings import MarketSettings
from blofin_assets.market.sources.blofin import BlofinClient
from blofin_assets.market.sources.demo import demo_candles
from blofin_assets.market.sources.files import read_candles_file
from blofin_assets.market.validation.batch import validate_candles
from blofin_assets.storage import candles, fingerprints, warehouse
from blofin_assets.storage.connection import DuckDBFile

# Bars re-fetched before the newest stored one, so a bar missed at the edge of the last fetch
# is picked up. Stored closed bars are never rewritten: a re-fetched bar with the same values
# is counted as unchanged, one with other values is a conflict (storage.candle_conflicts).
OVERLAP_BARS = 5


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


def fetch_window(
    settings: MarketSettings, latest: dict[str, pd.Timestamp], now: pd.Timestamp
) -> dict[str, tuple[pd.Timestamp, pd.Timestamp]]:
    """Per instrument [start, end): from just before the newest stored bar (or the lookback
    start on a first backfill) up to and including the newest *closed* bar."""
    bar = settings.bar_delta()
    end = latest_closed_bar_open(now, settings.bar) + bar
    windows = {}
    for inst_id in settings.instrument_list():
        if inst_id in latest:
            start = latest[inst_id] - OVERLAP_BARS * bar
        else:
            start = (now - pd.Timedelta(days=settings.lookback_days)).floor(bar)
        windows[inst_id] = (start, end)
    return windows


def fetch_raw(
    settings: MarketSettings, latest: dict[str, pd.Timestamp], now: pd.Timestamp
) -> tuple[pd.DataFrame, int]:
    """The raw batch from the configured source and the number of requests it cost."""
    if settings.source == "file":
        return read_candles_file(settings.candles_file), 0
    frames = []
    requests = 0
    # The demo market is computed locally: no HTTP session is opened for it.
    session = BlofinClient(settings.api_url) if settings.source == "blofin" else nullcontext()
    with session as client:
        for inst_id, (start, end) in fetch_window(settings, latest, now).items():
            if start >= end:
                continue
            if client is None:
                frame = demo_candles([inst_id], settings.bar, start, end)
                frame["origin"] = f"demo market {inst_id} {start.isoformat()}..{end.isoformat()}"
            else:
                frame, report = client.fetch_candles(inst_id, settings.bar, start, end)
                requests += report.requests
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*CANDLE_COLUMNS, "origin"]), requests
    return pd.concat(frames, ignore_index=True), requests


def ingest_candles(settings: MarketSettings, db: DuckDBFile) -> IngestReport:
    """One incremental ingestion: all instruments validated, then stored together or not at all."""
    now = settings.now()
    with db.connect() as con:
        warehouse.check_identity(con, bar=settings.bar, source=settings.source)
        warehouse.check_clock(con, now=now, bar=settings.bar_delta(), as_of=settings.as_of)
        candles.ensure_schema(con)
        latest = candles.latest_candle_ts(con)
    raw, requests = fetch_raw(settings, latest, now)
    validated = validate_candles(
        raw,
        bar=settings.bar,
        now=now,
        instruments=settings.instrument_list(),
        on_bad_rows=settings.on_bad_rows,
        allow_empty=bool(latest),
        source_label=settings.source,
    )
    never_stored = sorted(set(settings.instrument_list()) - set(latest))
    empty = [i for i in never_stored if not (validated.clean["inst_id"] == i).any()]
    if empty:
        raise ValueError(
            f"{settings.source} source: no candles for {empty} on their first backfill "
            f"({len(validated.clean)} clean rows for the other instruments); nothing stored"
        )
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
        fetched_rows=len(raw),
        new_rows=inserted.new_rows,
        unchanged_rows=inserted.unchanged_rows,
        conflicting_rows=inserted.conflicting_rows,
        rejected_rows=len(validated.rejected),
        requests=requests,
        fingerprint=fingerprint,
        validation=dict(validated.stats),
        stored_sources=stored_sources,
    )
