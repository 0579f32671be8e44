"""backfill_covered: does each instrument's stored history reach back BLOFIN_LOOKBACK_DAYS?

A first backfill from BloFin can return less history than asked (a listing younger than the
lookback); the run records that in its metadata (backfill_days_received) and this WARN check
says it. The check reads only the candles table (each instrument's earliest stored bar against
the lookback window ending now), so it needs no state from the run that fetched: run after the
asset or alone, it gives the same answer, and a young listing's warning clears by itself once
the full lookback is stored.

price_jumps: a bar whose close moved far outside its instrument's history (WARN; the rule and
its measured figures are in quality/candles.py), among the bars stored by the last day's
ingests. Registered in code_location.py as ``*CANDLE_CHECKS``.
"""

from dagster import AssetCheckExecutionContext, AssetCheckResult, asset_check

from blofin_assets.defs.assets.candles import candles
from blofin_assets.defs.resources import BlofinSettings, DuckDBWarehouse
from blofin_assets.defs.verdicts import asset_check_result
from blofin_assets.market.ingest import (
    SHORT_STORED_WHY,
    coverage_metadata,
    describe_coverage,
    stored_coverage,
)
from blofin_assets.ml.verdict import Verdict
from blofin_assets.quality.candles import JUMP_FLOOR, JUMP_SCALES, candles_price_jumps

# Why the check does not apply to the other sources (it passes, saying so).
NOT_APPLICABLE = {
    "demo": "demo source: the seeded market has bars for any window, so a first backfill "
    "always covers the lookback; coverage of a real listing does not apply",
    "file": "file source: the file holds the history it holds; BLOFIN_LOOKBACK_DAYS does not "
    "apply to an import",
}


@asset_check(
    asset=candles,
    description="Each configured instrument's stored history reaches back BLOFIN_LOOKBACK_DAYS "
    "(BloFin source; WARN): a listing younger than the lookback is reported, never passed "
    "silently. Passes, saying so, for the demo and file sources.",
)
def backfill_covered(
    context: AssetCheckExecutionContext, settings: BlofinSettings, warehouse: DuckDBWarehouse
) -> AssetCheckResult:
    market = settings.market()
    if market.source in NOT_APPLICABLE:
        verdict = Verdict(
            "backfill_covered",
            True,
            "WARN",
            NOT_APPLICABLE[market.source],
            {"applies": False, "source": market.source},
        )
        return asset_check_result(context, verdict)
    with warehouse.connect(read_only=True) as con:
        coverage = stored_coverage(con, market)
    figures = coverage_metadata(coverage)
    verdict = Verdict(
        "backfill_covered",
        not figures["short"],
        "WARN",
        describe_coverage(coverage, market.lookback_days, "stored history", SHORT_STORED_WHY),
        {
            "applies": True,
            "source": market.source,
            "lookback_days": market.lookback_days,
            **figures,
        },
    )
    return asset_check_result(context, verdict)


@asset_check(
    asset=candles,
    description="WARN on a bar whose close moved far outside its instrument's history: |1-bar "
    f"log return| above {JUMP_SCALES:g} robust standard deviations of the instrument's own "
    f"returns and above {JUMP_FLOOR}, among the bars stored in the last day of ingests. Names "
    "the instrument, the bar and the move.",
)
def price_jumps(
    context: AssetCheckExecutionContext, settings: BlofinSettings, warehouse: DuckDBWarehouse
) -> AssetCheckResult:
    with warehouse.connect(read_only=True) as con:
        verdict = candles_price_jumps(con, settings.bar_delta())
    return asset_check_result(context, verdict)


CANDLE_CHECKS = [backfill_covered, price_jumps]
