"""validate_candles: every defined outcome, in both reject and quarantine mode."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from blofin_assets.market.contract import CANDLE_COLUMNS
from blofin_assets.market.validation.batch import validate_candles
from blofin_assets.market.validation.rejections import (
    REASONS,
    REJECTED_COLUMNS,
    CandleValidationError,
)

T0 = pd.Timestamp("2024-05-01T00:00:00Z")
NOW = pd.Timestamp("2024-06-01T00:00:00Z")


def raw_frame(
    n: int = 10,
    *,
    inst_id: str = "BTC-USDT",
    start: pd.Timestamp = T0,
    step: str = "1min",
    label: str = "candles.csv",
    first_row: int = 1,
) -> pd.DataFrame:
    """String-valued rows like a CSV gives them; origin 'candles.csv row n'."""
    stamps = pd.date_range(start, periods=n, freq=step)
    base = 100 + np.arange(n, dtype=float)
    return pd.DataFrame(
        {
            "inst_id": inst_id,
            "ts": [s.strftime("%Y-%m-%dT%H:%M:%SZ") for s in stamps],
            "open": [f"{v:.2f}" for v in base],
            "high": [f"{v + 2:.2f}" for v in base],
            "low": [f"{v - 1:.2f}" for v in base],
            "close": [f"{v + 1:.2f}" for v in base],
            "volume": [f"{v / 10:.3f}" for v in base],
            "origin": [f"{label} row {first_row + i}" for i in range(n)],
        }
    )


def run(raw: pd.DataFrame, mode: str = "reject", **kwargs: object):
    options: dict[str, object] = {
        "bar": "1m",
        "now": NOW,
        "instruments": None,
        "source_label": "test batch",
    }
    options.update(kwargs)
    return validate_candles(raw, on_bad_rows=mode, **options)  # type: ignore[arg-type]


def set_value(row: int, column: str, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.astype({column: object})
        frame.loc[row, column] = value
        return frame

    return mutate


def test_clean_batch_comes_back_in_contract_layout() -> None:
    result = run(raw_frame(10))
    clean = result.clean
    assert list(clean.columns) == CANDLE_COLUMNS
    assert str(clean["ts"].dtype) == "datetime64[ns, UTC]"
    assert clean["inst_id"].dtype == object
    assert all(clean[c].dtype == np.float64 for c in CANDLE_COLUMNS[2:])
    assert clean["ts"].iloc[0] == T0
    assert clean["close"].iloc[3] == pytest.approx(104.0)
    assert list(result.rejected.columns) == REJECTED_COLUMNS
    assert result.stats["rows_in"] == result.stats["rows_clean"] == 10
    assert result.stats["rows_rejected"] == 0
    assert {f"rejected_{r}" for r in REASONS} <= set(result.stats)


# (id, mutation, reason, detail fragment, rows rejected)
BAD_INPUTS = [
    ("empty_field", set_value(4, "high", ""), "missing_value", "high is empty", 1),
    ("null_field", set_value(4, "volume", None), "missing_value", "volume is empty", 1),
    ("empty_inst_id", set_value(4, "inst_id", ""), "missing_value", "inst_id is empty", 1),
    ("empty_ts", set_value(4, "ts", " "), "missing_value", "ts is empty", 1),
    ("non_numeric", set_value(4, "low", "abc"), "non_numeric", "low is not a number", 1),
    ("nan", set_value(4, "close", "NaN"), "not_finite", "close is NaN or infinite", 1),
    ("inf", set_value(4, "volume", "inf"), "not_finite", "volume is NaN or infinite", 1),
    ("zero_price", set_value(4, "open", "0"), "non_positive_price", "open <= 0", 1),
    ("negative_price", set_value(4, "low", "-5"), "non_positive_price", "low <= 0", 1),
    ("high_below_low", set_value(4, "high", "50"), "inconsistent_ohlc", "high < low", 1),
    ("open_above_high", set_value(4, "open", "999"), "inconsistent_ohlc", "open outside", 1),
    ("close_below_low", set_value(4, "close", "100.5"), "inconsistent_ohlc", "close outside", 1),
    ("negative_volume", set_value(4, "volume", "-0.1"), "negative_volume", "volume < 0", 1),
    ("bad_ts_text", set_value(4, "ts", "yesterday"), "bad_timestamp", "not ISO-8601", 1),
    ("ts_out_of_range", set_value(4, "ts", "1990-01-01T00:00:00Z"), "bad_timestamp", "outside", 1),
    ("epoch_unknown_unit", set_value(4, "ts", "12345"), "bad_timestamp", "unknown unit", 1),
    ("misaligned_ts", set_value(4, "ts", "2024-05-01T00:04:30Z"), "misaligned_ts", "grid", 1),
    ("invalid_instrument", set_value(4, "inst_id", "btc/usdt"), "invalid_instrument", "match", 1),
    (
        "unknown_instrument",
        set_value(4, "inst_id", "ETH-USDT"),
        "unknown_instrument",
        "not in the instrument list",
        1,
    ),
]


@pytest.mark.parametrize(("mutate", "reason", "detail", "count"), [c[1:] for c in BAD_INPUTS],
                         ids=[c[0] for c in BAD_INPUTS])  # fmt: skip
def test_bad_row_rejects_batch_with_what_where_how_many(
    mutate: Callable[[pd.DataFrame], pd.DataFrame], reason: str, detail: str, count: int
) -> None:
    raw = mutate(raw_frame(10))
    with pytest.raises(CandleValidationError) as caught:
        run(raw, instruments=["BTC-USDT"])
    message = str(caught.value)
    assert f"{count} of 10 candle rows rejected" in message  # how many
    assert f"{reason}: {count}" in message  # what
    assert detail in message
    assert "candles.csv row 5" in message  # where
    assert message.startswith("test batch:")
    assert caught.value.counts == {reason: count}


@pytest.mark.parametrize(("mutate", "reason", "detail", "count"), [c[1:] for c in BAD_INPUTS],
                         ids=[c[0] for c in BAD_INPUTS])  # fmt: skip
def test_bad_row_is_quarantined_and_clean_rows_kept(
    mutate: Callable[[pd.DataFrame], pd.DataFrame], reason: str, detail: str, count: int
) -> None:
    raw = mutate(raw_frame(10))
    result = run(raw, mode="quarantine", instruments=["BTC-USDT"])
    assert len(result.clean) == 10 - count
    assert len(result.rejected) == count
    rejected = result.rejected.iloc[0]
    assert rejected["origin"] == "candles.csv row 5"
    assert rejected["reason"].startswith(f"{reason}: ")
    assert detail in rejected["reason"]
    assert "open=" in rejected["raw"] and "origin" not in rejected["raw"]
    assert result.stats[f"rejected_{reason}"] == count
    assert result.stats["rows_rejected"] == count
    assert result.stats["rows_clean"] + count == result.stats["rows_in"]
    # the clean rows are exactly the other rows, still typed
    kept = pd.to_datetime(raw.drop(index=4)["ts"], utc=True).tolist()
    assert result.clean["ts"].tolist() == kept


def test_unclosed_bar_reject_and_quarantine() -> None:
    raw = raw_frame(10)
    now = T0 + pd.Timedelta(minutes=9, seconds=30)  # the 10th bar (09:00) is still open
    with pytest.raises(CandleValidationError, match=r"(?s)unclosed_bar: 1.*candles.csv row 10"):
        run(raw, now=now)
    result = run(raw, mode="quarantine", now=now)
    assert len(result.clean) == 9
    assert result.rejected["origin"].tolist() == ["candles.csv row 10"]
    assert result.rejected["reason"].iloc[0].startswith("unclosed_bar: bar not closed")
    # a bar that closes exactly at now is closed
    assert len(run(raw, now=T0 + pd.Timedelta(minutes=10)).clean) == 10


def test_conflicting_duplicates_reject_every_copy() -> None:
    raw = raw_frame(6)
    twin = raw.iloc[[2]].assign(close="103.5", origin="candles.csv row 7")
    raw = pd.concat([raw, twin], ignore_index=True)
    with pytest.raises(CandleValidationError) as caught:
        run(raw)
    assert "conflicting_duplicate: 2" in str(caught.value)
    assert "candles.csv row 3" in str(caught.value) and "candles.csv row 7" in str(caught.value)
    result = run(raw, mode="quarantine")
    assert sorted(result.rejected["origin"]) == ["candles.csv row 3", "candles.csv row 7"]
    assert len(result.clean) == 5
    assert T0 + pd.Timedelta(minutes=2) not in set(result.clean["ts"])


def test_identical_duplicates_are_merged_and_counted() -> None:
    raw = raw_frame(6)
    raw = pd.concat([raw, raw.iloc[[1, 4]].assign(origin="page 2")], ignore_index=True)
    result = run(raw)
    assert len(result.clean) == 6
    assert result.stats["duplicates_merged"] == 2
    assert result.stats["rows_rejected"] == 0
    assert result.clean["ts"].is_unique


def test_unsorted_rows_are_sorted_and_counted_not_rejected() -> None:
    raw = pd.concat([raw_frame(5, inst_id="ETH-USDT"), raw_frame(5)], ignore_index=True)
    raw = raw.iloc[::-1].reset_index(drop=True)  # newest first, like a BloFin page
    result = run(raw)
    assert result.clean["inst_id"].tolist() == ["BTC-USDT"] * 5 + ["ETH-USDT"] * 5
    assert result.clean.groupby("inst_id")["ts"].apply(lambda s: s.is_monotonic_increasing).all()
    # BTC 4..0 then ETH 4..0: each instrument's 4 steps back count, BTC -> ETH is in order
    assert result.stats["unsorted_rows"] == 8
    assert result.stats["rows_rejected"] == 0


def test_gaps_are_allowed_and_counted() -> None:
    raw = raw_frame(20).drop(index=[5, 6, 7, 12]).reset_index(drop=True)
    result = run(raw)
    assert len(result.clean) == 16
    assert result.stats["gaps"] == 2
    assert result.stats["largest_gap_bars"] == 3


def test_coarser_data_than_bar_is_a_bar_size_mismatch() -> None:
    """5m data given bar=1m sits on the 1m grid; its spacing gives it away."""
    raw = pd.concat(
        [raw_frame(12, step="5min"), raw_frame(12, inst_id="ETH-USDT")], ignore_index=True
    )
    with pytest.raises(CandleValidationError, match=r"(?s)bar_size_mismatch: 12.*looks like 5m"):
        run(raw)
    result = run(raw, mode="quarantine")
    assert set(result.clean["inst_id"]) == {"ETH-USDT"}  # genuine 1m data is untouched
    assert len(result.rejected) == 12
    assert result.rejected["reason"].str.contains("multiple of 5 bars").all()


def test_short_coarse_batch_cannot_be_judged_and_passes() -> None:
    assert len(run(raw_frame(3, step="5min")).clean) == 3


def test_finer_data_than_bar_is_misaligned() -> None:
    """1m data given bar=5m: 4 of every 5 rows are off the 5m grid."""
    raw = raw_frame(10)
    with pytest.raises(CandleValidationError, match=r"misaligned_ts: 8"):
        run(raw, bar="5m")
    result = run(raw, mode="quarantine", bar="5m")
    assert result.clean["ts"].dt.minute.tolist() == [0, 5]


def test_daily_bars_may_open_at_hong_kong_midnight_but_not_mix_phases() -> None:
    hk = raw_frame(10, start=pd.Timestamp("2024-04-01T16:00:00Z"), step="1D")
    assert len(run(hk, bar="1D").clean) == 10
    utc = raw_frame(10, start=pd.Timestamp("2024-04-01T00:00:00Z"), step="1D")
    assert len(run(utc, bar="1D").clean) == 10
    mixed = set_value(3, "ts", "2024-04-04T00:00:00Z")(hk)
    result = run(mixed, mode="quarantine", bar="1D")
    assert result.rejected["origin"].tolist() == ["candles.csv row 4"]
    assert "phase" in result.rejected["reason"].iloc[0]
    off_hour = set_value(3, "ts", "2024-04-04T16:30:00Z")(hk)
    assert "grid" in run(off_hour, mode="quarantine", bar="1D").rejected["reason"].iloc[0]


def test_empty_batch_is_an_error_unless_allowed() -> None:
    empty = raw_frame(0)
    with pytest.raises(CandleValidationError, match="test batch: empty batch"):
        run(empty)
    result = run(empty, allow_empty=True)
    assert result.clean.empty and list(result.clean.columns) == CANDLE_COLUMNS
    assert str(result.clean["ts"].dtype) == "datetime64[ns, UTC]"
    assert result.stats["rows_in"] == 0


def test_on_bad_rows_must_be_reject_or_quarantine() -> None:
    with pytest.raises(ValueError, match="on_bad_rows='drop'"):
        run(raw_frame(3), mode="drop")


def test_now_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        run(raw_frame(3), now=pd.Timestamp("2024-06-01"))


def test_missing_contract_column_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match=r"lacks columns \['volume'\]"):
        run(raw_frame(3).drop(columns="volume"))


def test_many_problems_are_summarised_with_first_example_of_each() -> None:
    raw = raw_frame(30)
    for row in (3, 4, 5, 6):
        raw.loc[row, "high"] = "x"
    raw.loc[20, "volume"] = "-1"
    with pytest.raises(CandleValidationError) as caught:
        run(raw)
    message = str(caught.value)
    assert "5 of 30 candle rows rejected (non_numeric: 4, negative_volume: 1)" in message
    assert "candles.csv row 21: negative_volume" in message
    assert "on_bad_rows='quarantine'" in message


def test_epoch_text_in_seconds_and_milliseconds_and_offsets() -> None:
    raw = raw_frame(4)
    seconds = raw.assign(ts=[str(int(t.timestamp())) for t in pd.to_datetime(raw["ts"])])
    millis = raw.assign(ts=[str(int(t.timestamp()) * 1000) for t in pd.to_datetime(raw["ts"])])
    naive = raw.assign(ts=raw["ts"].str.rstrip("Z"))
    offset = raw.assign(
        ts=[(t + pd.Timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00") for t in
            pd.to_datetime(raw["ts"])]
    )  # fmt: skip
    expected = run(raw).clean["ts"].tolist()
    for variant in (seconds, millis, naive, offset):
        assert run(variant).clean["ts"].tolist() == expected


def test_a_batch_mixing_epoch_units_is_refused_whatever_the_mode() -> None:
    raw = raw_frame(4)
    stamps = pd.to_datetime(raw["ts"])
    raw["ts"] = [str(int(t.timestamp()) * 1000) for t in stamps]
    raw.loc[2, "ts"] = str(int(stamps[2].timestamp()))
    with pytest.raises(CandleValidationError, match=r"mixes epoch seconds.*candles.csv row 3"):
        run(raw, mode="quarantine")


def test_typed_input_needs_no_parsing() -> None:
    raw = raw_frame(5)
    typed = raw.assign(
        ts=pd.to_datetime(raw["ts"]),
        **{c: raw[c].astype(float) for c in ["open", "high", "low", "close", "volume"]},
    )
    typed["volume_quote"] = typed["volume"] * typed["close"]
    result = run(typed)
    assert list(result.clean.columns) == [*CANDLE_COLUMNS, "volume_quote"]
    pd.testing.assert_frame_equal(result.clean[CANDLE_COLUMNS], run(raw).clean)
    typed.loc[1, "close"] = np.nan
    assert run(typed, mode="quarantine").rejected["reason"].iloc[0].startswith("not_finite")


def test_optional_volume_columns_are_checked_too() -> None:
    raw = raw_frame(5).assign(volume_currency="1", volume_quote="100")
    raw.loc[2, "volume_quote"] = "-3"
    result = run(raw, mode="quarantine")
    assert result.rejected["reason"].tolist() == ["negative_volume: volume_quote < 0"]


def test_a_row_is_rejected_once_for_its_first_reason() -> None:
    raw = raw_frame(5)
    raw.loc[1, "high"] = "abc"
    raw.loc[1, "volume"] = "-1"
    result = run(raw, mode="quarantine")
    assert result.rejected["reason"].tolist() == ["non_numeric: high is not a number"]
    assert result.stats["rejected_negative_volume"] == 0


def test_vectorised_on_a_large_batch() -> None:
    """300k string rows in well under the suite's budget (this runs on millions)."""
    n = 300_000
    stamps = pd.date_range(T0 - pd.Timedelta(days=300), periods=n, freq="1min")
    raw = pd.DataFrame(
        {
            "inst_id": "BTC-USDT",
            "ts": stamps.astype("int64") // 1_000_000,
            "open": "100.5",
            "high": "101",
            "low": "99.5",
            "close": "100",
            "volume": "2",
            "origin": "big",
        }
    )
    result = run(raw)
    assert len(result.clean) == n
