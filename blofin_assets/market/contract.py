"""The candle contract: one frame layout, so every source and step sees the same thing.

A candle frame has exactly CANDLE_COLUMNS (plus, optionally, OPTIONAL_CANDLE_COLUMNS):
``inst_id`` (str), ``ts`` (bar *open* time, ``datetime64[ns, UTC]``), ``open``, ``high``,
``low``, ``close``, ``volume`` (float64, base-currency volume), sorted by (inst_id, ts).
Only closed bars are ever produced.
"""

from __future__ import annotations

import re

import pandas as pd

CANDLE_COLUMNS: list[str] = ["inst_id", "ts", "open", "high", "low", "close", "volume"]
OPTIONAL_CANDLE_COLUMNS: list[str] = ["volume_currency", "volume_quote"]
PRICE_COLUMNS: list[str] = ["open", "high", "low", "close"]

INSTRUMENT_PATTERN = re.compile(r"^[A-Z0-9]{1,15}-[A-Z0-9]{1,15}(-SWAP)?$")


def validate_instrument_id(inst_id: str) -> str:
    """Instrument ids reach SQL and URLs, so only a strict pattern is let through."""
    if not isinstance(inst_id, str) or not INSTRUMENT_PATTERN.match(inst_id):
        raise ValueError(
            f"invalid instrument id {inst_id!r}: expected e.g. 'BTC-USDT' "
            f"(pattern {INSTRUMENT_PATTERN.pattern})"
        )
    return inst_id


def parse_instruments(text: str) -> list[str]:
    """Comma list from BLOFIN_INSTRUMENTS, validated, order kept, duplicates dropped."""
    items = [item.strip().upper() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError("BLOFIN_INSTRUMENTS is empty: name at least one instrument, e.g. BTC-USDT")
    return list(dict.fromkeys(validate_instrument_id(item) for item in items))


def empty_keyed_frame(columns: list[str]) -> pd.DataFrame:
    """A typed empty (inst_id, ts)-keyed frame of float columns, so an empty batch flows
    through every step like any other."""
    frame = pd.DataFrame({column: pd.Series(dtype="float64") for column in columns})
    frame["inst_id"] = frame["inst_id"].astype("object")
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame[columns]


def empty_candles() -> pd.DataFrame:
    return empty_keyed_frame(CANDLE_COLUMNS)
