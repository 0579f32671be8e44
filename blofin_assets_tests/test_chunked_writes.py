"""A first build of the whole market writes in chunks: candles INSERT_CHUNK_ROWS at a time,
features and targets a group of instruments at a time. Chunks must change nothing but memory:
the same rows as one piece, and still all or nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from blofin_assets.defs.resources import BlofinSettings
from blofin_assets.market.ingest import first_bars
from blofin_assets.ml.tables import feature_table, target_table
from blofin_assets.storage import candles as candle_store
from blofin_assets.storage import derived
from blofin_assets.storage.candles import insert_new_candles, read_candles
from blofin_assets.storage.connection import DuckDBWriteError, connect, query_frame
from blofin_assets.storage.derived import instrument_chunks, refresh_table
from blofin_assets_tests.derived_markets import BAR, DAYS, INSTRUMENTS, T0, market

SETTINGS = BlofinSettings(training_days=DAYS, bar="1m", horizon=5)


def stored(path: Path, sql: str) -> pd.DataFrame:
    with connect(path, read_only=True) as con:
        return query_frame(con, sql)


def build(path: Path, candles: pd.DataFrame) -> dict[str, derived.Refresh]:
    with connect(path) as con:
        insert_new_candles(con, candles, source="demo", bar="1m")
        return {
            table.name: refresh_table(con, table, training_days=DAYS, bar=BAR)
            for table in (feature_table(SETTINGS), target_table(SETTINGS))
        }


def test_a_rebuild_in_chunks_stores_exactly_the_rows_of_one_piece(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    candles = market(T0)
    whole = build(tmp_path / "whole.duckdb", candles)
    monkeypatch.setattr(derived, "REBUILD_CHUNK_CANDLES", 100)  # one instrument per chunk
    with connect(tmp_path / "whole.duckdb", read_only=True) as con:
        chunks = instrument_chunks(con, tuple(INSTRUMENTS), T0 - pd.Timedelta(days=DAYS + 2))
    assert chunks == [[name] for name in sorted(INSTRUMENTS)]
    chunked = build(tmp_path / "chunked.duckdb", candles)

    for name in ("features", "targets"):
        assert chunked[name].mode == whole[name].mode == "rebuild"
        assert chunked[name].candles_read == whole[name].candles_read > 0
        assert (chunked[name].rows, chunked[name].content_hash) == (
            whole[name].rows,
            whole[name].content_hash,
        )
        assert set(chunked[name].seconds) == {"check", "read", "compute", "write"}
        sql = f"SELECT * FROM {name} ORDER BY inst_id, ts"
        pd.testing.assert_frame_equal(
            stored(tmp_path / "chunked.duckdb", sql), stored(tmp_path / "whole.duckdb", sql)
        )


def test_a_candle_insert_in_chunks_stores_everything_or_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(candle_store, "INSERT_CHUNK_ROWS", 1000)
    candles = market(T0)
    assert len(candles) > 5 * 1000
    with connect(tmp_path / "good.duckdb") as con:
        inserted = insert_new_candles(con, candles, source="demo", bar="1m")
        assert inserted.new_rows == len(candles)
        again = insert_new_candles(con, candles.iloc[-3000:], source="demo", bar="1m")
        assert (again.new_rows, again.unchanged_rows, again.conflicting_rows) == (0, 3000, 0)
        back = read_candles(con)
        optional = con.execute(
            "SELECT count(*) FILTER (WHERE volume_currency IS NULL AND volume_quote IS NULL), "
            "count(DISTINCT source), count(DISTINCT ingested_at) FROM candles"
        ).fetchall()[0]
    pd.testing.assert_frame_equal(back, candles, check_dtype=False)
    assert optional == (len(candles), 1, 1)  # absent volumes are NULL; one source, one time

    broken = candles.copy()
    broken.loc[broken.index[-1], "open"] = np.nan  # in the last chunk: NOT NULL fails there
    with connect(tmp_path / "broken.duckdb") as con:
        with pytest.raises(DuckDBWriteError, match="rolled back"):
            insert_new_candles(con, broken, source="demo", bar="1m")
        counts = [
            con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
            for table in ("candles", "candle_fingerprints")
        ]
    assert counts == [0, 0]


def test_optional_volumes_are_stored_where_the_batch_has_them(tmp_path: Path) -> None:
    candles = market(T0, ["BTC-USDT"]).iloc[:100].copy()
    candles["volume_quote"] = candles["volume"] * candles["close"]
    with connect(tmp_path / "quote.duckdb") as con:
        insert_new_candles(con, candles, source="demo", bar="1m")
        rows = con.execute(
            "SELECT count(*) FILTER (WHERE volume_currency IS NULL), sum(volume_quote) FROM candles"
        ).fetchall()[0]
    assert rows[0] == 100
    assert rows[1] == pytest.approx(float(candles["volume_quote"].sum()))


def test_read_candles_of_some_instruments_reads_only_theirs(tmp_path: Path) -> None:
    candles = market(T0)
    with connect(tmp_path / "read.duckdb") as con:
        insert_new_candles(con, candles, source="demo", bar="1m")
        start = T0 - pd.Timedelta(days=1)
        some = read_candles(con, start=start, instruments=["SOL-USDT", "BTC-USDT"])
    expected = candles.loc[
        candles["inst_id"].isin(["SOL-USDT", "BTC-USDT"]) & (candles["ts"] >= start)
    ].reset_index(drop=True)
    pd.testing.assert_frame_equal(some, expected, check_dtype=False)
    assert str(some["ts"].dtype).endswith("UTC]") and some["inst_id"].dtype == object


def test_first_bars_of_a_sorted_batch() -> None:
    candles = market(T0)
    assert first_bars(candles) == candles.groupby("inst_id")["ts"].min().to_dict()
    assert first_bars(candles.iloc[:0]) == {}


def test_a_repeated_candle_in_a_first_backfill_fails_instead_of_being_dropped(
    tmp_path: Path,
) -> None:
    """Validation merges repeats before any insert; a caller that skips it is refused."""
    candles = market(T0, ["BTC-USDT"]).iloc[:50]
    repeated = pd.concat([candles, candles.iloc[[10]]], ignore_index=True)
    with connect(tmp_path / "repeat.duckdb") as con:
        with pytest.raises(DuckDBWriteError, match="rolled back"):
            insert_new_candles(con, repeated, source="demo", bar="1m")
        assert con.execute("SELECT count(*) FROM candles").fetchall()[0][0] == 0
