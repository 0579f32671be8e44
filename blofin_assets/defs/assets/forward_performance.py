"""forward_performance: how each served model did on the bars it predicted, and its checks.

The asset reads prediction_outcomes, computes every model's window figures and direction's
trading rule (forward/record.py), appends them to main.forward_performance and reports the
few figures that matter first, as numbers the UI plots over time: each model's live skill
over 24 h and 7 d with its count and p-value, and the rule's net return beside always-long.
Tables and the equity-curve picture follow. The shadow record (mode 'shadow': the ensemble's
rejected versions, never served) gets the same windows and its own headline figures
(``<model>_shadow_skill_24h``...), beside the members' live ones.

``live_skill`` judges only mode 'live' rows (forward/live_skill.py): a shadow record says
what an unserved version would have done, never how a served one does. It is an asset check
on each *model* asset, not on this one: it is a verdict on
the model, so it sits beside that model's gates (leakage_alarm, metric_regression,
beats_baseline) on the model's page and in its health, where a person deciding whether to act
on the model looks, under the same name for every model. It reads this asset's newest rows
(additional_deps), so in the hourly job it runs after them: one step for all five, the run's
last, which ends the run log with one line per model trained (storage/run_summary.py).
"""

import base64
import math
from collections.abc import Iterator

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSpec,
    AssetKey,
    AssetsDefinition,
    Config,
    DagsterLogManager,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset_check,
)
from pydantic import Field

from blofin_assets.defs.assets.metadata import OWNERS
from blofin_assets.defs.resources import BlofinSettings, DuckDBWarehouse, ModelStoreResource
from blofin_assets.defs.verdicts import check_result
from blofin_assets.forward.live import SHADOW_MODELS
from blofin_assets.forward.live_skill import live_skill
from blofin_assets.forward.performance import SHADOW_MODE, SHADOW_VARIANT
from blofin_assets.forward.record import DIRECTION_MODEL, ForwardRecord, forward_record
from blofin_assets.forward.trading import (
    DEFAULT_MARGIN,
    DEFAULT_TAKER_FEE_BPS,
    FEE_SOURCE,
    TradingRule,
)
from blofin_assets.ml.specs import ModelSpec
from blofin_assets.ml.store import ModelStore
from blofin_assets.storage.forward import (
    FORWARD_TABLE,
    append_forward_performance,
    forward_size,
    read_forward_performance,
)
from blofin_assets.storage.outcomes import read_outcomes
from blofin_assets.storage.results import promotion_skills
from blofin_assets.storage.run_summary import TrainedVersion, summary_lines, trained_in_run

OUTCOMES_KEY = AssetKey("prediction_outcomes")
FORWARD_KEY = AssetKey("forward_performance")
RESULTS_KEY = AssetKey("ml_model_results")
LIVE_SKILL = "live_skill"
LIVE_SKILL_DESCRIPTION = (
    "The served versions on the bars they predicted (forward_performance): WARN when 24 h "
    "skill is below zero beyond noise or far below the skill at promotion, ERROR when below "
    "zero beyond noise over 7 days. Thresholds: the model's spec."
)


class ForwardPerformanceConfig(Config):
    margin: float = Field(
        default=DEFAULT_MARGIN, description="Trade only when |p - 0.5| exceeds this margin"
    )
    fee_bps: float = Field(
        default=DEFAULT_TAKER_FEE_BPS, description=f"Taker fee per side, bps ({FEE_SOURCE})"
    )


def training_base_rates(
    store: ModelStore, versions: set[tuple[str, str]]
) -> dict[tuple[str, str], float]:
    """Each direction (or ensemble) version's training share of ups, from its metadata.json
    when at hand: the models whose outcomes carry a probability of up."""
    rates = {}
    for name, version in versions:
        if name not in (DIRECTION_MODEL, *SHADOW_MODELS):
            continue
        try:
            constants = store.read_metadata(name, version).get("naive_constants") or {}
        except (OSError, ValueError):
            continue  # a backtest version has no files: calibration.py says what is used
        if "base_rate" in constants:
            rates[(name, version)] = float(constants["base_rate"])
    return rates


def fmt(value: object) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def table(frame: pd.DataFrame, columns: list[str]) -> str:
    """The rows that scored something; a model without outcomes yet has NaN figures only."""
    frame = frame[frame["n"] > 0]
    if frame.empty:
        return "No scored outcomes yet."
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(fmt(row[c]) for c in columns) + " |" for _, row in frame.iterrows()]
    return "\n".join(lines)


def calibration_markdown(record: ForwardRecord) -> str:
    """Live over 24 h, and every track over all its outcomes (the 7 d bins add little)."""
    lines = ["| track | window | p from | p to | rows | mean p | share up |", "|" + " --- |" * 7]
    for p in record.performances:
        shown = p.window == "all" or (p.mode == "live" and p.window == "24h")
        if p.model_name == DIRECTION_MODEL and p.probability is not None and shown:
            for b in p.probability.calibration:
                lines.append(
                    f"| {p.mode} {p.variant} | {p.window} | {b.lower:.3f} | {b.upper:.3f} | "
                    f"{b.rows} | {b.mean_probability:.3f} | {b.realized_frequency:.3f} |"
                )
    return "\n".join(lines) if len(lines) > 2 else "No scored probabilities yet."


def equity_markdown(record: ForwardRecord) -> str:
    from blofin_assets.forward.charts import equity_curves_png  # matplotlib: only when drawn

    panels = {
        f"{mode} ({variant}), all outcomes, fee {record.rule.fee_bps:g} bps/side": results
        for (mode, variant, window), results in record.trading.items()
        if window == "all" and results["rule"].equity.size
    }
    encoded = base64.b64encode(equity_curves_png(panels)).decode()
    return f"![equity curves](data:image/png;base64,{encoded})"


def track_headline(
    record: ForwardRecord, name: str, track: tuple[str, str], label: str
) -> dict[str, object]:
    """One model's 24 h and 7 d skill, 24 h count and p-value on one (mode, variant)."""
    day = record.find(name, "24h", *track)
    week = record.find(name, "7d", *track)
    return {
        f"{name}_{label}_skill_24h": MetadataValue.float(day.skill if day else math.nan),
        f"{name}_{label}_skill_7d": MetadataValue.float(week.skill if week else math.nan),
        f"{name}_{label}_n_24h": MetadataValue.int(day.n if day else 0),
        f"{name}_{label}_p_value_24h": MetadataValue.float(day.p_value if day else 1.0),
    }


def headline(
    record: ForwardRecord, names: list[str], shadowed: list[str] | None = None
) -> dict[str, object]:
    """The figures that matter, first and numeric, so the UI plots them over time: live for
    every model, shadow (never served) for ``shadowed``."""
    metadata: dict[str, object] = {}
    for name in names:
        metadata |= track_headline(record, name, ("live", "served"), "live")
    for name in shadowed or []:
        metadata |= track_headline(record, name, (SHADOW_MODE, SHADOW_VARIANT), "shadow")
    for window in ("24h", "7d"):
        trading = record.trading.get(("live", "served", window), {})
        for strategy, key in (("rule", "direction_rule"), ("always_long", "always_long")):
            result = trading.get(strategy)
            value = result.net_return if result is not None else math.nan
            metadata[f"{key}_live_net_return_{window}"] = MetadataValue.float(value)
    return metadata


def materialization_metadata(
    record: ForwardRecord, names: list[str], shadowed: list[str] | None = None
) -> dict[str, object]:
    frame = record.frame()
    frame["track"] = frame["mode"] + " " + frame["variant"]
    direction = frame[frame["model_name"] == DIRECTION_MODEL]
    performance = ["model_name", "track", "window", "n", "primary_metric", "model_value"]
    performance += ["baseline_value", "skill", "p_value", "beats_baseline_beyond_noise"]
    probability = ["track", "window", "probability_rows", "log_loss", "coin_flip_log_loss"]
    probability += ["base_rate_log_loss", "brier", "base_rate_brier", "base_rate_source"]
    trading = ["track", "window"]
    trading += [f"{s}_{f}" for s in ("rule", "long") for f in ("net_return", "sharpe")]
    trading += ["rule_gross_return", "rule_hit_rate", "rule_turnover", "rule_max_drawdown"]
    trading += ["long_max_drawdown", "flat_net_return"]
    return {
        **headline(record, names, shadowed),
        "dagster/table_name": f"main.{FORWARD_TABLE}",
        "performance": MetadataValue.md(table(frame, performance)),
        "direction_probability": MetadataValue.md(table(direction, probability)),
        "direction_calibration": MetadataValue.md(calibration_markdown(record)),
        "direction_trading": MetadataValue.md(table(direction, trading)),
        "trading_rule": f"long p > {0.5 + record.rule.margin:g}, short p < "
        f"{0.5 - record.rule.margin:g}, 1/H per bar held H bars; taker fee "
        f"{record.rule.fee_bps:g} bps per side (default {DEFAULT_TAKER_FEE_BPS:g}: {FEE_SOURCE})",
        "equity_curves": MetadataValue.md(equity_markdown(record)),
    }


def build_forward_performance_asset(specs: list[ModelSpec]) -> AssetsDefinition:
    names = [spec.name for spec in specs]
    shadowed = [name for name in names if name in SHADOW_MODELS]

    @asset(
        name="forward_performance",
        deps=[OUTCOMES_KEY],
        group_name="forward_record",
        description="Each model on the bars it predicted (main.forward_performance, appended "
        "per run): skill over its baseline per window (24 h, 7 d, all) and mode, the "
        "overlap-aware Diebold-Mariano p-value, direction's log loss, Brier and calibration, "
        "and its trading rule after fees beside always-long and flat. Mode 'shadow' (variant "
        "'rejected'): the same figures for versions that were NOT served, "
        f"{', '.join(shadowed) or 'none'}'s, beside the served models' live ones.",
        kinds={"duckdb"},
        owners=OWNERS,
        code_version="forward-performance-2",
        pool="duckdb_writer",
    )
    def forward_performance(
        config: ForwardPerformanceConfig,
        settings: BlofinSettings,
        warehouse: DuckDBWarehouse,
        model_store: ModelStoreResource,
    ) -> MaterializeResult:
        with warehouse.connect(read_only=True) as con:
            outcomes = read_outcomes(con)
            versions = set(zip(outcomes["model_name"], outcomes["model_version"], strict=True))
            promised = promotion_skills(con, versions)
        record = forward_record(
            outcomes,
            specs,
            bar=settings.bar_delta(),
            computed_at=pd.Timestamp.now(tz="UTC"),  # when computed, whatever the market clock
            rule=TradingRule(margin=config.margin, fee_bps=config.fee_bps),
            base_rates=training_base_rates(model_store.store(), versions),
            promotion_skills=promised,
            shadow_models=shadowed,
        )
        with warehouse.connect() as con:
            added = append_forward_performance(con, record.frame())
            total, newest = forward_size(con)
        return MaterializeResult(
            metadata={
                **materialization_metadata(record, names, shadowed),
                "rows_added": MetadataValue.int(added),
                "dagster/row_count": MetadataValue.int(total),
            },
            data_version=DataVersion(f"{total}:{newest}"),
        )

    return forward_performance


def log_run_summary(
    log: DagsterLogManager, trained: list[TrainedVersion], store: ModelStore
) -> None:
    """What this run trained, promoted or rejected, one line per model: the run's last words."""
    served = {row.model_name: store.served_version(row.model_name) for row in trained}
    for line in summary_lines(trained, served):
        log.info(line)


def build_live_skill_checks(specs: list[ModelSpec]) -> AssetChecksDefinition:
    """One step for every model's live_skill, the last of the hourly graph: it reads
    forward_performance's newest rows, then ends the run's log with its summary (which reads
    ml_model_results, hence that dependency too: a run without forward_performance still
    summarizes after the results are recorded)."""
    by_key = {AssetCheckKey(AssetKey(spec.name), LIVE_SKILL): spec for spec in specs}

    @multi_asset_check(
        name=LIVE_SKILL,
        specs=[
            AssetCheckSpec(
                LIVE_SKILL,
                asset=spec.name,
                additional_deps=[FORWARD_KEY, RESULTS_KEY],
                description=LIVE_SKILL_DESCRIPTION,
            )
            for spec in specs
        ],
        can_subset=True,
        description="Each model's live_skill, then one log line per model the run trained: "
        "promoted or rejected, skill over which naive rule (p), the version served.",
    )
    def live_skill_checks(
        context: AssetCheckExecutionContext,
        warehouse: DuckDBWarehouse,
        model_store: ModelStoreResource,
    ) -> Iterator[AssetCheckResult]:
        with warehouse.connect(read_only=True) as con:
            latest = read_forward_performance(con)
            trained = trained_in_run(con, context.run.run_id)
        for key in sorted(context.selected_asset_check_keys):
            spec = by_key[key]
            verdict = live_skill(spec, latest)
            yield check_result(verdict, check_name=LIVE_SKILL, asset=spec.name, log=context.log)
        log_run_summary(context.log, trained, model_store.store())

    return live_skill_checks
