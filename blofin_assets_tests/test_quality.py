"""Each data-quality verdict passes on clean tables and fails on tables built to trip it."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from blofin_assets.market.sources.demo import demo_candles
from blofin_assets.ml.features import compute_features
from blofin_assets.ml.targets import compute_targets
from blofin_assets.quality.candles import (
    candles_fresh,
    candles_gaps,
    candles_ohlc_valid,
    candles_unique,
)
from blofin_assets.quality.tables import (
    features_targets_aligned,
    finite_columns,
    labels_not_features,
)
from blofin_assets.storage.candles import insert_new_candles

END = pd.Timestamp("2026-11-20T12:00", tz="UTC")
BAR = pd.Timedelta(minutes=1)


@pytest.fixture(scope="module")
def market() -> pd.DataFrame:
    return demo_candles(["BTC-USDT", "ETH-USDT"], "1m", END - pd.Timedelta(days=2), END)


def database(**tables: pd.DataFrame) -> duckdb.DuckDBPyConnection:
    """An in-memory warehouse holding exactly these tables (no keys, so bad data can exist)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for name, frame in tables.items():
        con.register("frame", frame)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM frame")
        con.unregister("frame")
    return con


def test_duplicates(market: pd.DataFrame) -> None:
    assert candles_unique(database(candles=market)).passed
    doubled = pd.concat([market, market.iloc[[10, 20, 30]]])
    outcome = candles_unique(database(candles=doubled))
    assert not outcome.passed and outcome.metadata["duplicates"] == 3
    assert outcome.metadata["primary_key"] is False


def test_the_products_candles_table_cannot_hold_a_duplicate(market: pd.DataFrame) -> None:
    """The check trusts the table's PRIMARY KEY instead of counting: pin that DuckDB refuses a
    duplicate bar there, even one inserted by hand."""
    con = duckdb.connect()
    insert_new_candles(con, market, source="demo", bar="1m")
    outcome = candles_unique(con)
    assert outcome.passed and outcome.metadata == {
        "rows": len(market),
        "duplicates": 0,
        "primary_key": True,
    }
    with pytest.raises(duckdb.ConstraintException, match=r"(?i)duplicate key"):
        con.execute(
            "INSERT INTO candles SELECT * FROM candles WHERE ts = (SELECT min(ts) FROM candles)"
        )


@pytest.mark.parametrize(
    ("column", "value", "kind"),
    [
        ("low", 1e9, "ohlc_inconsistent"),
        ("high", 1.0, "ohlc_inconsistent"),
        ("close", -5.0, "non_positive_price"),
        ("volume", -1.0, "negative_volume"),
        ("open", float("inf"), "non_finite"),
    ],
)
def test_ohlc_consistency(market: pd.DataFrame, column: str, value: float, kind: str) -> None:
    assert candles_ohlc_valid(database(candles=market)).passed
    broken = market.copy()
    broken.loc[5, column] = value
    outcome = candles_ohlc_valid(database(candles=broken))
    assert not outcome.passed and outcome.metadata[kind] >= 1, outcome.description


def test_gaps_are_counted_per_instrument(market: pd.DataFrame) -> None:
    assert candles_gaps(database(candles=market), BAR).passed
    holed = market.drop(index=range(100, 160))  # one hour missing from the first instrument
    outcome = candles_gaps(database(candles=holed), BAR)
    assert not outcome.passed and outcome.severity == "WARN"
    assert outcome.metadata["per_instrument"] == {"BTC-USDT": 1, "ETH-USDT": 0}
    assert outcome.metadata["largest_gap_bars"] == 61


def test_freshness(market: pd.DataFrame) -> None:
    con = database(candles=market)
    assert candles_fresh(con, now=END + pd.Timedelta(seconds=30), bar=BAR, live=True).passed
    late = candles_fresh(con, now=END + pd.Timedelta(minutes=10), bar=BAR, live=True)
    assert not late.passed and late.metadata["lag_bars"]["BTC-USDT"] == pytest.approx(10)
    historical = candles_fresh(con, now=END + pd.Timedelta(days=90), bar=BAR, live=False)
    assert historical.passed and "does not apply" in historical.description


def test_finite_values(market: pd.DataFrame) -> None:
    features = compute_features(market, start=market["ts"].min())
    columns = [c for c in features.columns if c not in ("inst_id", "ts", "close")]
    assert finite_columns(database(features=features), "features", columns).passed
    features.loc[3, "rsi_14"] = np.nan
    features.loc[4, "ret_5"] = np.inf
    outcome = finite_columns(database(features=features), "features", columns)
    assert not outcome.passed
    assert outcome.metadata["bad_by_column"] == {"ret_5": 1, "rsi_14": 1}


def test_labels_never_among_features(market: pd.DataFrame) -> None:
    features = compute_features(market, start=market["ts"].min())
    assert labels_not_features(database(features=features)).passed
    features["target_direction"] = 1
    outcome = labels_not_features(database(features=features))
    assert not outcome.passed and outcome.metadata["leaked"] == ["target_direction"]


def test_features_and_targets_align(market: pd.DataFrame) -> None:
    start = market["ts"].min()
    features = compute_features(market, start=start)
    targets = compute_targets(market, horizon=5, start=start)
    assert features_targets_aligned(database(features=features, targets=targets), 5).passed
    missing_features = features.drop(index=features.index[100:110])
    outcome = features_targets_aligned(database(features=missing_features, targets=targets), 5)
    assert not outcome.passed and outcome.metadata["labels_without_features"] == 10
    missing_labels = targets.drop(index=targets.index[200:203])
    outcome = features_targets_aligned(database(features=features, targets=missing_labels), 5)
    assert not outcome.passed and outcome.metadata["unlabelled_inside"] == 3
