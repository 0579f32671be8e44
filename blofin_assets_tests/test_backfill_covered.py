"""A first backfill shorter than BLOFIN_LOOKBACK_DAYS is reported, never passed silently: the
candles run's metadata (days received vs asked, per instrument) and the backfill_covered WARN
check, which reads only the stored candles, so it answers the same run alone. FakeBlofin over
real HTTP into a temp DuckDB; the demo and file sources pass it, saying it does not apply."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    DagsterInstance,
    ExecuteInProcessResult,
    materialize,
)

from blofin_assets.defs.assets.candles import candles
from blofin_assets.defs.candle_checks import CANDLE_CHECKS
from blofin_assets_tests.conftest import Project
from blofin_assets_tests.fake_blofin import FakeBlofin, random_walk_candles
from blofin_assets_tests.in_dagster import (
    BACKFILL_START,
    BAR,
    CANDLE_FIELDS,
    DAY_END,
    INSTRUMENTS,
    LOOKBACK_DAYS,
    NOW,
    OPEN_BAR,
    WINDOW_END,
    metadata,
    stored,
    use_blofin,
    use_file,
)

CHECK = AssetCheckKey(AssetKey("candles"), "backfill_covered")
LISTING_BARS = 1440  # ETH "listed" one day before the run: half the two-day lookback


@pytest.fixture
def young_eth() -> Iterator[FakeBlofin]:
    """Three days of BTC, one day of ETH (a listing younger than the lookback)."""
    btc = random_walk_candles(["BTC-USDT"], end=OPEN_BAR, periods=3 * 1440, seed=21)
    eth = random_walk_candles(["ETH-USDT"], end=OPEN_BAR, periods=LISTING_BARS, seed=22)
    with FakeBlofin(pd.concat([btc, eth], ignore_index=True)) as fake:
        yield fake


def run_candles(
    project: Project, instance: DagsterInstance, *, check_only: bool = False
) -> ExecuteInProcessResult:
    """candles and backfill_covered from the real definitions' resources (or the check alone),
    whether or not the code location registers the check yet."""
    selection = AssetSelection.checks(CHECK) if check_only else AssetSelection.all()
    return materialize(
        [candles, *CANDLE_CHECKS],
        selection=selection,
        instance=instance,
        resources=project.defs().resources,
    )


def evaluation(result: ExecuteInProcessResult) -> AssetCheckEvaluation:
    (found,) = [e for e in result.get_asset_check_evaluations() if e.check_name == CHECK.name]
    return found


def test_a_young_listing_is_reported_in_metadata_and_warned_by_the_check(
    project: Project, instance: DagsterInstance, young_eth: FakeBlofin
) -> None:
    use_blofin(project, young_eth)
    result = run_candles(project, instance)
    assert result.success

    eth_first = OPEN_BAR - LISTING_BARS * BAR
    eth_days = round((WINDOW_END - eth_first) / pd.Timedelta(days=1), 4)  # 1441 bars: 1.0007
    meta = metadata(result)
    assert meta["backfill_days_asked"] == {"BTC-USDT": 2.0, "ETH-USDT": 2.0}
    assert meta["backfill_days_received"] == {"BTC-USDT": 2.0, "ETH-USDT": eth_days}
    assert meta["short_backfills"] == ["ETH-USDT"]
    frame = stored(project)  # what was received is stored: nothing invented, nothing dropped
    assert frame.groupby("inst_id")["ts"].min().to_dict() == {
        "BTC-USDT": BACKFILL_START,
        "ETH-USDT": eth_first,
    }

    check = evaluation(result)
    assert check.passed is False and check.severity == AssetCheckSeverity.WARN
    assert check.description.startswith(
        f"stored history shorter than BLOFIN_LOOKBACK_DAYS={LOOKBACK_DAYS} for 1 of 2 "
        f"instruments: ETH-USDT {eth_days:g} of 2 days (first bar {eth_first.isoformat()})"
    )
    assert "a listing younger than the lookback" in check.description
    assert check.metadata["short"].value == ["ETH-USDT"]
    assert check.metadata["days_received"].value == {"BTC-USDT": 2.0, "ETH-USDT": eth_days}


def test_the_check_alone_gives_the_same_answer_and_clears_once_the_lookback_is_stored(
    project: Project, instance: DagsterInstance, young_eth: FakeBlofin
) -> None:
    """No state but the candles: run alone it repeats the warning. A day later the two-day
    window starts where ETH's history does, so the check passes by itself (whether the newest
    bars were fetched meanwhile is the fresh check's business, not this one's)."""
    use_blofin(project, young_eth)
    first = evaluation(run_candles(project, instance))
    alone = evaluation(run_candles(project, instance, check_only=True))
    assert (alone.passed, alone.description) == (False, first.description)

    project.set_env(BLOFIN_AS_OF=(NOW + pd.Timedelta(days=1)).isoformat())
    later = evaluation(run_candles(project, instance, check_only=True))
    assert later.passed is True
    assert later.description == (
        f"stored history covers BLOFIN_LOOKBACK_DAYS={LOOKBACK_DAYS} for all 2 instruments"
    )


def test_a_full_backfill_passes_and_an_unfetched_instrument_does_not(
    project: Project, instance: DagsterInstance, young_eth: FakeBlofin
) -> None:
    """BTC alone is covered; adding SOL to the instruments without a run: no bars, a warning."""
    use_blofin(project, young_eth, ["BTC-USDT"])
    result = run_candles(project, instance)
    assert metadata(result)["short_backfills"] == []
    assert evaluation(result).passed is True

    use_blofin(project, young_eth, ["BTC-USDT", "SOL-USDT"])
    alone = evaluation(run_candles(project, instance, check_only=True))
    assert alone.passed is False
    assert "SOL-USDT 0 of 2 days (no bars)" in alone.description


def test_the_demo_source_passes_saying_the_check_does_not_apply(
    project: Project, instance: DagsterInstance
) -> None:
    result = run_candles(project, instance)  # conftest: the demo market, 3 days, 3 instruments
    assert metadata(result)["backfill_days_received"] == {
        "BTC-USDT": 3.0,
        "ETH-USDT": 3.0,
        "SOL-USDT": 3.0,
    }
    check = evaluation(result)
    assert check.passed is True
    assert check.description.startswith("demo source: ") and "does not apply" in check.description
    assert check.metadata["applies"].value is False


def test_the_file_source_passes_saying_the_check_does_not_apply(
    project: Project, instance: DagsterInstance, tmp_path: Path
) -> None:
    """A file holds what it holds: an hour of bars against a 3-day lookback is no shortfall."""
    hour = random_walk_candles(INSTRUMENTS, end=DAY_END, periods=60, seed=5)
    path = tmp_path / "hour.parquet"
    hour[CANDLE_FIELDS].to_parquet(path, index=False)
    use_file(project, path)
    result = run_candles(project, instance)
    assert metadata(result)["backfill_days_received"] == {}  # no lookback for a file
    check = evaluation(result)
    assert check.passed is True
    assert check.description.startswith("file source: ") and "does not apply" in check.description
