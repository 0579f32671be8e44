"""Each test gets its own DuckDB file, models dir and frozen clock; no test touches the internet."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
from dagster import (
    AssetKey,
    AssetSelection,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    instance_for_test,
    materialize,
)

# A fixed "now" keeps the demo market, and so every figure, reproducible.
FROZEN_NOW = "2026-11-20T12:00:30Z"


@dataclass
class Project:
    root: Path
    db_path: Path
    models_dir: Path
    monkeypatch: pytest.MonkeyPatch

    def set_env(self, **values: str) -> None:
        for name, value in values.items():
            self.monkeypatch.setenv(name, value)

    def defs(self) -> Definitions:
        """The real definitions, built from the environment like `dagster dev` builds them."""
        from blofin_assets.defs import build_definitions

        return build_definitions()

    def run(
        self, instance: DagsterInstance, selection: list[str] | None = None
    ) -> ExecuteInProcessResult:
        defs = self.defs()
        job = defs.resolve_job_def("hourly_training")
        return job.execute_in_process(
            instance=instance,
            asset_selection=None if selection is None else [AssetKey(s) for s in selection],
            raise_on_error=True,
        )

    def materialize(
        self, instance: DagsterInstance, selection: AssetSelection, *, raise_on_error: bool = True
    ) -> ExecuteInProcessResult:
        """Run an arbitrary selection (e.g. only an asset check) of the real definitions."""
        defs = self.defs()
        return materialize(
            [*defs.assets, *defs.asset_checks],
            selection=selection,
            instance=instance,
            resources=defs.resources,
            raise_on_error=raise_on_error,
        )

    def env(self) -> dict[str, str]:
        """The environment a subprocess (the dagster CLI) needs to see this project."""
        return {k: v for k, v in os.environ.items() if k.startswith(("BLOFIN_", "PATH", "HOME"))}

    def query(self, sql: str) -> list[tuple]:
        with duckdb.connect(str(self.db_path), read_only=True) as con:
            return con.execute(sql).fetchall()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    for name in ("BLOFIN_SOURCE", "BLOFIN_CANDLES_FILE", "BLOFIN_API_URL", "BLOFIN_BAR"):
        monkeypatch.delenv(name, raising=False)
    db_path = tmp_path / "data" / "blofin.duckdb"
    models_dir = tmp_path / "models"
    monkeypatch.setenv("BLOFIN_DUCKDB_PATH", str(db_path))
    monkeypatch.setenv("BLOFIN_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("BLOFIN_AS_OF", FROZEN_NOW)
    # Small but real: 3 instruments x 3 days of 1m bars; the default 14 days is in test_demo_market.
    monkeypatch.setenv("BLOFIN_LOOKBACK_DAYS", "3")
    monkeypatch.setenv("BLOFIN_TRAINING_DAYS", "3")
    monkeypatch.setenv("BLOFIN_INSTRUMENTS", "BTC-USDT,ETH-USDT,SOL-USDT")
    # A run of '*' (the UI's Materialize all) tunes too: one trial scores the set in force and
    # adopts nothing, so such tests pay seconds, not the real budget; tuning tests set their own.
    monkeypatch.setenv("BLOFIN_TUNING_TRIALS", "1")
    monkeypatch.setenv("BLOFIN_TUNING_TIMEOUT_SECONDS", "30")
    return Project(tmp_path, db_path, models_dir, monkeypatch)


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as test_instance:
        yield test_instance
