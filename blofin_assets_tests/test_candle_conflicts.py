"""No incoming candle is dropped without a word: one already stored with the same values (the
overlap every incremental fetch re-reads) is counted as unchanged, one stored with other values
fails the insert (naming how many, with examples) or, quarantined, is set aside with why."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterInstance

from blofin_assets.market.sources.demo import demo_candles
from blofin_assets.storage.candle_conflicts import CandleConflictError
from blofin_assets.storage.candles import CandleInsert, insert_new_candles
from blofin_assets.storage.connection import connect
from blofin_assets_tests.conftest import Project
from blofin_assets_tests.fake_blofin import random_walk_candles
from blofin_assets_tests.in_dagster import (
    BAR,
    CANDLE_FIELDS,
    DAY_END,
    EMPTY_STATE,
    INSTRUMENTS,
    failure_text,
    metadata,
    run,
    table_state,
    use_file,
)

END = pd.Timestamp("2026-11-20T00:00", tz="UTC")
HOUR = pd.Timedelta(hours=1)


def market(start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    return demo_candles(["BTC-USDT", "ETH-USDT"], "1m", start, end)


def stored_frame(path: Path, table: str = "candles") -> list[tuple]:
    with connect(path, read_only=True) as con:
        return con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()


def insert(path: Path, frame: pd.DataFrame, on_bad_rows: str = "reject") -> CandleInsert:
    with connect(path) as con:
        return insert_new_candles(con, frame, source="blofin", bar="1m", on_bad_rows=on_bad_rows)


def with_changed_bars(frame: pd.DataFrame, count: int) -> pd.DataFrame:
    """``frame`` with the close of ``count`` BTC bars (every 10th) raised by 1 %."""
    changed = frame.copy()
    rows = changed.index[changed["inst_id"] == "BTC-USDT"][: 10 * count : 10]
    changed.loc[rows, "close"] = changed.loc[rows, "high"] * 1.01
    changed.loc[rows, "high"] = changed.loc[rows, "close"]
    return changed


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    """Two instruments x six hours of 1m bars, stored by BloFin."""
    path = tmp_path / "w.duckdb"
    insert(path, market(END - 6 * HOUR, END))
    return path


def test_the_overlap_re_fetch_is_a_counted_no_op(warehouse: Path) -> None:
    before = stored_frame(warehouse)
    again = market(END - 6 * HOUR, END + HOUR)  # everything stored, and one hour more
    assert insert(warehouse, again) == CandleInsert(
        new_rows=2 * 60, unchanged_rows=2 * 6 * 60, conflicting_rows=0
    )
    after = stored_frame(warehouse)
    assert set(before) <= set(after) and len(after) == len(before) + 2 * 60


def test_a_conflict_fails_naming_how_many_with_examples_and_stores_nothing(
    warehouse: Path,
) -> None:
    before = {table: stored_frame(warehouse, table) for table in ("candles", "candle_fingerprints")}
    incoming = with_changed_bars(market(END - 2 * HOUR, END + HOUR), count=7)
    with pytest.raises(CandleConflictError) as raised:
        insert(warehouse, incoming)
    text = str(raised.value)
    assert f"blofin: 7 of {len(incoming)} incoming candles conflict with stored candles" in text
    assert f"({2 * 2 * 60 - 7} others are stored with the same values)" in text
    assert "nothing was stored" in text and "... and 2 more" in text
    first = incoming.loc[incoming["inst_id"] == "BTC-USDT"].iloc[0]
    stored_close = (
        market(END - 6 * HOUR, END)
        .set_index(["inst_id", "ts"])
        .loc[("BTC-USDT", first["ts"]), "close"]
    )
    assert (
        f"BTC-USDT {first['ts'].isoformat()} (stored from blofin): high "
        in text.split("stored -> incoming):\n  ")[1]
    )
    assert f"close {float(stored_close)!r} -> {float(first['close'])!r}" in text
    assert "BLOFIN_ON_BAD_ROWS=quarantine" in text and "another BLOFIN_DUCKDB_PATH" in text
    # The new hour was not stored either: the batch is all or nothing.
    for table, rows in before.items():
        assert stored_frame(warehouse, table) == rows
    assert stored_frame(warehouse, "candles_rejected") == []


def test_quarantine_keeps_the_stored_candles_and_sets_the_conflicts_aside(
    warehouse: Path,
) -> None:
    before = stored_frame(warehouse)
    incoming = with_changed_bars(market(END - 2 * HOUR, END + HOUR), count=3)
    result = insert(warehouse, incoming, on_bad_rows="quarantine")
    assert result == CandleInsert(
        new_rows=2 * 60, unchanged_rows=2 * 2 * 60 - 3, conflicting_rows=3
    )
    assert set(before) <= set(stored_frame(warehouse))  # no stored candle was rewritten
    rejected = stored_frame(warehouse, "candles_rejected")
    assert len(rejected) == 3
    for inst_id, _ts, raw, origin, reason, source, _at in rejected:
        assert (inst_id, origin, source) == ("BTC-USDT", "blofin", "blofin")
        assert reason.startswith("conflicts_with_stored: stored candle (from blofin) differs")
        assert " close " in reason and raw.startswith("open=")
    # The same batch again: nothing new, and nothing quarantined twice.
    again = insert(warehouse, incoming, on_bad_rows="quarantine")
    assert again == CandleInsert(new_rows=0, unchanged_rows=2 * 3 * 60 - 3, conflicting_rows=3)
    assert len(stored_frame(warehouse, "candles_rejected")) == 3


def test_an_optional_volume_counts_only_where_both_sides_have_it(tmp_path: Path) -> None:
    """A file without BloFin's extra volumes describes the same candle; a different extra
    volume where both have one is a conflict."""
    path = tmp_path / "w.duckdb"
    bars = market(END - HOUR, END).assign(volume_currency=1.0, volume_quote=2.0)
    insert(path, bars)
    plain = bars.drop(columns=["volume_currency", "volume_quote"])
    assert insert(path, plain) == CandleInsert(0, len(bars), 0)
    assert insert(path, bars.assign(volume_quote=float("nan"))) == CandleInsert(0, len(bars), 0)
    with pytest.raises(CandleConflictError) as raised:
        insert(path, bars.assign(volume_quote=3.0))
    assert f"{len(bars)} of {len(bars)} incoming candles conflict" in str(raised.value)
    assert "(stored from blofin): volume_quote 2.0 -> 3.0\n" in str(raised.value)


# ---- in Dagster ------------------------------------------------------------------------------
def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    out = frame[CANDLE_FIELDS].copy()
    out["ts"] = out["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.to_csv(path, index=False)
    return path


def test_a_csv_disagreeing_with_the_stored_candles_fails_the_run_or_is_quarantined(
    project: Project, instance: DagsterInstance, tmp_path: Path
) -> None:
    day = random_walk_candles(INSTRUMENTS, end=DAY_END, periods=1440, seed=3)
    use_file(project, write_csv(day, tmp_path / "day.csv"))
    first = run(project, instance)
    assert first.success
    assert metadata(first)["unchanged_rows"] == metadata(first)["conflicting_rows"] == 0
    state = table_state(project)

    # The same day again (one bar revised) and the hour after it.
    hour = random_walk_candles(INSTRUMENTS, end=DAY_END + 60 * BAR, periods=60, seed=4)
    revised = pd.concat([with_changed_bars(day, count=1), hour], ignore_index=True)
    use_file(project, write_csv(revised, tmp_path / "revised.csv"))
    text = failure_text(run(project, instance, graph=True))
    assert f"file: 1 of {len(revised)} incoming candles conflict with stored candles" in text
    assert f"({len(day) - 1} others are stored with the same values)" in text
    assert "BTC-USDT 2026-11-19T00:00:00+00:00 (stored from file): high " in text
    assert table_state(project) == state
    assert table_state(project, "candles_rejected") == EMPTY_STATE

    project.set_env(BLOFIN_ON_BAD_ROWS="quarantine")
    result = run(project, instance)
    assert result.success, failure_text(result)
    meta = metadata(result)
    assert (meta["new_rows"], meta["unchanged_rows"], meta["conflicting_rows"]) == (
        len(hour),
        len(day) - 1,
        1,
    )
    (reason,) = project.query("SELECT reason FROM candles_rejected")[0]
    assert reason.startswith("conflicts_with_stored: stored candle (from file) differs")
    stored_close = project.query(
        "SELECT close FROM candles WHERE inst_id = 'BTC-USDT' AND ts = '2026-11-19 00:00:00+00'"
    )[0][0]
    assert stored_close == day.loc[0, "close"]  # the stored candle stays as it was
