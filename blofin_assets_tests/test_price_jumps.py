"""price_jumps: a bar whose close moved far outside its instrument's history is named (the
instrument, the bar, the move), on candles stored by the real insert; the demo market and a
volatile coin's ordinary days are not; and through Dagster, on the real definitions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from dagster import AssetCheckSeverity, AssetSelection, DagsterInstance

from blofin_assets.market.sources.demo import demo_candles
from blofin_assets.quality.candles import JUMP_FLOOR, candles_price_jumps
from blofin_assets.storage.candles import insert_new_candles
from blofin_assets.storage.connection import connect
from blofin_assets_tests.conftest import FROZEN_NOW, Project
from blofin_assets_tests.in_dagster import CANDLE_FIELDS
from blofin_assets_tests.markets import jump_market

MINUTE = pd.Timedelta(minutes=1)
NOW = pd.Timestamp(FROZEN_NOW).floor(MINUTE)
INSTRUMENTS = ["BTC-USDT", "ETH-USDT", "SOL-USDT"]


def stored(path: Path, candles: pd.DataFrame, bar: str = "1m"):
    with connect(path) as con:
        insert_new_candles(con, candles, source="file", bar=bar)


def jump_bar(market: pd.DataFrame) -> tuple[pd.Timestamp, float]:
    """The planted bar of jump_market (SOL, +50 % inside one bar) and its close-to-close move."""
    sol = market[market["inst_id"] == "SOL-USDT"].reset_index(drop=True)
    moves = np.expm1(np.diff(np.log(sol["close"].to_numpy())))
    at = int(np.argmax(np.abs(moves))) + 1
    return sol["ts"].iloc[at], float(moves[at - 1])


def test_the_demo_market_has_no_jump(tmp_path: Path) -> None:
    """Three instruments x 14 days of demo bars, all stored by one ingest: all are looked at."""
    path = tmp_path / "w.duckdb"
    with connect(path) as con:
        candles = demo_candles(INSTRUMENTS, "1m", NOW - pd.Timedelta(days=14), NOW)
        insert_new_candles(con, candles, source="demo", bar="1m")
        verdict = candles_price_jumps(con, MINUTE)
    assert verdict.passed, verdict.description
    assert verdict.metadata["bars_checked"] == len(candles) - len(INSTRUMENTS)
    assert 0.0 < verdict.metadata["largest_abs_log_return"] < JUMP_FLOOR / 5
    assert verdict.description.startswith("no 1-bar move far outside")


def test_a_planted_fifty_percent_bar_is_named_with_its_instrument_and_move(tmp_path: Path) -> None:
    market = jump_market(3 * 1440)
    at, move = jump_bar(market)
    assert 0.45 < move < 0.55
    path = tmp_path / "w.duckdb"
    stored(path, market)
    with connect(path, read_only=True) as con:
        verdict = candles_price_jumps(con, MINUTE)
    assert not verdict.passed and verdict.severity == "WARN"
    assert verdict.metadata["jumps"] == 1
    (line,) = verdict.metadata["listed"]
    assert line.startswith(f"SOL-USDT bar {at.isoformat()}: {move:+.1%} (close ")
    assert f"at {(at - MINUTE).isoformat()} -> " in line
    assert line in verdict.description
    assert verdict.metadata["per_instrument"]["SOL-USDT"]["jumps"] == 1
    assert verdict.metadata["per_instrument"]["BTC-USDT"]["jumps"] == 0


def test_a_volatile_coins_big_days_are_its_history_not_a_jump(tmp_path: Path) -> None:
    """Daily bars of a coin whose days move 8 % (sd): dozens of days beyond the 0.2 floor, none
    beyond ten of its robust standard deviations; a 3x day is."""
    rng = np.random.default_rng(2)
    days = 1000
    close = 0.5 * np.exp(np.cumsum(rng.normal(0.0, 0.08, days)))
    close[700:] *= 3.0
    ts = pd.date_range(end=NOW.floor("D") - pd.Timedelta(days=1), periods=days, freq="D")
    open_ = np.r_[close[0], close[:-1]]
    frame = pd.DataFrame(
        {
            "inst_id": "MEME-USDT",
            "ts": ts,
            "open": open_,
            "high": np.maximum(open_, close),
            "low": np.minimum(open_, close),
            "close": close,
            "volume": 1.0,
        }
    )
    returns = np.abs(np.diff(np.log(close)))
    assert (returns > JUMP_FLOOR).sum() > 10
    path = tmp_path / "w.duckdb"
    stored(path, frame, bar="1D")
    with connect(path, read_only=True) as con:
        verdict = candles_price_jumps(con, pd.Timedelta(days=1))
    assert verdict.metadata["jumps"] == 1, verdict.description
    assert f"MEME-USDT bar {ts[700].isoformat()}: +" in verdict.description
    assert verdict.metadata["per_instrument"]["MEME-USDT"]["threshold_log_return"] > 0.6


def test_only_bars_stored_by_the_last_days_ingests_are_looked_at(tmp_path: Path) -> None:
    """A jump stored two days of ingests ago was reported then; the hour stored now is clean."""
    market = jump_market(3 * 1440)
    path = tmp_path / "w.duckdb"
    stored(path, market)
    with connect(path) as con:  # the earlier ingest, as it would read two days on
        con.execute("UPDATE candles SET ingested_at = ingested_at - INTERVAL 2 DAY")
    newest = market["ts"].max()
    hour = market[market["ts"] > newest - pd.Timedelta(hours=1)].copy()
    hour["ts"] += pd.Timedelta(hours=1)  # the next hour of bars, continuing each close
    last_close = market[market["ts"] == newest].set_index("inst_id")["close"]
    scale = hour["inst_id"].map(last_close) / hour.groupby("inst_id")["open"].transform("first")
    for column in ("open", "high", "low", "close"):
        hour[column] *= scale
    stored(path, hour)
    with connect(path, read_only=True) as con:
        verdict = candles_price_jumps(con, MINUTE)
    assert verdict.passed, verdict.description
    assert verdict.metadata["bars_checked"] == len(hour)


# ---- through Dagster ---------------------------------------------------------------------------
def test_in_dagster_a_planted_jump_warns_and_the_demo_passes(
    project: Project, instance: DagsterInstance, tmp_path: Path
) -> None:
    project.set_env(BLOFIN_LOOKBACK_DAYS="14")
    demo = project.materialize(instance, AssetSelection.assets("candles"))
    (check,) = [e for e in demo.get_asset_check_evaluations() if e.check_name == "price_jumps"]
    assert check.passed, check.description
    (stored_bars,) = project.query("SELECT count(*) FROM candles")[0]
    assert stored_bars >= 3 * 14 * 1440
    assert check.metadata["bars_checked"].value == stored_bars - 3  # each one's first has no move

    market = jump_market(3 * 1440)
    market["ts"] += NOW - market["ts"].max()  # the last bar closed at the frozen clock
    at, move = jump_bar(market)
    path = tmp_path / "jump.parquet"
    market[CANDLE_FIELDS].to_parquet(path, index=False)
    project.set_env(
        BLOFIN_SOURCE="file",
        BLOFIN_CANDLES_FILE=str(path),
        BLOFIN_DUCKDB_PATH=str(tmp_path / "file.duckdb"),
        BLOFIN_AS_OF=(NOW + MINUTE + pd.Timedelta(seconds=1)).isoformat(),
    )
    result = project.materialize(instance, AssetSelection.assets("candles"))
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "price_jumps"]
    assert not check.passed and check.severity == AssetCheckSeverity.WARN
    assert f"SOL-USDT bar {at.isoformat()}: {move:+.1%}" in check.description
    assert check.metadata["jumps"].value == 1
