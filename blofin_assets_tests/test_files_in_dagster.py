"""CSV and Parquet files through the real `hourly_training` job into a temp DuckDB. Every test
checks what `candles` holds afterwards; failing runs must leave it exactly as it was."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from dagster import (
    DagsterInstance,
)

from blofin_assets_tests.conftest import Project
from blofin_assets_tests.fake_blofin import (
    random_walk_candles,
)
from blofin_assets_tests.in_dagster import (
    BAR,
    CANDLE_FIELDS,
    DAY_END,
    EMPTY_STATE,
    INSTRUMENTS,
    TRAINED_NAMES,
    assert_never_synthetic,
    assert_same_candles,
    failure_text,
    metadata,
    ms,
    results_rows,
    run,
    stored,
    table_state,
    use_file,
)


# ---- file source -----------------------------------------------------------------------------
def write_candles(frame: pd.DataFrame, path: Path, layout: str) -> Path:
    """Write contract candles as a generic CSV (ISO ts), Parquet (typed ts) or BloFin CSV."""
    if layout == "generic_csv":
        out = frame[CANDLE_FIELDS].copy()
        out["ts"] = out["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        out.to_csv(path, index=False)
    elif layout == "parquet":
        frame[CANDLE_FIELDS].to_parquet(path, index=False)
    else:
        out = pd.DataFrame(
            {
                "instId": frame["inst_id"],
                "ts": frame["ts"].astype("int64") // 1_000_000,
                "open": frame["open"],
                "high": frame["high"],
                "low": frame["low"],
                "close": frame["close"],
                "vol": (frame["volume"] / 0.01).round(6),  # contracts
                "volCurrency": frame["volume"],
                "volCurrencyQuote": (frame["volume"] * frame["close"]).round(4),
                "confirm": "1",
            }
        )
        open_bar = out.iloc[[-1]].assign(ts=ms(DAY_END), confirm="0")  # exported still open
        pd.concat([out, open_bar], ignore_index=True).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("layout", "name"),
    [
        ("generic_csv", "candles.csv"),
        ("parquet", "candles.parquet"),
        ("blofin", "blofin_export.csv"),
    ],
)
def test_a_clean_file_loads_and_a_rerun_adds_nothing(
    project: Project, instance: DagsterInstance, tmp_path: Path, layout: str, name: str
) -> None:
    """Generic CSV (ISO ts), Parquet and BloFin-layout CSV load exactly; a rerun adds nothing."""
    day = random_walk_candles(INSTRUMENTS, end=DAY_END, periods=1440, seed=3)
    use_file(project, write_candles(day, tmp_path / name, layout))

    result = run(project, instance)
    assert result.success
    meta = metadata(result)
    assert (meta["source"], meta["synthetic"]) == ("file", False)
    assert "SYNTHETIC" not in meta["data_label"].upper()
    assert meta["new_rows"] == meta["fetched_rows"] == len(day)
    assert meta["rejected_rows"] == 0 and meta["requests"] == 0
    frame = stored(project)
    assert_same_candles(frame, day)  # volume is volCurrency for the BloFin layout
    assert frame["ts"].max() < DAY_END  # BloFin layout: the confirm=0 row is not stored
    assert_never_synthetic(project, "file")

    state = table_state(project)
    result = run(project, instance)
    assert result.success
    assert metadata(result)["new_rows"] == 0
    assert table_state(project) == state


def test_whole_graph_trains_from_a_parquet_file(
    project: Project, instance: DagsterInstance, tmp_path: Path
) -> None:
    """Three days from a Parquet file are enough for the whole graph: six result rows
    (the five and the ensemble)."""
    history = random_walk_candles(INSTRUMENTS, end=DAY_END, periods=3 * 1440, seed=21)
    use_file(project, write_candles(history, tmp_path / "history.parquet", "parquet"))
    project.set_env(BLOFIN_TRAINING_DAYS="1")
    result = run(project, instance, graph=True)
    assert result.success
    assert metadata(result)["new_rows"] == len(history)
    assert [row[0] for row in results_rows(project)] == TRAINED_NAMES
    assert_never_synthetic(project, "file")


def test_an_empty_file_on_a_first_load_is_an_error(
    project: Project, instance: DagsterInstance, tmp_path: Path
) -> None:
    """A header-only file on a first load fails the run."""
    path = tmp_path / "empty.csv"
    path.write_text(",".join(CANDLE_FIELDS) + "\n")
    use_file(project, path)
    text = failure_text(run(project, instance))
    assert "file: empty batch: 0 candle rows" in text
    assert table_state(project) == EMPTY_STATE


def bad_hour_file(tmp_path: Path) -> tuple[Path, dict[int, str]]:
    """The hour after DAY_END as a generic CSV with four bad rows; returns the path and each
    bad row's 1-based data row number with the text its rejection reason must contain."""
    hour = random_walk_candles(INSTRUMENTS, end=DAY_END + 60 * BAR, periods=60, seed=4)
    rows = hour[CANDLE_FIELDS].astype(object)
    rows["ts"] = hour["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    btc_10 = int(rows.index[(rows["inst_id"] == "BTC-USDT")][10])
    eth_20 = int(rows.index[(rows["inst_id"] == "ETH-USDT")][20])
    rows.loc[btc_10, "high"] = float(hour.loc[btc_10, "low"]) * 0.9
    rows.loc[eth_20, "close"] = "n/a"
    unknown = rows.iloc[[0]].assign(inst_id="DOGE-USDT")
    future = rows.iloc[[1]].assign(ts="2026-11-20T12:05:00Z")  # after BLOFIN_AS_OF
    rows = pd.concat([rows, unknown, future], ignore_index=True)
    path = tmp_path / "bad_hour.csv"
    rows.to_csv(path, index=False)
    n = len(rows)
    return path, {
        btc_10 + 1: "high < low",
        eth_20 + 1: "close is not a number",
        n - 1: "not in the instrument list",
        n: "bar not closed",
    }


def test_bad_file_rows_reject_the_whole_batch_naming_file_and_rows(
    project: Project, instance: DagsterInstance, tmp_path: Path
) -> None:
    """Default reject mode: the error names file, rows, reasons and counts; candles unchanged."""
    day = random_walk_candles(INSTRUMENTS, end=DAY_END, periods=1440, seed=3)
    use_file(project, write_candles(day, tmp_path / "day.csv", "generic_csv"))
    assert run(project, instance).success
    state = table_state(project)
    path, bad = bad_hour_file(tmp_path)
    use_file(project, path)

    text = failure_text(run(project, instance, graph=True))
    assert f"file: 4 of {2 * 60 + 2} candle rows rejected" in text
    for reason in ("unknown_instrument", "non_numeric", "inconsistent_ohlc", "unclosed_bar"):
        assert f"{reason}: 1" in text
    for row, reason in bad.items():
        assert f"bad_hour.csv row {row}: " in text
        line = next(x for x in text.splitlines() if f"bad_hour.csv row {row}: " in x)
        assert reason in line
    assert table_state(project) == state
    assert table_state(project, "candles_rejected") == EMPTY_STATE


def test_quarantine_loads_the_good_file_rows_and_keeps_the_bad_ones_with_reasons(
    project: Project, instance: DagsterInstance, tmp_path: Path
) -> None:
    """Quarantine mode: good rows loaded, bad rows in candles_rejected with their reasons."""
    path, bad = bad_hour_file(tmp_path)
    use_file(project, path)
    project.set_env(BLOFIN_ON_BAD_ROWS="quarantine")

    result = run(project, instance)
    assert result.success, failure_text(result)
    meta = metadata(result)
    assert meta["rejected_rows"] == len(bad) == 4
    assert meta["new_rows"] == 2 * 60 - 2
    assert meta["validation"]["rows_rejected"] == 4
    assert meta["validation"]["rejected_unknown_instrument"] == 1
    assert meta["validation"]["rejected_unclosed_bar"] == 1
    frame = stored(project)
    assert len(frame) == 2 * 60 - 2
    assert set(frame["inst_id"]) == set(INSTRUMENTS)
    assert frame["ts"].max() == DAY_END + 59 * BAR  # the 12:05 future bar is not stored
    rejected = project.query("SELECT origin, reason, source FROM candles_rejected ORDER BY origin")
    assert {origin: reason for origin, reason, _ in rejected}.keys() == {
        f"bad_hour.csv row {row}" for row in bad
    }
    for origin, reason, source in rejected:
        assert source == "file"
        assert bad[int(origin.rsplit(" ", 1)[1])] in reason

    # Importing the same file again quarantines nothing twice and adds no candle.
    again = run(project, instance)
    assert again.success, failure_text(again)
    assert metadata(again)["new_rows"] == 0
    assert project.query("SELECT count(*) FROM candles_rejected")[0][0] == len(bad)


def test_an_instrument_missing_from_its_first_backfill_fails_the_run(
    project: Project, instance: DagsterInstance, tmp_path: Path
) -> None:
    """A configured instrument with no candles at all is an error, not a silent gap."""
    path, _ = bad_hour_file(tmp_path)
    use_file(project, path)
    project.set_env(
        BLOFIN_ON_BAD_ROWS="quarantine", BLOFIN_INSTRUMENTS=",".join([*INSTRUMENTS, "XRP-USDT"])
    )
    result = run(project, instance)
    assert not result.success
    assert "no candles for ['XRP-USDT'] on their first backfill" in failure_text(result)
    assert project.query("SELECT count(*) FROM candles")[0][0] == 0
