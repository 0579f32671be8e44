"""One clock rule for the whole product: every timestamp is UTC."""

from __future__ import annotations

import pandas as pd


def as_utc(value: pd.Timestamp | str, *, refuse_naive: str | None = None) -> pd.Timestamp:
    """``value`` as a UTC Timestamp.

    A zone-less value is read as UTC (the candle contract's clock), unless ``refuse_naive``
    names the argument: a "now" or a fetch bound without a zone is ambiguous, so it fails
    loudly instead of being guessed.
    """
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        return stamp.tz_convert("UTC")
    if refuse_naive is not None:
        raise ValueError(
            f"{refuse_naive}={value!r} has no time zone; pass an aware UTC time, "
            "e.g. pd.Timestamp.now(tz='UTC')"
        )
    return stamp.tz_localize("UTC")


def frozen_or_real_now(as_of: str) -> pd.Timestamp:
    """BLOFIN_AS_OF: empty means the real clock; an ISO-8601 time freezes "now" (zone-less is
    UTC) so a run can be reproduced."""
    return pd.Timestamp.now(tz="UTC") if not as_of else as_utc(as_of)
