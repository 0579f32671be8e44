"""A warehouse file holds one bar size and one market (demo or real data), and no bar after the
run's "now": a run that does not fit fails at its first step, saying what and what to do, and
changes nothing. Plain functions on a real DuckDB file, then the real job."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetSelection, DagsterEventType, DagsterInstance, ExecuteInProcessResult

from blofin_assets.market.ingest import OVERLAP_BARS
from blofin_assets.market.sources.demo import demo_candles
from blofin_assets.storage.candles import insert_new_candles
from blofin_assets.storage.connection import connect
from blofin_assets.storage.warehouse import (
    Identity,
    WarehouseMismatchError,
    check_identity,
    stored_identity,
)
from blofin_assets_tests.conftest import FROZEN_NOW, Project
from blofin_assets_tests.fake_blofin import FakeBlofin, random_walk_candles
from blofin_assets_tests.in_dagster import (
    BAR,
    CANDLE_FIELDS,
    DAY_END,
    INSTRUMENTS,
    NOW,
    OPEN_BAR,
    failure_text,
    metadata,
    run,
    use_blofin,
    use_file,
)

END = pd.Timestamp("2026-11-20T00:00", tz="UTC")


def demo_market(hours: int = 6, end: pd.Timestamp = END) -> pd.DataFrame:
    return demo_candles(["BTC-USDT", "ETH-USDT"], "1m", end - pd.Timedelta(hours=hours), end)


def identity_rows(path: Path) -> list[tuple]:
    with connect(path, read_only=True) as con:
        return con.execute(
            "SELECT source, bar, recorded_by FROM warehouse_identity ORDER BY source"
        ).fetchall()


def file_state(path: Path) -> list[tuple]:
    """Every row of every table, so "changes nothing" covers the bookkeeping too."""
    with connect(path, read_only=True) as con:
        names = [row[0] for row in con.execute("SHOW TABLES").fetchall()]
        return [
            (name, con.execute(f"SELECT * FROM {name} ORDER BY ALL").fetchall()) for name in names
        ]


def legacy_file(path: Path, candles: pd.DataFrame, sources: dict[str, str] | None = None) -> None:
    """A file as an earlier release left it: candles, no warehouse_identity record."""
    with connect(path) as con:
        insert_new_candles(con, candles, source="demo", bar="1m")
        con.execute("DROP TABLE warehouse_identity")
        for inst_id, source in (sources or {}).items():
            con.execute("UPDATE candles SET source = ? WHERE inst_id = ?", [source, inst_id])


# ---- plain: the record, adoption, refusals ----------------------------------------------------
def test_the_first_insert_records_the_bar_and_each_source_that_writes(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with connect(path) as con:
        insert_new_candles(con, demo_market(), source="file", bar="1m")
        insert_new_candles(con, demo_market(7), source="blofin", bar="1m")  # real + real: fine
    assert identity_rows(path) == [
        ("blofin", "1m", "candle insert"),
        ("file", "1m", "candle insert"),
    ]


def test_a_refused_insert_writes_nothing_at_all(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with connect(path) as con:
        insert_new_candles(con, demo_market(), source="demo", bar="1m")
    before = file_state(path)
    later = demo_market(8, END + pd.Timedelta(hours=2))
    with connect(path) as con:
        with pytest.raises(WarehouseMismatchError, match=r"holds 1m candles, but BLOFIN_BAR=5m"):
            insert_new_candles(con, later, source="demo", bar="5m")
        with pytest.raises(WarehouseMismatchError, match=r"BLOFIN_SOURCE=file is real market"):
            insert_new_candles(con, later, source="file", bar="1m")
    assert file_state(path) == before


def test_a_file_from_before_the_record_adopts_the_bar_and_sources_it_holds(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.duckdb"
    legacy_file(path, demo_market())
    with connect(path) as con:
        assert stored_identity(con) == Identity("1m", ("demo",), adopted=True)
        with pytest.raises(WarehouseMismatchError, match=r"holds 1m candles, but BLOFIN_BAR=1H"):
            check_identity(con, bar="1H", source="demo")
        insert_new_candles(
            con, demo_market(7, END + pd.Timedelta(hours=1)), source="demo", bar="1m"
        )
    assert identity_rows(path) == [("demo", "1m", "adopted from the stored candles")]


def test_a_file_whose_spacing_names_no_bar_size_is_refused(tmp_path: Path) -> None:
    """One candle per instrument, or bars two minutes apart, cannot say which bar size they are."""
    single = tmp_path / "single.duckdb"
    legacy_file(single, demo_market().groupby("inst_id").head(1))
    spaced = tmp_path / "spaced.duckdb"
    market = demo_market()
    legacy_file(spaced, market.loc[market["ts"].dt.minute % 2 == 0])
    for path, spacing in ((single, "no instrument has two bars"), (spaced, "smallest step 0 days")):
        with connect(path) as con, pytest.raises(WarehouseMismatchError) as raised:
            check_identity(con, bar="1m", source="demo")
        assert spacing in str(raised.value) and f"deleting {path}" in str(raised.value)


def test_a_file_already_mixing_demo_and_real_data_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mixed.duckdb"
    legacy_file(path, demo_market(), sources={"ETH-USDT": "file"})
    with (
        connect(path) as con,
        pytest.raises(WarehouseMismatchError, match=r"already mixes .* \(sources demo, file\)"),
    ):
        check_identity(con, bar="1m", source="file")


# ---- in Dagster ------------------------------------------------------------------------------
def step_error(result: ExecuteInProcessResult, step: str) -> str:
    failures = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    assert [e.step_key for e in failures] == [step]
    error = failures[0].step_failure_data.error
    assert error is not None
    return error.to_string()


def test_another_bar_size_fails_before_fetching_and_changes_nothing(
    project: Project, instance: DagsterInstance
) -> None:
    history = random_walk_candles(INSTRUMENTS, end=OPEN_BAR, periods=3 * 1440, seed=11)
    with FakeBlofin(history) as fake:
        use_blofin(project, fake)
        assert run(project, instance).success
        before = file_state(project.db_path)
        fake.clear_requests()
        project.set_env(BLOFIN_BAR="5m")
        text = failure_text(run(project, instance, graph=True))  # candles fails, nothing runs
        assert fake.candle_requests() == []  # refused before asking BloFin for anything
    assert f"DuckDB file {project.db_path} holds 1m candles, but BLOFIN_BAR=5m" in text
    assert "Set BLOFIN_BAR=1m to keep using it" in text
    assert "use another BLOFIN_DUCKDB_PATH (and BLOFIN_MODELS_DIR)" in text
    assert f"deleting {project.db_path} and the models directory" in text
    assert "Nothing was changed." in text
    assert file_state(project.db_path) == before


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    frame[CANDLE_FIELDS].to_parquet(path, index=False)
    return path


def test_the_demo_market_and_real_data_never_share_a_file(
    project: Project, instance: DagsterInstance, tmp_path: Path
) -> None:
    day = random_walk_candles(INSTRUMENTS, end=DAY_END, periods=1440, seed=3)
    use_file(project, write_parquet(day, tmp_path / "day.parquet"))
    assert run(project, instance).success
    before = file_state(project.db_path)
    project.set_env(BLOFIN_SOURCE="demo")
    text = failure_text(run(project, instance, graph=True))
    assert f"DuckDB file {project.db_path} holds real market data (sources file)" in text
    assert "BLOFIN_SOURCE=demo is the synthetic demo market: one file never mixes the two" in text
    assert "use another BLOFIN_DUCKDB_PATH" in text
    assert file_state(project.db_path) == before

    # And the other way round, on a file the demo market wrote first.
    demo_file = tmp_path / "demo.duckdb"
    project.set_env(BLOFIN_DUCKDB_PATH=str(demo_file))
    assert run(project, instance).success
    demo_state = file_state(demo_file)
    use_file(project, tmp_path / "day.parquet")
    text = failure_text(run(project, instance))
    assert "holds the synthetic demo market (sources demo), but BLOFIN_SOURCE=file" in text
    assert file_state(demo_file) == demo_state


def test_a_file_export_of_blofin_then_live_blofin_share_a_file(
    project: Project, instance: DagsterInstance, tmp_path: Path
) -> None:
    """Both are real data: the export loads, live polling carries on from its newest bar, and
    the bars both hold (the overlap re-fetch) are identical, so they are counted, not stored."""
    history = random_walk_candles(INSTRUMENTS, end=OPEN_BAR, periods=3 * 1440, seed=11)
    exported = history.loc[history["ts"] < NOW.floor(BAR) - pd.Timedelta(hours=1)]
    use_file(project, write_parquet(exported, tmp_path / "export.parquet"))
    assert run(project, instance).success
    with FakeBlofin(history) as fake:
        use_blofin(project, fake)
        result = run(project, instance)
    assert result.success, failure_text(result)
    meta = metadata(result)
    assert meta["unchanged_rows"] == len(INSTRUMENTS) * (OVERLAP_BARS + 1)
    assert meta["new_rows"] == len(INSTRUMENTS) * 59  # 11:00 .. 11:58, the newest confirmed
    assert meta["conflicting_rows"] == 0
    assert meta["data_sources"] == "blofin, file" and meta["synthetic"] is False
    assert [row[0] for row in identity_rows(project.db_path)] == ["blofin", "file"]


def test_an_as_of_before_the_newest_stored_bar_fails_and_trains_on_nothing(
    project: Project, instance: DagsterInstance
) -> None:
    assert project.run(instance, ["candles", "features", "targets"]).success
    before = file_state(project.db_path)
    earlier = (pd.Timestamp(FROZEN_NOW) - pd.Timedelta(hours=1)).isoformat()
    project.set_env(BLOFIN_AS_OF=earlier)
    expected = f"BLOFIN_AS_OF={earlier} (now {earlier}) is earlier than the newest stored bar: "
    text = failure_text(run(project, instance, graph=True))
    assert expected in text
    assert "2026-11-20T11:59:00+00:00, closed at 2026-11-20T12:00:00+00:00" in text
    assert "Set BLOFIN_AS_OF to 2026-11-20T12:00:00+00:00 or later" in text
    # Features alone refuse too: no table is built from bars after "now".
    result = project.materialize(instance, AssetSelection.assets("features"), raise_on_error=False)
    assert not result.success and expected in step_error(result, "features")
    assert file_state(project.db_path) == before
