"""One computation of the forward record: every model's window figures and direction's
trading rule, as the rows of the forward_performance table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from blofin_assets.forward.performance import (
    WINDOWS,
    VersionKey,
    WindowPerformance,
    assess,
    newest_horizon,
    scored_rows,
)
from blofin_assets.forward.trading import StrategyResult, TradingRule, strategies
from blofin_assets.ml.specs import ModelSpec

DIRECTION_MODEL = "direction_predictor"
# Table prefixes of the strategies (storage.forward.STRATEGY_PREFIXES).
PREFIXES = {"rule": "rule", "always_long": "long", "always_flat": "flat"}

TrackWindow = tuple[str, str, str]  # (mode, variant, window)


@dataclass(frozen=True)
class ForwardRecord:
    computed_at: pd.Timestamp
    rule: TradingRule
    performances: tuple[WindowPerformance, ...]
    trading: Mapping[TrackWindow, Mapping[str, StrategyResult]]

    def find(
        self, model_name: str, window: str, mode: str = "live", variant: str = "served"
    ) -> WindowPerformance | None:
        for performance in self.performances:
            if (performance.model_name, performance.mode, performance.variant) == (
                model_name,
                mode,
                variant,
            ) and performance.window == window:
                return performance
        return None

    def frame(self) -> pd.DataFrame:
        """The forward_performance rows of this computation."""
        rows = []
        for performance in self.performances:
            row = {"computed_at": self.computed_at, **performance.figures()}
            track = (performance.mode, performance.variant, performance.window)
            if performance.model_name == DIRECTION_MODEL and track in self.trading:
                row |= {"margin": self.rule.margin, "fee_bps": self.rule.fee_bps}
                for name, result in self.trading[track].items():
                    row |= result.figures(PREFIXES[name])
            rows.append(row)
        return pd.DataFrame(rows)


def performance_rows(rows: pd.DataFrame, performance: WindowPerformance) -> pd.DataFrame:
    """The scored rows a window's figures were computed on."""
    mine = rows[
        (rows["model_name"] == performance.model_name)
        & (rows["mode"] == performance.mode)
        & (rows["variant"] == performance.variant)
    ]
    if performance.window_end is not None:
        mine = mine[mine["ts"] <= performance.window_end]
    if performance.window_start is not None:
        mine = mine[mine["ts"] > performance.window_start]
    return newest_horizon(mine)


def forward_record(
    outcomes: pd.DataFrame,
    specs: Sequence[ModelSpec],
    *,
    bar: pd.Timedelta,
    computed_at: pd.Timestamp,
    rule: TradingRule | None = None,
    base_rates: Mapping[VersionKey, float] | None = None,
    promotion_skills: Mapping[VersionKey, float] | None = None,
    windows: Mapping[str, pd.Timedelta | None] = WINDOWS,
    shadow_models: Sequence[str] = (),
) -> ForwardRecord:
    """Every model's figures per mode, variant and window (the shadow track always for
    ``shadow_models``); for direction_predictor also the trading rule beside always-long and
    always-flat on the same rows."""
    rule = rule or TradingRule()
    performances = assess(
        outcomes,
        specs,
        base_rates=base_rates,
        promotion_skills=promotion_skills,
        windows=windows,
        shadow_models=shadow_models,
    )
    rows = scored_rows(outcomes)
    trading = {
        (p.mode, p.variant, p.window): strategies(performance_rows(rows, p), rule, bar=bar)
        for p in performances
        if p.model_name == DIRECTION_MODEL
    }
    return ForwardRecord(pd.Timestamp(computed_at), rule, tuple(performances), trading)
