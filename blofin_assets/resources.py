"""Resources: settings, the DuckDB file and the model store, configured from BLOFIN_* variables.

Each field defaults to its environment variable (shown as such in the launchpad when set) or to
the documented default, and any field can be overridden for one run from the Dagster UI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import pandas as pd
from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from blofin_assets import warehouse
from blofin_assets.ml.store import ModelStore
from blofin_assets.sources import bar_duration, parse_instruments

DEFAULTS: dict[str, str] = {
    "BLOFIN_DUCKDB_PATH": "data/blofin.duckdb",
    "BLOFIN_MODELS_DIR": "models",
    "BLOFIN_SOURCE": "demo",
    "BLOFIN_INSTRUMENTS": "BTC-USDT,ETH-USDT,SOL-USDT",
    "BLOFIN_BAR": "1m",
    "BLOFIN_LOOKBACK_DAYS": "14",
    "BLOFIN_TRAINING_DAYS": "14",
    "BLOFIN_HORIZON": "5",
    "BLOFIN_API_URL": "https://openapi.blofin.com",
    "BLOFIN_CANDLES_FILE": "",
    "BLOFIN_ON_BAD_ROWS": "reject",
    "BLOFIN_AS_OF": "",
}
SOURCES = ("demo", "blofin", "file")


def env_default(name: str) -> str | EnvVar:
    """An EnvVar where the variable is set (the UI then shows where the value came from)."""
    return EnvVar(name) if os.environ.get(name) else DEFAULTS[name]


class BlofinSettings(ConfigurableResource):
    """What to ingest and how to train; one object so a run's choices are recorded together."""

    source: str = Field(description="demo | blofin | file")
    instruments: str = Field(description="Comma list, e.g. BTC-USDT,ETH-USDT")
    bar: str = Field(description="Bar size, BloFin codes (1m, 5m, 1H, ...)")
    lookback_days: int = Field(description="History fetched on the first backfill")
    training_days: int = Field(description="Training window ending at the newest stored candle")
    horizon: int = Field(description="Label horizon H in bars")
    api_url: str = Field(description="BloFin REST base URL (source=blofin)")
    candles_file: str = Field(description="CSV/Parquet path (source=file)")
    on_bad_rows: str = Field(description="reject (whole batch fails) | quarantine")
    as_of: str = Field(
        description="Freeze 'now' (ISO-8601 UTC) for reproducible runs; empty = the real clock"
    )

    def instrument_list(self) -> list[str]:
        return parse_instruments(self.instruments)

    def bar_delta(self) -> pd.Timedelta:
        return bar_duration(self.bar)

    def now(self) -> pd.Timestamp:
        if not self.as_of:
            return pd.Timestamp.now(tz="UTC")
        frozen = pd.Timestamp(self.as_of)
        return frozen.tz_localize("UTC") if frozen.tzinfo is None else frozen.tz_convert("UTC")

    def validated(self) -> BlofinSettings:
        """Fail the run at its first step with a clear message instead of deep inside."""
        if self.source not in SOURCES:
            raise ValueError(f"BLOFIN_SOURCE={self.source!r}: expected one of {SOURCES}")
        if self.source == "file" and not self.candles_file:
            raise ValueError("BLOFIN_SOURCE=file needs BLOFIN_CANDLES_FILE (a CSV or Parquet path)")
        if self.on_bad_rows not in ("reject", "quarantine"):
            raise ValueError(f"BLOFIN_ON_BAD_ROWS={self.on_bad_rows!r}: expected reject|quarantine")
        for name, value in (
            ("BLOFIN_LOOKBACK_DAYS", self.lookback_days),
            ("BLOFIN_TRAINING_DAYS", self.training_days),
            ("BLOFIN_HORIZON", self.horizon),
        ):
            if value < 1:
                raise ValueError(f"{name}={value}: must be a positive integer")
        self.instrument_list()
        self.bar_delta()
        self.now()
        return self


class DuckDBWarehouse(ConfigurableResource):
    """The DuckDB file holding candles, features, targets and results."""

    path: str = Field(description="BLOFIN_DUCKDB_PATH")
    lock_wait_seconds: float = Field(default=120.0, description="Wait this long for a held lock")

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with warehouse.connect(
            self.path, read_only=read_only, wait_seconds=self.lock_wait_seconds
        ) as con:
            yield con


class ModelStoreResource(ConfigurableResource):
    """Where model versions are written and served from."""

    models_dir: str = Field(description="BLOFIN_MODELS_DIR")

    def store(self) -> ModelStore:
        return ModelStore(self.models_dir)


def default_resources() -> dict[str, ConfigurableResource]:
    """Resources as the environment configures them; tests build them after setting env."""

    def integer(name: str) -> int | EnvVar:
        value = env_default(name)
        return EnvVar.int(name) if isinstance(value, EnvVar) else int(value)

    return {
        "settings": BlofinSettings(
            source=env_default("BLOFIN_SOURCE"),
            instruments=env_default("BLOFIN_INSTRUMENTS"),
            bar=env_default("BLOFIN_BAR"),
            lookback_days=integer("BLOFIN_LOOKBACK_DAYS"),
            training_days=integer("BLOFIN_TRAINING_DAYS"),
            horizon=integer("BLOFIN_HORIZON"),
            api_url=env_default("BLOFIN_API_URL"),
            candles_file=env_default("BLOFIN_CANDLES_FILE"),
            on_bad_rows=env_default("BLOFIN_ON_BAD_ROWS"),
            as_of=env_default("BLOFIN_AS_OF"),
        ),
        "warehouse": DuckDBWarehouse(path=env_default("BLOFIN_DUCKDB_PATH")),
        "model_store": ModelStoreResource(models_dir=env_default("BLOFIN_MODELS_DIR")),
    }
