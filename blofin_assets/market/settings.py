"""The run's choices (what to ingest, which window and horizon to train on), validated once.

The Dagster floor builds these from its ``settings`` resource (BLOFIN_* variables, or the
launchpad); plain code takes them as this frozen value, so it never depends on Dagster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from blofin_assets.market.bars import bar_duration
from blofin_assets.market.clock import frozen_or_real_now
from blofin_assets.market.contract import parse_instruments
from blofin_assets.market.validation.batch import ON_BAD_ROWS_MODES

SOURCES = ("demo", "blofin", "file")
# One constant behind both clocks on a served model. The hourly schedule retrains every hour;
# a served version older than three of those hours is expired for its consumers
# (BLOFIN_MODEL_MAX_AGE_HOURS, model_predictions.expired, load_model's warning), and each
# model asset's freshness policy fails one interval earlier, at 2 h, so the UI says a run was
# missed while the next hourly run can still replace the version before it expires.
RETRAIN_INTERVAL_HOURS = 1
DEFAULT_MODEL_MAX_AGE_HOURS = 3
MODEL_FRESHNESS_HOURS = DEFAULT_MODEL_MAX_AGE_HOURS - RETRAIN_INTERVAL_HOURS


def check_max_age_hours(value: float, name: str = "BLOFIN_MODEL_MAX_AGE_HOURS") -> float:
    """A model age limit must be a positive, finite number of hours."""
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value}: must be a positive number of hours")
    return value


@dataclass(frozen=True)
class MarketSettings:
    source: str
    instruments: str  # BLOFIN_INSTRUMENTS as given: a comma list
    bar: str
    lookback_days: int
    training_days: int
    horizon: int
    api_url: str
    candles_file: str
    on_bad_rows: str
    as_of: str  # empty: the real clock; an ISO-8601 UTC time freezes "now"
    # A served version older than this at "now" (now - trained_at) is expired.
    model_max_age_hours: float = DEFAULT_MODEL_MAX_AGE_HOURS

    def __post_init__(self) -> None:
        """Fail the run at its first step with a clear message instead of deep inside."""
        if self.source not in SOURCES:
            raise ValueError(f"BLOFIN_SOURCE={self.source!r}: expected one of {SOURCES}")
        if self.source == "file" and not self.candles_file:
            raise ValueError("BLOFIN_SOURCE=file needs BLOFIN_CANDLES_FILE (a CSV or Parquet path)")
        if self.on_bad_rows not in ON_BAD_ROWS_MODES:
            raise ValueError(
                f"BLOFIN_ON_BAD_ROWS={self.on_bad_rows!r}: expected one of {ON_BAD_ROWS_MODES}"
            )
        for name, value in (
            ("BLOFIN_LOOKBACK_DAYS", self.lookback_days),
            ("BLOFIN_TRAINING_DAYS", self.training_days),
            ("BLOFIN_HORIZON", self.horizon),
        ):
            if value < 1:
                raise ValueError(f"{name}={value}: must be a positive integer")
        check_max_age_hours(self.model_max_age_hours)
        self.instrument_list()
        self.bar_delta()
        self.now()

    def instrument_list(self) -> list[str]:
        return parse_instruments(self.instruments)

    def bar_delta(self) -> pd.Timedelta:
        return bar_duration(self.bar)

    def now(self) -> pd.Timestamp:
        return frozen_or_real_now(self.as_of)
