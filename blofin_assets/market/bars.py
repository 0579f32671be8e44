"""Bar sizes as BloFin names them, and the grid their bars open on."""

from __future__ import annotations

import pandas as pd

from blofin_assets.market.clock import as_utc

BAR_DURATIONS: dict[str, pd.Timedelta] = {
    "1m": pd.Timedelta(minutes=1),
    "3m": pd.Timedelta(minutes=3),
    "5m": pd.Timedelta(minutes=5),
    "15m": pd.Timedelta(minutes=15),
    "30m": pd.Timedelta(minutes=30),
    "1H": pd.Timedelta(hours=1),
    "2H": pd.Timedelta(hours=2),
    "4H": pd.Timedelta(hours=4),
    "6H": pd.Timedelta(hours=6),
    "8H": pd.Timedelta(hours=8),
    "12H": pd.Timedelta(hours=12),
    "1D": pd.Timedelta(days=1),
}


def bar_duration(bar: str) -> pd.Timedelta:
    """BloFin bar codes are case-sensitive ("1m" minute vs "1M" month), so fail on unknown ones."""
    try:
        return BAR_DURATIONS[bar]
    except KeyError:
        raise ValueError(
            f"unknown bar size {bar!r}; expected one of {sorted(BAR_DURATIONS)}"
        ) from None


def bar_name(step_ns: int) -> str:
    """The BloFin name of a duration in nanoseconds, or the duration itself when none fits."""
    for name, duration in BAR_DURATIONS.items():
        if duration.value == step_ns:
            return name
    return str(pd.Timedelta(step_ns, unit="ns"))


def latest_closed_bar_open(now: pd.Timestamp, bar: str) -> pd.Timestamp:
    """Open time of the newest bar already closed at `now`: the frontier a poller may fetch.

    Every supported bar divides a day, so its grid is anchored at midnight UTC (the Unix epoch
    is one); a bar opening at t closes at t + duration, and the one in progress at `now` is
    never returned.
    """
    step = bar_duration(bar).value
    floored = (as_utc(now).value // step) * step
    return pd.Timestamp(floored - step, tz="UTC")
