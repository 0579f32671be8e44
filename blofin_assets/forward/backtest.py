"""Walk-forward backtest: replay the product's own retraining over stored history.

At retrain points T_0 < T_1 < ... (every ``step_hours`` over the last ``days`` of labelled
rows) each model is trained with ``ml.training.train_model`` on exactly the rows a live run
at T would have had, and the resulting version predicts the bars after T up to the next point.
Those predictions are scored into ``prediction_outcomes`` with mode 'backtest'; nothing is
served and the models directory is never opened.

A row at t is usable at T when its label was known at T: its own instrument's H-th next
candle (the last bar its label reads) is at or before T. It must also lie inside the live
training window, ts >= T - BLOFIN_TRAINING_DAYS. The labelled rows are computed from the
stored candles with the product's feature and target code, so a point's window reaches back
as far as the candles do, not only as far as the stored features table (which holds the
newest window only); where they overlap the rows are the stored ones.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.preprocessing import StandardScaler

from blofin_assets.forward.outcomes import outcome_rows
from blofin_assets.forward.performance import WindowPerformance, assess
from blofin_assets.market.settings import MarketSettings
from blofin_assets.ml.features import compute_features
from blofin_assets.ml.publish import model_config
from blofin_assets.ml.reference import build_reference
from blofin_assets.ml.row_plan import cap_rows
from blofin_assets.ml.specs import MODEL_SPECS, ModelSpec
from blofin_assets.ml.target_space import model_target
from blofin_assets.ml.targets import compute_targets
from blofin_assets.ml.training import (
    TrainedModel,
    TrainingDataError,
    naive_constants,
    train_model,
    training_columns,
)
from blofin_assets.serving.model import ServedModel
from blofin_assets.storage.candles import read_candles
from blofin_assets.storage.connection import DuckDBFile
from blofin_assets.storage.outcomes import append_outcomes, read_outcomes
from blofin_assets.storage.warehouse import check_clock

DEFAULT_STEP_HOURS = 24
DEFAULT_DAYS = 7.0
BACKTEST = "backtest"
LABEL_END = "label_end"  # the ts of the row's H-th next candle: its label is known from then


@dataclass(frozen=True)
class BacktestConfig:
    step_hours: float = DEFAULT_STEP_HOURS
    days: float = DEFAULT_DAYS
    # Refit a clone of each trained estimator (and its scaler) on every usable row, test block
    # included, before scoring: the question of issue 15 item 7.
    refit_on_whole_window: bool = False

    def __post_init__(self) -> None:
        if not self.step_hours > 0 or not self.days > 0:
            raise ValueError(f"step_hours and days must be > 0, got {self}")

    @property
    def variant(self) -> str:
        return "refit" if self.refit_on_whole_window else "train-block"


@dataclass(frozen=True)
class Progress:
    """One model trained and scored at one retrain point (``point`` of ``points``, 1-based)."""

    point: int
    points: int
    model_name: str
    retrain_at: pd.Timestamp
    usable_rows: int  # labelled rows known at the point, inside the live window
    fitted_rows: int  # of them, what the scoring estimator was fitted on
    scored_rows: int
    new_outcomes: int
    seconds: float

    def message(self) -> str:
        return (
            f"retrain {self.point} of {self.points} (at {self.retrain_at.isoformat()}): "
            f"{self.model_name} fitted on {self.fitted_rows} of {self.usable_rows} usable rows, "
            f"scored {self.scored_rows} "
            f"bars, {self.new_outcomes} new outcomes, {self.seconds:.1f} s"
        )


@dataclass(frozen=True)
class BacktestSummary:
    variant: str
    points: tuple[pd.Timestamp, ...]
    end: pd.Timestamp  # the newest labelled bar: the last segment ends here
    scored: dict[str, int]  # model -> outcomes scored
    added: dict[str, int]  # model -> of those, newly stored
    seconds: float


def backtest_version(retrain_at: pd.Timestamp, config: BacktestConfig) -> str:
    """'backtest-<T>' or 'backtest-refit-<T>': both variants coexist in prediction_outcomes."""
    prefix = "backtest-refit" if config.refit_on_whole_window else BACKTEST
    return f"{prefix}-{retrain_at.strftime('%Y%m%dT%H%M%S')}Z"


def label_ends(candles: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """(inst_id, ts, label_end) per candle: the ts of its own instrument's H-th next candle,
    NaT where none is stored yet. Positional, as the targets and the purge are."""
    keys = candles[["inst_id", "ts"]].sort_values(["inst_id", "ts"], kind="stable")
    keys[LABEL_END] = keys.groupby("inst_id", sort=False)["ts"].shift(-horizon)
    return keys.reset_index(drop=True)


def labelled_history(candles: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """Features joined to targets (as read_training_frame joins the tables) for every stored
    candle with a full warm-up and a known label, plus each row's label_end; (ts, inst_id)
    order."""
    features = compute_features(candles)
    targets = compute_targets(candles, horizon=horizon)
    rows = features.merge(targets, on=["inst_id", "ts"], how="inner", validate="one_to_one")
    rows = rows.merge(label_ends(candles, horizon), on=["inst_id", "ts"], how="left")
    if rows[LABEL_END].isna().any():  # a target row always has its H-th next candle
        raise ValueError("a labelled row has no H-th next candle: candles and targets disagree")
    return rows.sort_values(["ts", "inst_id"], kind="stable", ignore_index=True)


def retrain_points(end: pd.Timestamp, config: BacktestConfig) -> tuple[pd.Timestamp, ...]:
    """T_k = end - days + k * step, for as many steps as cover the span up to ``end``."""
    count = math.ceil(config.days * 24 / config.step_hours - 1e-9)
    start = end - pd.Timedelta(days=config.days)
    return tuple(start + k * pd.Timedelta(hours=config.step_hours) for k in range(count))


def usable_rows(history: pd.DataFrame, at: pd.Timestamp, training_days: int) -> pd.DataFrame:
    """The rows a live run at ``at`` trains on: label known by then, inside the live window."""
    known = history[LABEL_END] <= at
    inside = history["ts"] >= at - pd.Timedelta(days=training_days)
    return history.loc[known & inside].reset_index(drop=True)


def scored_rows(history: pd.DataFrame, after: pd.Timestamp, until: pd.Timestamp) -> pd.DataFrame:
    """The bars a version trained at ``after`` predicts before the next retrain replaces it."""
    ts = history["ts"]
    return history.loc[(ts > after) & (ts <= until)].reset_index(drop=True)


def refit_whole_window(
    trained: TrainedModel, rows: pd.DataFrame
) -> tuple[object, StandardScaler, dict[str, float]]:
    """A clone of the trained estimator and a new scaler fitted on every usable row (the test
    block too), under the spec's own row cap; the naive constants learned from the same rows."""
    spec = trained.spec
    rows = cap_rows(rows, spec)
    values = rows[list(spec.features)].to_numpy(dtype="float64")
    scaler = StandardScaler().fit(values)
    y = model_target(spec, rows)
    if spec.task == "classification":
        y = y.astype("int64")
        if len(np.unique(y)) < 2:
            raise TrainingDataError(f"{spec.name}: the whole window has a single class")
    estimator = clone(trained.estimator).fit(scaler.transform(values), y)
    return estimator, scaler, naive_constants(spec, y)


def backtest_model(
    trained: TrainedModel,
    rows: pd.DataFrame,
    *,
    at: pd.Timestamp,
    horizon: int,
    config: BacktestConfig,
) -> ServedModel:
    """The version a live run at ``at`` would have served, held in memory only, with the
    outlier reference of the rows it was fitted on."""
    estimator, scaler = trained.estimator, trained.scaler
    constants, reference = trained.naive_constants, trained.reference
    if config.refit_on_whole_window:
        estimator, scaler, constants = refit_whole_window(trained, rows)
        fitted = cap_rows(rows, trained.spec)[list(trained.spec.features)]
        reference = build_reference(
            scaler.transform(fitted.to_numpy(dtype="float64")), trained.spec.features
        )
    return ServedModel(
        name=trained.spec.name,
        version=backtest_version(at, config),
        estimator=estimator,
        scaler=scaler,
        config=model_config(trained.spec, horizon),
        metadata={
            "baseline_kind": trained.evaluation.baseline_name,
            "naive_constants": constants,
            "data_until": at.isoformat(),
            "variant": config.variant,
        },
        reference=reference,
    )


def score_point(
    spec: ModelSpec,
    history: pd.DataFrame,
    db: DuckDBFile,
    *,
    segment: tuple[pd.Timestamp, pd.Timestamp],
    market: MarketSettings,
    config: BacktestConfig,
    scored_at: pd.Timestamp,
) -> tuple[tuple[int, int], int, int]:
    """Train ``spec`` as a live run at ``segment[0]`` would, score its version on the bars up
    to ``segment[1]`` and append the outcomes: ((usable rows, rows fitted), outcomes, of them
    new)."""
    at, until = segment
    rows = usable_rows(history, at, market.training_days)
    try:
        trained = train_model(spec, rows[training_columns(spec)], horizon=market.horizon)
    except ValueError as error:  # TrainingDataError among them
        error.add_note(f"walk-forward backtest: training {spec.name} at {at.isoformat()}")
        raise
    model = backtest_model(trained, rows, at=at, horizon=market.horizon, config=config)
    scored = scored_rows(history, at, until)
    outcomes = outcome_rows(model, scored, mode=BACKTEST, data_until=at, scored_at=scored_at)
    with db.connect() as con:
        added = append_outcomes(con, outcomes)
    fitted = len(cap_rows(rows, spec)) if config.refit_on_whole_window else trained.train_rows
    return (len(rows), fitted), len(outcomes), added


def variant_scores(
    db: DuckDBFile, summary: BacktestSummary, specs: Sequence[ModelSpec] = MODEL_SPECS
) -> dict[str, WindowPerformance]:
    """Each model's forward figures over the outcomes of this run's variant and points."""
    config = BacktestConfig(refit_on_whole_window=summary.variant == "refit")
    versions = {backtest_version(at, config) for at in summary.points}
    with db.connect(read_only=True) as con:
        outcomes = read_outcomes(con, mode=BACKTEST, since=summary.points[0])
    outcomes = outcomes[outcomes["model_version"].isin(versions)]
    figures = assess(outcomes, specs, windows={"all": None})
    return {f.model_name: f for f in figures if (f.mode, f.variant) == (BACKTEST, config.variant)}


def read_history(db: DuckDBFile, market: MarketSettings) -> pd.DataFrame:
    """The stored candles of the configured instruments as labelled rows; read-only, and the
    file is released before any training starts."""
    with db.connect(read_only=True) as con:
        check_clock(con, now=market.now(), bar=market.bar_delta(), as_of=market.as_of)
        candles = read_candles(con, instruments=market.instrument_list())
    if candles.empty:
        raise ValueError("the candles table holds no candles: materialize candles first")
    return labelled_history(candles, market.horizon)


def plan(
    history: pd.DataFrame, config: BacktestConfig
) -> tuple[tuple[pd.Timestamp, ...], pd.Timestamp]:
    """The retrain points and the newest labelled bar; refused when the first point would
    leave nothing to train on."""
    end = history["ts"].max()
    points = retrain_points(end, config)
    first = history["ts"].min()
    if points[0] <= first:
        span = (end - first) / pd.Timedelta(days=1)
        raise ValueError(
            f"the stored candles give {span:.2f} days of labelled rows; a {config.days}-day "
            "backtest needs more (ingest a longer BLOFIN_LOOKBACK_DAYS or ask for fewer days)"
        )
    return points, end


def run_backtest(
    db: DuckDBFile,
    market: MarketSettings,
    config: BacktestConfig = BacktestConfig(),
    *,
    specs: Sequence[ModelSpec] = MODEL_SPECS,
    progress: Callable[[Progress], None] | None = None,
    scored_at: pd.Timestamp | None = None,
) -> BacktestSummary:
    """Retrain every model at every point, score it up to the next one, append the outcomes.

    Idempotent: a re-run scores the same bars with the same deterministic models, and
    append_outcomes stores none of them twice. The file's write lock is taken only for each
    append, so an hourly run can interleave with a long backtest.
    """
    started = time.perf_counter()
    scored_at = scored_at or pd.Timestamp.now(tz="UTC")
    history = read_history(db, market)
    points, end = plan(history, config)
    scored: dict[str, int] = dict.fromkeys((spec.name for spec in specs), 0)
    added = dict(scored)
    for k, at in enumerate(points):
        segment = (at, points[k + 1] if k + 1 < len(points) else end)
        for spec in specs:
            clock = time.perf_counter()
            (usable, fitted), outcomes, new = score_point(
                spec, history, db, segment=segment, market=market, config=config,
                scored_at=scored_at,
            )  # fmt: skip
            scored[spec.name] += outcomes
            added[spec.name] += new
            if progress is not None:
                seconds = time.perf_counter() - clock
                point = Progress(
                    k + 1, len(points), spec.name, at, usable, fitted, outcomes, new, seconds
                )
                progress(point)
    seconds = time.perf_counter() - started
    return BacktestSummary(config.variant, points, end, scored, added, seconds)
