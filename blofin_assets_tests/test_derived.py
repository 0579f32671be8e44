"""Appending to features/targets gives the rows a full rebuild would, and rebuilds when it must.

Every test compares the table an hourly append leaves with a from-scratch rebuild on the
same candles (a second DuckDB file), so a wrong warm-up, a dropped or duplicated row, or a
label written before its horizon closed shows up as a difference.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from blofin_assets.defs.resources import BlofinSettings
from blofin_assets.market.sources.demo import demo_candles
from blofin_assets.ml.features import FEATURE_WARMUP_BARS, compute_features
from blofin_assets.ml.specs import MODEL_SPECS
from blofin_assets.ml.tables import FEATURES_CODE_VERSION, feature_table, target_table
from blofin_assets.ml.targets import compute_targets
from blofin_assets.ml.training import training_columns
from blofin_assets.storage.candles import insert_new_candles
from blofin_assets.storage.connection import connect, query_frame
from blofin_assets.storage.derived import DerivedTable, Refresh, refresh_table
from blofin_assets.storage.fingerprints import RECORDED, candle_content, whole_table_fingerprint
from blofin_assets.storage.sql import table_columns, table_exists
from blofin_assets.storage.training_rows import read_training_frame
from blofin_assets_tests.derived_markets import BAR, DAYS, INSTRUMENTS, T0, market, thin_market


def settings(**overrides: object) -> BlofinSettings:
    values: dict[str, object] = {"training_days": DAYS, "bar": "1m", "horizon": 5, **overrides}
    return BlofinSettings(**values)


def store(path: Path, candles: pd.DataFrame) -> None:
    with connect(path) as con:
        insert_new_candles(con, candles, source="demo", bar="1m")


def refresh(path: Path, table: DerivedTable) -> Refresh:
    with connect(path) as con:
        return refresh_table(con, table, training_days=DAYS, bar=BAR)


def read(path: Path, name: str) -> pd.DataFrame:
    with connect(path, read_only=True) as con:
        return query_frame(con, f"SELECT * FROM {name} ORDER BY inst_id, ts")


def rebuilt(tmp_path: Path, candles: pd.DataFrame, table: DerivedTable) -> pd.DataFrame:
    """The same table built from scratch on the same candles, in a separate file."""
    path = tmp_path / f"rebuild-{table.name}.duckdb"
    path.unlink(missing_ok=True)
    store(path, candles)
    assert refresh(path, table).mode == "rebuild"
    return read(path, table.name)


def stored_content_hash(path: Path, name: str) -> str:
    with connect(path, read_only=True) as con:
        columns = [row[0] for row in con.execute(f"DESCRIBE {name}").fetchall()]
        quoted = ", ".join(f'"{c}"' for c in columns)
        value = con.execute(f"SELECT bit_xor(hash({quoted})) FROM {name}").fetchall()[0][0]
    return f"{int(value):016x}"


def assert_same_rows(appended: pd.DataFrame, full: pd.DataFrame) -> None:
    """Same keys and labels; floats equal to rounding (see derived.py): 1e-9 relative, or
    1e-9 of the column's largest value for values near zero (Bollinger %B near a band)."""
    pd.testing.assert_frame_equal(
        appended[["inst_id", "ts"]], full[["inst_id", "ts"]], check_dtype=False
    )
    for column in appended.columns[2:]:
        a, b = appended[column].to_numpy(), full[column].to_numpy()
        if np.issubdtype(a.dtype, np.integer):
            np.testing.assert_array_equal(a, b, err_msg=column)
        else:
            scale = float(np.max(np.abs(b))) if len(b) else 0.0
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * scale, err_msg=column)


@pytest.mark.parametrize("candles_until", [market, thin_market], ids=["market", "thin"])
@pytest.mark.parametrize("spec", [feature_table, target_table])
def test_an_hourly_append_equals_a_rebuild_and_reads_only_the_warm_up(
    tmp_path: Path, spec, candles_until
) -> None:
    table = spec(settings())
    path = tmp_path / "blofin.duckdb"
    store(path, candles_until(T0))
    first = refresh(path, table)
    assert first.mode == "rebuild" and first.reason.startswith("first build")
    assert first.content_hash == stored_content_hash(path, table.name)

    later = T0 + pd.Timedelta(minutes=60)
    store(path, candles_until(later))
    hourly = refresh(path, table)

    assert hourly.mode == "append", hourly.reason
    assert hourly.rows_added == 60 * len(INSTRUMENTS)
    assert hourly.rows_dropped == 60 * len(INSTRUMENTS)  # the window slid by an hour
    # Only each instrument's warm-up, the new hour and (targets) the H bars that were still
    # unlabelled were read, not the 3-day window.
    unlabelled = table.settings.get("horizon", 0)
    assert hourly.candles_read == len(INSTRUMENTS) * (table.warmup_bars + 60 + unlabelled)
    full = rebuilt(tmp_path, candles_until(later), table)
    assert_same_rows(read(path, table.name), full)
    assert hourly.rows == len(full)
    # The content hash is kept up to date from what left and came; it must equal a full
    # recomputation over the stored rows.
    assert hourly.content_hash == stored_content_hash(path, table.name)
    assert first.content_hash != hourly.content_hash


def test_no_new_candles_keeps_the_table_and_its_data_version(tmp_path: Path) -> None:
    table = feature_table(settings())
    path = tmp_path / "blofin.duckdb"
    store(path, market(T0))
    first = refresh(path, table)
    again = refresh(path, table)
    assert (again.mode, again.rows_added, again.rows_dropped) == ("append", 0, 0)
    assert again.data_version == first.data_version


def test_identical_candles_give_the_same_data_version_in_another_file(
    tmp_path: Path,
) -> None:
    """The version is a hash of the stored rows, so nothing run-specific may leak into it."""
    table = target_table(settings())
    path = tmp_path / "blofin.duckdb"
    store(path, market(T0))
    first = refresh(path, table)
    other = tmp_path / "other.duckdb"
    store(other, market(T0))
    assert refresh(other, table).data_version == first.data_version


def test_a_back_filled_gap_forces_a_rebuild_that_names_the_instrument(tmp_path: Path) -> None:
    table = feature_table(settings())
    path = tmp_path / "blofin.duckdb"
    candles = market(T0)
    missing = (candles["inst_id"] == "ETH-USDT") & (candles["ts"] == T0 - pd.Timedelta(hours=30))
    store(path, candles.loc[~missing])
    refresh(path, table)

    store(path, market(T0 + pd.Timedelta(minutes=60)))  # the exchange now serves the gap bar
    result = refresh(path, table)

    assert result.mode == "rebuild"
    assert "ETH-USDT (+1 rows)" in result.reason
    assert_same_rows(
        read(path, "features"), rebuilt(tmp_path, market(T0 + pd.Timedelta(minutes=60)), table)
    )


def test_a_gap_in_the_warm_up_still_gives_appended_rows_their_full_history(
    tmp_path: Path,
) -> None:
    """The warm-up is read by position: a 3-hour outage before the mark changes nothing."""
    table = feature_table(settings())
    path = tmp_path / "blofin.duckdb"
    outage = (market(T0 + pd.Timedelta(minutes=60))["ts"] >= T0 - pd.Timedelta(hours=4)) & (
        market(T0 + pd.Timedelta(minutes=60))["ts"] < T0 - pd.Timedelta(hours=1)
    )
    everything = market(T0 + pd.Timedelta(minutes=60)).loc[~outage].reset_index(drop=True)
    store(path, everything.loc[everything["ts"] < T0])
    refresh(path, table)
    store(path, everything)
    result = refresh(path, table)
    assert result.mode == "append"
    assert_same_rows(read(path, "features"), rebuilt(tmp_path, everything, table))


@pytest.mark.parametrize(
    ("changed", "reason"),
    [
        (lambda: target_table(settings(horizon=10)), "settings changed"),
        (lambda: target_table(settings(training_days=2)), "settings changed"),
    ],
)
def test_changed_settings_rebuild(tmp_path: Path, changed, reason: str) -> None:
    path = tmp_path / "blofin.duckdb"
    store(path, market(T0))
    refresh(path, target_table(settings()))
    table = changed()
    with connect(path) as con:
        result = refresh_table(con, table, training_days=table.settings["training_days"], bar=BAR)
    assert result.mode == "rebuild" and reason in result.reason


def test_a_new_code_version_rebuilds(tmp_path: Path) -> None:
    path = tmp_path / "blofin.duckdb"
    store(path, market(T0))
    table = feature_table(settings())
    refresh(path, table)
    bumped = DerivedTable(**{**table.__dict__, "code_version": "features-99"})
    result = refresh(path, bumped)
    assert result.mode == "rebuild"
    assert f"{FEATURES_CODE_VERSION} -> features-99" in result.reason


def built(tmp_path: Path, spec=feature_table) -> tuple[Path, DerivedTable]:
    """A warehouse holding the market up to T0 and ``spec``'s table built on it."""
    path = tmp_path / "blofin.duckdb"
    store(path, market(T0))
    table = spec(settings())
    refresh(path, table)
    return path, table


def by_hand(path: Path, sql: str, params: list[object] | None = None) -> None:
    """A statement run on the warehouse outside the product, as a user at a SQL prompt."""
    with connect(path) as con:
        con.execute(sql, params or [])


def hours_before_t0(hours: int) -> datetime:
    return (T0 - pd.Timedelta(hours=hours)).to_pydatetime()


def test_rows_removed_outside_the_asset_are_noticed(tmp_path: Path) -> None:
    path, table = built(tmp_path)
    by_hand(path, "DELETE FROM features WHERE ts > ?", [hours_before_t0(2)])
    result = refresh(path, table)
    assert result.mode == "rebuild" and "edited outside" in result.reason
    assert_same_rows(read(path, "features"), rebuilt(tmp_path, market(T0), table))


def full_candle_scan(path: Path) -> list[tuple]:
    """Per instrument count, first/last bar and hash, computed from every stored candle."""
    with connect(path, read_only=True) as con:
        return con.execute(
            "SELECT inst_id, count(*), min(ts), max(ts), "
            f"bit_xor({candle_content()}) FROM candles GROUP BY inst_id ORDER BY inst_id"
        ).fetchall()


def test_every_insert_records_what_a_full_scan_of_the_candles_gives(tmp_path: Path) -> None:
    path = tmp_path / "blofin.duckdb"
    store(path, market(T0))
    # The next fetch overlaps the stored bars (ON CONFLICT DO NOTHING) and adds new ones.
    store(path, market(T0 + pd.Timedelta(minutes=90)).loc[lambda f: f["ts"] > T0 - BAR * 30])
    with connect(path) as con:
        recorded = con.execute("SELECT * FROM candle_fingerprints ORDER BY inst_id").fetchall()
        fingerprint = whole_table_fingerprint(con)
        everything = con.execute(
            f"SELECT count(*), bit_xor({candle_content()}) FROM candles"
        ).fetchall()[0]
    assert recorded == full_candle_scan(path)
    assert (fingerprint["rows"], fingerprint["content_hash"]) == (
        everything[0],
        f"{everything[1]:016x}",
    )
    assert fingerprint["source"] == RECORDED


def test_the_hourly_check_trusts_the_inserts_record_instead_of_hashing_history(
    tmp_path: Path,
) -> None:
    """Proof that the old candles are not re-hashed: a record whose hash (alone) is wrong is
    believed, and reported as a change, because its counts and bars still match the table."""
    path, table = built(tmp_path)
    store(path, market(T0 + pd.Timedelta(minutes=60)))
    by_hand(
        path,
        "UPDATE candle_fingerprints SET content_hash = xor(content_hash, 1) "
        "WHERE inst_id = 'SOL-USDT'",
    )
    result = refresh(path, table)
    assert result.mode == "rebuild" and result.candle_fingerprint_source == RECORDED
    assert "SOL-USDT (+0 rows)" in result.reason and "BTC-USDT" not in result.reason


def test_a_candle_deleted_outside_the_product_is_noticed_without_the_record(
    tmp_path: Path,
) -> None:
    path, table = built(tmp_path, target_table)
    by_hand(
        path, "DELETE FROM candles WHERE inst_id = 'ETH-USDT' AND ts = ?", [hours_before_t0(30)]
    )
    with connect(path) as con:
        # The record now overstates ETH by one candle: the shape scan sees it, so the
        # fingerprint comes from hashing the table itself, and says so.
        fingerprint = whole_table_fingerprint(con)
    assert fingerprint["rows"] == len(market(T0)) - 1
    assert fingerprint["source"].startswith("hashed every candle")
    assert "disagrees with the table for ETH-USDT (" in fingerprint["source"]
    result = refresh(path, table)
    assert result.candle_fingerprint_source == fingerprint["source"]
    assert result.mode == "rebuild" and "ETH-USDT (-1 rows)" in result.reason
    candles = market(T0)
    kept = ~((candles["inst_id"] == "ETH-USDT") & (candles["ts"] == T0 - pd.Timedelta(hours=30)))
    assert_same_rows(read(path, "targets"), rebuilt(tmp_path, candles.loc[kept], table))


def test_a_price_edited_in_place_is_seen_once_the_next_insert_records_it(
    tmp_path: Path,
) -> None:
    path, table = built(tmp_path)
    by_hand(
        path,
        "UPDATE candles SET close = close * 1.001 WHERE inst_id = 'BTC-USDT' AND ts = ?",
        [hours_before_t0(5)],
    )
    # Only the new hour: re-sending the edited bar's original values would be a conflict.
    store(path, market(T0 + pd.Timedelta(minutes=60)).loc[lambda f: f["ts"] >= T0])
    result = refresh(path, table)
    assert result.mode == "rebuild" and "BTC-USDT (+0 rows)" in result.reason


def test_a_new_instrument_is_built_from_its_window_while_the_others_append(
    tmp_path: Path,
) -> None:
    path = tmp_path / "blofin.duckdb"
    store(path, market(T0, INSTRUMENTS[:2]))
    table = target_table(settings())
    refresh(path, table)
    later = T0 + pd.Timedelta(minutes=60)
    store(path, market(later))
    result = refresh(path, table)
    assert result.mode == "append"
    assert_same_rows(read(path, "targets"), rebuilt(tmp_path, market(later), table))


def test_a_failing_computation_leaves_table_and_state_untouched(tmp_path: Path) -> None:
    path = tmp_path / "blofin.duckdb"
    store(path, market(T0))
    table = feature_table(settings())
    refresh(path, table)
    before = read(path, "features")
    with connect(path, read_only=True) as con:
        state_before = con.execute("SELECT * FROM derived_table_state ORDER BY ALL").fetchall()

    def broken(window: pd.DataFrame, start: pd.Timestamp) -> pd.DataFrame:
        raise RuntimeError("TA-Lib exploded")

    store(path, market(T0 + pd.Timedelta(minutes=60)))
    with pytest.raises(RuntimeError, match="exploded"):
        refresh(path, DerivedTable(**{**table.__dict__, "compute": broken}))
    pd.testing.assert_frame_equal(read(path, "features"), before)
    with connect(path, read_only=True) as con:
        assert (
            con.execute("SELECT * FROM derived_table_state ORDER BY ALL").fetchall() == state_before
        )


def test_too_few_candles_for_the_warm_up_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "blofin.duckdb"
    short = demo_candles(["BTC-USDT"], "1m", T0 - pd.Timedelta(minutes=100), T0)
    store(path, short)
    with pytest.raises(ValueError, match=r"no features rows: the 100 candles .* 1440-bar warm-up"):
        refresh(path, feature_table(settings()))
    with connect(path, read_only=True) as con:
        assert not table_exists(con, "features")


def test_computing_from_a_start_equals_computing_everything_then_filtering() -> None:
    candles = market(T0)
    start = T0 - pd.Timedelta(days=2, minutes=7)
    features = compute_features(candles)
    pd.testing.assert_frame_equal(
        compute_features(candles, start=start),
        features.loc[features["ts"] >= start].reset_index(drop=True),
    )
    targets = compute_targets(candles, horizon=5)
    pd.testing.assert_frame_equal(
        compute_targets(candles, horizon=5, start=start),
        targets.loc[targets["ts"] >= start].reset_index(drop=True),
    )
    assert len(compute_features(candles, start=T0 + pd.Timedelta(days=1))) == 0
    assert FEATURE_WARMUP_BARS == 1440


def test_a_models_training_read_is_the_full_join_narrowed_to_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    store(path, market(T0 + pd.Timedelta(hours=6)))
    for table in (feature_table(settings()), target_table(settings())):
        refresh(path, table)
    with connect(path, read_only=True) as con:
        full = read_training_frame(con)
        for spec in MODEL_SPECS:
            columns = training_columns(spec)
            narrow = read_training_frame(con, columns)
            assert list(narrow.columns) == columns
            pd.testing.assert_frame_equal(narrow, full[columns])
        assert full["ts"].is_monotonic_increasing and len(full) > 1000
        with pytest.raises(ValueError, match=r"lack 1 column\(s\).*\['target_sharpe'\]"):
            read_training_frame(con, ["inst_id", "ts", "close", "target_sharpe"])


def test_schema_checks_see_only_this_files_tables_not_an_attached_databases(
    tmp_path: Path,
) -> None:
    """An ATTACHed database with a same-named table must not change what a rebuild check or
    the training read believes the warehouse's table holds."""
    path = tmp_path / "warehouse.duckdb"
    store(path, market(T0))
    table = feature_table(settings())
    refresh(path, table)
    with connect(path) as con:
        con.execute(f"ATTACH '{tmp_path / 'other.duckdb'}' AS other")
        con.execute("CREATE TABLE other.main.features (x INTEGER)")
        con.execute("CREATE TABLE other.main.only_there (y INTEGER)")
        assert table_columns(con, "features") == table.columns
        assert table_columns(con, "only_there") == []
        assert not table_exists(con, "only_there") and table_exists(con, "candles")
        assert refresh_table(con, table, training_days=DAYS, bar=BAR).mode == "append"
