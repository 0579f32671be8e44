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

from blofin_assets.market.bars import bar_duration
from blofin_assets.market.clock import frozen_or_real_now
from blofin_assets.market.contract import parse_instruments
from blofin_assets.market.settings import DEFAULT_MODEL_MAX_AGE_HOURS, MarketSettings
from blofin_assets.ml.store import ModelStore
from blofin_assets.ml.tuning import TuningBudget
from blofin_assets.storage.connection import DuckDBFile

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
    "BLOFIN_MODEL_MAX_AGE_HOURS": str(DEFAULT_MODEL_MAX_AGE_HOURS),
    # The tune_models job's budget per model: Optuna trials, and seconds before it stops
    # starting new ones; each trial is scored on this many purged walk-forward folds.
    "BLOFIN_TUNING_TRIALS": "20",
    "BLOFIN_TUNING_TIMEOUT_SECONDS": "60",
    "BLOFIN_TUNING_FOLDS": "3",
}


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
    # A served version older than this (now - trained_at) makes expired predictions.
    model_max_age_hours: float = from_env("BLOFIN_MODEL_MAX_AGE_HOURS", float)

    def market(self) -> MarketSettings:
        """The same choices as a plain, validated value for the plain floor."""
        return MarketSettings(
            source=self.source,
            instruments=self.instruments,
            bar=self.bar,
            lookback_days=self.lookback_days,
            training_days=self.training_days,
            horizon=self.horizon,
            api_url=self.api_url,
            candles_file=self.candles_file,
            on_bad_rows=self.on_bad_rows,
            as_of=self.as_of,
            model_max_age_hours=self.model_max_age_hours,
        )

    def bar_delta(self) -> pd.Timedelta:
        return bar_duration(self.bar)

    def now(self) -> pd.Timestamp:
        return frozen_or_real_now(self.as_of)

    def instrument_list(self) -> list[str]:
        return parse_instruments(self.instruments)


class DuckDBWarehouse(ConfigurableResource):
    """The DuckDB file holding candles, features, targets and results."""

    path: str = from_env("BLOFIN_DUCKDB_PATH")
    lock_wait_seconds: float = Field(default=120.0, description="Wait this long for a held lock")

    def file(self) -> DuckDBFile:
        return DuckDBFile(self.path, self.lock_wait_seconds)

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.file().connect(read_only=read_only) as con:
            yield con


class ModelStoreResource(ConfigurableResource):
    """Where model versions are written and served from."""

    models_dir: str = from_env("BLOFIN_MODELS_DIR")

    def store(self) -> ModelStore:
        return ModelStore(self.models_dir)


class TuningSettings(ConfigurableResource):
    """The tune_models job's budget per model (trials, seconds, walk-forward folds)."""

    trials: int = from_env("BLOFIN_TUNING_TRIALS", int)
    timeout_seconds: float = from_env("BLOFIN_TUNING_TIMEOUT_SECONDS", float)
    folds: int = from_env("BLOFIN_TUNING_FOLDS", int)

    def budget(self) -> TuningBudget:
        return TuningBudget(
            n_trials=self.trials, timeout_seconds=self.timeout_seconds, n_folds=self.folds
        )


def default_resources() -> dict[str, ConfigurableResource]:
    """Resources as the environment configures them when the definitions are built."""
    return {
        "settings": BlofinSettings(),
        "warehouse": DuckDBWarehouse(),
        "model_store": ModelStoreResource(),
        "tuning": TuningSettings(),
    }
