"""The walk_forward_backtest job: the forward record's past, replayed on demand.

Not an asset: it writes rows of prediction_outcomes (mode 'backtest') that the
prediction_outcomes asset does not own, and it is run by hand with a choice of span and step.
So it is an op-based job with run config; what it did is logged as an observation of
prediction_outcomes, where the catalog shows it beside the live record.
"""

from dagster import AssetObservation, Config, MetadataValue, OpExecutionContext, Output, job, op
from pydantic import Field

from blofin_assets.defs.resources import BlofinSettings, DuckDBWarehouse
from blofin_assets.forward.backtest import (
    DEFAULT_DAYS,
    DEFAULT_STEP_HOURS,
    BacktestConfig,
    BacktestSummary,
    Progress,
    run_backtest,
    variant_scores,
)
from blofin_assets.forward.performance import WindowPerformance
from blofin_assets.storage.outcomes import OUTCOMES_TABLE


class WalkForwardConfig(Config):
    step_hours: int = Field(default=DEFAULT_STEP_HOURS, description="Hours between retrains")
    days: int = Field(default=int(DEFAULT_DAYS), description="Days of labelled bars replayed")
    refit_on_whole_window: bool = Field(
        default=False,
        description="Refit each trained model on every usable row (the test block too) before "
        "scoring; its outcomes are versions 'backtest-refit-<T>', beside 'backtest-<T>'",
    )


def summary_metadata(
    summary: BacktestSummary, scores: dict[str, WindowPerformance]
) -> dict[str, object]:
    """Skill and its p-value per model first; then the counts and the span."""
    metadata: dict[str, object] = {}
    for name, score in scores.items():
        metadata[f"{name}_skill"] = MetadataValue.float(score.skill)
        metadata[f"{name}_p_value"] = MetadataValue.float(score.p_value)
    metadata |= {
        "variant": summary.variant,
        "outcomes_scored": MetadataValue.int(sum(summary.scored.values())),
        "outcomes_added": MetadataValue.int(sum(summary.added.values())),
        "retrain_points": MetadataValue.int(len(summary.points)),
        "span": f"{summary.points[0].isoformat()} .. {summary.end.isoformat()}",
        "seconds": MetadataValue.float(round(summary.seconds, 1)),
        "scores": MetadataValue.json({name: score_json(score) for name, score in scores.items()}),
    }
    return metadata


def score_json(score: WindowPerformance) -> dict[str, object]:
    keep = ("n", "primary_metric", "model_value", "baseline_value", "baseline_names", "skill")
    return {name: getattr(score, name) for name in keep} | {"p_value": score.p_value}


@op(
    # Writes DuckDB: one writing step at a time across runs, like the writer assets.
    pool="duckdb_writer",
    description="Retrain every model every step_hours over the last days of labelled rows, "
    "on the rows known at each point only, and score each version on the bars up to the next "
    "point into prediction_outcomes (mode 'backtest'). Serves nothing.",
)
def walk_forward_backtest_op(
    context: OpExecutionContext,
    config: WalkForwardConfig,
    settings: BlofinSettings,
    warehouse: DuckDBWarehouse,
) -> Output[dict]:
    plan = BacktestConfig(
        step_hours=config.step_hours,
        days=config.days,
        refit_on_whole_window=config.refit_on_whole_window,
    )

    def report(progress: Progress) -> None:
        context.log.info(progress.message())

    db = warehouse.file()
    summary = run_backtest(db, settings.market(), plan, progress=report, scored_at=settings.now())
    scores = variant_scores(db, summary)
    metadata = summary_metadata(summary, scores)
    context.log_event(
        AssetObservation(asset_key=OUTCOMES_TABLE, metadata={"backtest": True, **metadata})
    )
    return Output({"added": summary.added, "scored": summary.scored}, metadata=metadata)


@job(
    name="walk_forward_backtest",
    description="Replay the hourly retraining over stored history (default: every 24 h over "
    "the last 7 days) and fill prediction_outcomes with mode 'backtest'. Not scheduled.",
)
def walk_forward_backtest_job() -> None:
    walk_forward_backtest_op()
