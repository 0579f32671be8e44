"""The two derived tables the models train on, described for storage.derived.refresh_table:
what each row is computed from, its warm-up, and the settings a change of which rebuilds it.
The instrument list is one of them: an instrument removed from BLOFIN_INSTRUMENTS leaves both
tables (and so the training window and the predictions) at their next build."""

from __future__ import annotations

from typing import Protocol

from blofin_assets.market.contract import parse_instruments
from blofin_assets.ml import features, targets
from blofin_assets.storage.derived import DerivedTable

FEATURES_CODE_VERSION = "features-2"
TARGETS_CODE_VERSION = "targets-2"


class TableSettings(Protocol):
    instruments: str  # BLOFIN_INSTRUMENTS as given: a comma list
    training_days: int
    bar: str
    horizon: int


def instruments_of(settings: TableSettings) -> tuple[str, ...]:
    """Sorted: the order of BLOFIN_INSTRUMENTS changes no row, so it rebuilds nothing."""
    return tuple(sorted(parse_instruments(settings.instruments)))


def feature_table(settings: TableSettings) -> DerivedTable:
    return DerivedTable(
        name="features",
        code_version=FEATURES_CODE_VERSION,
        settings={"training_days": settings.training_days, "bar": settings.bar},
        columns=features.OUTPUT_COLUMNS,
        warmup_bars=features.FEATURE_WARMUP_BARS,
        compute=lambda window, start: features.compute_features(window, start=start),
        instruments=instruments_of(settings),
    )


def target_table(settings: TableSettings) -> DerivedTable:
    horizon = settings.horizon
    return DerivedTable(
        name="targets",
        code_version=TARGETS_CODE_VERSION,
        settings={"training_days": settings.training_days, "bar": settings.bar, "horizon": horizon},
        columns=targets.OUTPUT_COLUMNS,
        warmup_bars=targets.RISK_REFERENCE_BARS,
        compute=lambda window, start: targets.compute_targets(window, horizon=horizon, start=start),
        instruments=instruments_of(settings),
    )
