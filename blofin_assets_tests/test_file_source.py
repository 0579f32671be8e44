"""read_candles_file: CSV/Parquet layouts and timestamp forms, errors that name the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from blofin_assets.market.contract import CANDLE_COLUMNS
from blofin_assets.market.sources.files import read_candles_file
from blofin_assets.market.validation.batch import validate_candles
from blofin_assets.market.validation.rejections import CandleValidationError
from blofin_assets_tests.fake_blofin import random_walk_candles

END = pd.Timestamp("2024-05-01T00:00:00Z")
NOW = pd.Timestamp("2024-06-01T00:00:00Z")


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return random_walk_candles(["BTC-USDT", "ETH-USDT"], end=END, periods=50, seed=3)[
        CANDLE_COLUMNS
    ]


def validate(raw: pd.DataFrame, mode: str = "reject"):
    return validate_candles(
        raw, bar="1m", now=NOW, instruments=None, on_bad_rows=mode, source_label="file"
    )


def epoch(frame: pd.DataFrame, unit: str) -> pd.Series:
    per = {"ms": 1_000_000, "s": 1_000_000_000}[unit]
    return frame["ts"].astype("int64") // per


def assert_same_candles(result: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        result[CANDLE_COLUMNS].reset_index(drop=True),
        expected[CANDLE_COLUMNS].reset_index(drop=True),
        check_exact=False,
    )


def test_generic_csv_with_iso_timestamps(tmp_path: Path, candles: pd.DataFrame) -> None:
    path = tmp_path / "candles.csv"
    candles.assign(ts=candles["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(path, index=False)
    raw = read_candles_file(path)
    assert list(raw.columns) == [*CANDLE_COLUMNS, "origin"]
    assert str(raw["ts"].dtype) == "datetime64[ns, UTC]"
    assert raw["open"].dtype == np.float64
    assert raw["origin"].iloc[0] == "candles.csv row 1"
    assert raw["origin"].iloc[-1] == "candles.csv row 100"
    assert raw.attrs["rows_read"] == 100 and raw.attrs["layout"] == "generic"
    assert_same_candles(validate(raw).clean, candles)


@pytest.mark.parametrize(
    "form", ["naive", "offset", "space"], ids=["naive_is_utc", "offset", "space_separator"]
)
def test_iso_variants(tmp_path: Path, candles: pd.DataFrame, form: str) -> None:
    if form == "naive":
        ts = candles["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S")
    elif form == "offset":
        ts = candles["ts"].dt.tz_convert("Asia/Hong_Kong").dt.strftime("%Y-%m-%dT%H:%M:%S+08:00")
    else:
        ts = candles["ts"].dt.strftime("%Y-%m-%d %H:%M:%S+00:00")
    path = tmp_path / "iso.csv"
    candles.assign(ts=ts).to_csv(path, index=False)
    assert_same_candles(validate(read_candles_file(path)).clean, candles)


@pytest.mark.parametrize("unit", ["ms", "s"])
def test_generic_csv_with_epoch_timestamps(
    tmp_path: Path, candles: pd.DataFrame, unit: str
) -> None:
    path = tmp_path / f"epoch_{unit}.csv"
    candles.assign(ts=epoch(candles, unit)).to_csv(path, index=False)
    raw = read_candles_file(path)
    assert str(raw["ts"].dtype) == "datetime64[ns, UTC]"
    assert raw["ts"].iloc[0] == candles["ts"].iloc[0]
    assert_same_candles(validate(raw).clean, candles)


def test_gzipped_csv(tmp_path: Path, candles: pd.DataFrame) -> None:
    path = tmp_path / "candles.csv.gz"
    candles.assign(ts=epoch(candles, "ms")).to_csv(path, index=False, compression="gzip")
    assert_same_candles(validate(read_candles_file(path)).clean, candles)


@pytest.mark.parametrize("suffix", [".parquet", ".pq"])
def test_parquet_with_typed_timestamps(tmp_path: Path, candles: pd.DataFrame, suffix: str) -> None:
    path = tmp_path / f"candles{suffix}"
    candles.to_parquet(path, index=False)
    raw = read_candles_file(path)
    assert raw["origin"].iloc[5] == f"candles{suffix} row 6"
    assert_same_candles(validate(raw).clean, candles)


def test_parquet_with_epoch_ms_and_naive_timestamps(tmp_path: Path, candles: pd.DataFrame) -> None:
    millis = tmp_path / "millis.parquet"
    candles.assign(ts=epoch(candles, "ms")).to_parquet(millis, index=False)
    assert_same_candles(validate(read_candles_file(millis)).clean, candles)
    naive = tmp_path / "naive.parquet"
    candles.assign(ts=candles["ts"].dt.tz_localize(None)).to_parquet(naive, index=False)
    assert_same_candles(validate(read_candles_file(naive)).clean, candles)


def test_blofin_layout_drops_unconfirmed_and_takes_base_volume(
    tmp_path: Path, candles: pd.DataFrame
) -> None:
    btc = candles[candles["inst_id"] == "BTC-USDT"].reset_index(drop=True)
    export = pd.DataFrame(
        {
            "instId": btc["inst_id"],
            "ts": epoch(btc, "ms"),
            "open": btc["open"],
            "high": btc["high"],
            "low": btc["low"],
            "close": btc["close"],
            "vol": btc["volume"] * 100,  # contracts (contract value 0.01)
            "volCurrency": btc["volume"],
            "volCurrencyQuote": btc["volume"] * btc["close"],
            "confirm": "1",
        }
    )
    export.loc[20, "confirm"] = "0"  # a bar exported while still open
    path = tmp_path / "blofin_export.csv"
    export.to_csv(path, index=False)

    raw = read_candles_file(path)
    assert raw.attrs["layout"] == "blofin"
    assert raw.attrs["unconfirmed_dropped"] == 1 and raw.attrs["rows_read"] == 50
    assert len(raw) == 49
    assert list(raw.columns) == [*CANDLE_COLUMNS, "volume_currency", "volume_quote", "origin"]
    # row numbers are the file's: the row after the dropped one is still "row 22"
    assert raw["origin"].iloc[20] == "blofin_export.csv row 22"
    clean = validate(raw).clean
    assert_same_candles(clean, btc.drop(index=20))
    assert clean["volume_quote"].iloc[0] == pytest.approx(btc["volume"][0] * btc["close"][0])


def test_a_ts_column_mixing_epoch_units_is_an_error_naming_rows(
    tmp_path: Path, candles: pd.DataFrame
) -> None:
    mixed = candles.assign(ts=epoch(candles, "ms").astype(object))
    mixed.loc[[3, 7], "ts"] = epoch(candles, "s")[[3, 7]]
    path = tmp_path / "mixed.csv"
    mixed.to_csv(path, index=False)
    with pytest.raises(CandleValidationError) as caught:
        read_candles_file(path)
    message = str(caught.value)
    assert message.startswith("mixed.csv: ts column mixes epoch seconds (e.g. row 4, row 8)")
    assert "epoch milliseconds (e.g. row 1, row 2, row 3, row 5, row 6)" in message


def test_missing_column_names_file_found_and_expected(
    tmp_path: Path, candles: pd.DataFrame
) -> None:
    path = tmp_path / "no_volume.csv"
    candles.drop(columns="volume").to_csv(path, index=False)
    with pytest.raises(CandleValidationError) as caught:
        read_candles_file(path)
    message = str(caught.value)
    assert message.startswith("no_volume.csv: missing column(s) ['volume'] for the generic layout")
    assert "found ['inst_id', 'ts', 'open', 'high', 'low', 'close']" in message
    assert "expected generic ['inst_id', 'ts', 'open', 'high', 'low', 'close', 'volume']" in message


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "candles.json"
    path.write_text("[]")
    with pytest.raises(ValueError, match="unsupported file type"):
        read_candles_file(path)


BAD_CSV = """inst_id,ts,open,high,low,close,volume
BTC-USDT,2024-04-30T00:00:00Z,100,101,99,100.5,3
BTC-USDT,2024-04-30T00:01:00Z,100,abc,99,100.5,3
BTC-USDT,2024-04-30T00:02:00Z,100,101,99,,3
BTC-USDT,2024-04-30T00:03:00Z,100,101,99,100.5,3
BTC-USDT,not a time,100,101,99,100.5,3
BTC-USDT,2024-04-30T00:05:00Z,100,101,99,100.5,-2
BTC-USDT,2024-04-30T00:06:00Z,100,101,99,100.5
BTC-USDT,2024-04-30T00:07:00Z,100,101,99,100.5,3
"""


def test_bad_values_reach_validation_with_their_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(BAD_CSV)
    raw = read_candles_file(path)  # the reader does not crash on any of them
    assert len(raw) == 8
    result = validate(raw, mode="quarantine")
    rejected = dict(zip(result.rejected["origin"], result.rejected["reason"], strict=True))
    assert rejected == {
        "bad.csv row 2": "non_numeric: high is not a number",
        "bad.csv row 3": "missing_value: close is empty",
        "bad.csv row 5": "bad_timestamp: ts is not ISO-8601 or epoch s/ms",
        "bad.csv row 6": "negative_volume: volume < 0",
        "bad.csv row 7": "missing_value: volume is empty",
    }
    assert result.rejected["raw"].iloc[0].startswith("inst_id=BTC-USDT, ts=2024-04-30T00:01:00Z")
    assert result.clean["ts"].dt.minute.tolist() == [0, 3, 7]
    with pytest.raises(CandleValidationError, match=r"5 of 8 candle rows rejected") as caught:
        validate(raw)
    assert "bad.csv row 2: non_numeric" in str(caught.value)


def test_row_numbers_stay_right_in_a_large_file(tmp_path: Path) -> None:
    """DuckDB reads in parallel; the numbering must still follow the file."""
    n = 200_000
    stamps = pd.date_range("2023-01-01", periods=n, freq="1min", tz="UTC")
    frame = pd.DataFrame(
        {
            "inst_id": "BTC-USDT",
            "ts": stamps.astype("int64") // 1_000_000,
            "open": 100.0,
            "high": 101.0,
            "low": 99.0,
            "close": 100.5,
            "volume": 1.0,
        }
    )
    frame = frame.astype({"close": object})
    frame.loc[150_000, "close"] = "oops"
    path = tmp_path / "large.csv"
    frame.to_csv(path, index=False)
    raw = read_candles_file(path)
    minutes = (raw["ts"] - stamps[0]) // pd.Timedelta(minutes=1)
    numbers = raw["origin"].str.rsplit(" ", n=1).str[1].astype(int)
    assert (numbers.to_numpy() == minutes.to_numpy() + 1).all()
    rejected = validate(raw, mode="quarantine").rejected
    assert rejected["origin"].tolist() == ["large.csv row 150001"]


def test_a_row_with_extra_fields_is_refused_naming_it(tmp_path: Path) -> None:
    """A thousands separator shifts every later value; that must never load quietly."""
    path = tmp_path / "shifted.csv"
    lines = BAD_CSV.splitlines()[:3]
    lines[2] = "BTC-USDT,2024-04-30T00:01:00Z,1,234.5,1301,99,100.5,3"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CandleValidationError, match=r"shifted.csv: row\(s\) 2 have more fields"):
        read_candles_file(path)


def test_a_row_with_extra_fields_far_into_a_file_is_refused_too(tmp_path: Path) -> None:
    rows = ["inst_id,ts,open,high,low,close,volume"]
    rows += [f"BTC-USDT,{1_700_000_000 + 60 * i},100,101,99,100.5,3" for i in range(30_000)]
    rows[25_001] += ",7"
    path = tmp_path / "late.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(CandleValidationError, match=r"(?s)late.csv: .*Line: 25002"):
        read_candles_file(path)
