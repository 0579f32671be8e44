"""Resources: settings, the DuckDB file and the model store, configured from BLOFIN_* variables.

Each field defaults to its environment variable or to the documented default, and any single
field can be overridden for one run from the Dagster launchpad.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import duckdb
import pandas as pd
from dagster import ConfigurableResource
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


def from_env(name: str, cast: type = str) -> Any:
    """A field default read from the environment when the resource is built.

    Per-field defaults (rather than constructor values) let the launchpad override one field,
    e.g. ``resources: {settings: {config: {as_of: ...}}}``, and keep the others.
    """
    return Field(
        default_factory=lambda: cast(os.environ.get(name) or DEFAULTS[name]),
        description=f"{name} (default {DEFAULTS[name] or 'empty'})",
    )


class BlofinSettings(ConfigurableResource):
    """What to ingest and how to train; one object so a run's choices are recorded together."""

    source: str = from_env("BLOFIN_SOURCE")
    instruments: str = from_env("BLOFIN_INSTRUMENTS")
    bar: str = from_env("BLOFIN_BAR")
    lookback_days: int = from_env("BLOFIN_LOOKBACK_DAYS", int)
    training_days: int = from_env("BLOFIN_TRAINING_DAYS", int)
    horizon: int = from_env("BLOFIN_HORIZON", int)
    api_url: str = from_env("BLOFIN_API_URL")
    candles_file: str = from_env("BLOFIN_CANDLES_FILE")
    on_bad_rows: str = from_env("BLOFIN_ON_BAD_ROWS")
    # Empty = the real clock; an ISO-8601 UTC time freezes "now" for reproducible runs.
    as_of: str = from_env("BLOFIN_AS_OF")

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

    path: str = from_env("BLOFIN_DUCKDB_PATH")
    lock_wait_seconds: float = Field(default=120.0, description="Wait this long for a held lock")

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with warehouse.connect(
            self.path, read_only=read_only, wait_seconds=self.lock_wait_seconds
        ) as con:
            yield con


class ModelStoreResource(ConfigurableResource):
    """Where model versions are written and served from."""

    models_dir: str = from_env("BLOFIN_MODELS_DIR")

    def store(self) -> ModelStore:
        return ModelStore(self.models_dir)


def default_resources() -> dict[str, ConfigurableResource]:
    """Resources as the environment configures them when the definitions are built."""
    return {
        "settings": BlofinSettings(),
        "warehouse": DuckDBWarehouse(),
        "model_store": ModelStoreResource(),
    }
