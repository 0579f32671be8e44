"""The candles that features and targets are built from: the training window plus warm-up."""

from dataclasses import dataclass

import pandas as pd

from blofin_assets import warehouse as wh
from blofin_assets.ml.dataset import read_start, window_start
from blofin_assets.resources import BlofinSettings, DuckDBWarehouse


@dataclass(frozen=True)
class CandleWindow:
    candles: pd.DataFrame  # from the warm-up start to the newest stored candle
    start: pd.Timestamp  # first row kept in the derived table
    sources: list[str]


def read_candle_window(settings: BlofinSettings, warehouse: DuckDBWarehouse) -> CandleWindow:
    """Read only what the window needs, never the whole history."""
    with warehouse.connect(read_only=True) as con:
        newest = wh.newest_candle_ts(con)
        candles = wh.read_candles(
            con, start=read_start(newest, settings.training_days, settings.bar_delta())
        )
        sources = wh.candle_sources(con)
    return CandleWindow(candles, window_start(newest, settings.training_days), sources)
