"""Forward performance: each model's scored predictions against its baseline, per window.

The figures are those the model was promoted on (its primary metric, the same baseline,
skill, the overlap-aware Diebold-Mariano test), now measured on bars no version saw when it
was trained, over the last 24 hours, the last 7 days and everything, where each window ends at
the newest outcome of its mode. Backtest outcomes are kept apart by variant (trained on the
training block, or refitted on the whole window), because both variants score the same bars.
The shadow record (mode 'shadow', variant 'rejected': versions that were not served, e.g. the
ensemble while it does not beat its members) gets the same windows, ending at its own newest
outcome, so its figures stand beside the served models' live ones and are never mixed in.

One row per bar and instrument: should two versions have scored one bar, the one with the
newer ``data_until`` counts (the version that was serving then), so no bar is counted twice.
Only rows of the newest horizon count: labels of another horizon are another target.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import norm

from blofin_assets.forward.calibration import ProbabilityScores, probability_scores
from blofin_assets.ml.baselines import COIN_FLIP_ROW_LOSS
from blofin_assets.ml.metrics import row_losses, skill_score
from blofin_assets.ml.significance import Comparison, diebold_mariano, overlap_lag
from blofin_assets.ml.specs import ModelSpec
from blofin_assets.ml.target_space import in_model_space

WINDOWS: dict[str, pd.Timedelta | None] = {
    "24h": pd.Timedelta(hours=24),
    "7d": pd.Timedelta(days=7),
    "all": None,
}
LIVE_VARIANT = "served"
SHADOW_MODE = "shadow"
SHADOW_VARIANT = "rejected"  # the shadow record scores versions that were not served
# The coin flip has no point forecast: its loss on accuracy is its expectation, one half.
KEY = ["model_name", "mode", "variant", "inst_id", "ts"]

VersionKey = tuple[str, str]  # (model_name, model_version)


@dataclass(frozen=True)
class WindowPerformance:
    model_name: str
    mode: str  # 'live', 'backtest' or 'shadow'
    variant: str  # 'served' (live), 'train-block' or 'refit' (backtest), 'rejected' (shadow)
    window: str  # a key of WINDOWS
    window_start: pd.Timestamp | None  # exclusive: rows with ts > start
    window_end: pd.Timestamp | None
    first_ts: pd.Timestamp | None  # the oldest scored bar inside: how far back the record goes
    n: int  # scored predictions (bar x instrument)
    instruments: int
    versions: int
    horizon: int | None
    hac_lag: int | None
    primary_metric: str
    model_value: float
    baseline_value: float
    baseline_names: str  # the rules the window's versions were judged against
    skill: float
    mean_loss_difference: float  # baseline loss - model loss per row: > 0 favours the model
    dm_statistic: float
    p_value: float  # one-sided: the model's loss is lower than the baseline's
    p_value_worse: float  # one-sided the other way: the baseline's loss is lower
    beats_baseline_beyond_noise: bool
    # Row-weighted mean of ml_model_results.skill of the versions that made the window's
    # predictions: what they promised at promotion. NaN when none is recorded (backtests).
    promotion_skill: float
    probability: ProbabilityScores | None = field(default=None)  # direction_predictor only

    def figures(self) -> dict[str, object]:
        """Flat, for the forward_performance table."""
        row = {name: getattr(self, name) for name in self.__dataclass_fields__}
        row.pop("probability")
        scores = self.probability or ProbabilityScores.empty()
        return row | scores.figures()


def variant_of(mode: str, model_version: str) -> str:
    if mode == "live":
        return LIVE_VARIANT
    if mode == SHADOW_MODE:
        return SHADOW_VARIANT
    return "refit" if model_version.startswith("backtest-refit") else "train-block"


def utc_series(values: pd.Series) -> pd.Series:
    """A time column in UTC; converting an aware column's zone is free, parsing is not."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    return pd.to_datetime(values, utc=True)


def scored_rows(outcomes: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, mode, variant, instrument, bar), sorted by (ts, inst_id)."""
    if outcomes.empty:
        return outcomes.assign(variant=pd.Series(dtype=str))
    rows = outcomes.assign(
        ts=utc_series(outcomes["ts"]),
        data_until=utc_series(outcomes["data_until"]),
        variant=[
            variant_of(mode, version)
            for mode, version in zip(outcomes["mode"], outcomes["model_version"], strict=True)
        ],
    )
    rows = rows.sort_values([*KEY, "data_until", "model_version"])
    rows = rows.drop_duplicates(KEY, keep="last")
    return rows.sort_values(["ts", "inst_id"], kind="stable").reset_index(drop=True)


def window_rows(
    rows: pd.DataFrame, end: pd.Timestamp | None, span: pd.Timedelta | None
) -> pd.DataFrame:
    """The rows with ``end - span < ts <= end``; every row when ``span`` is None."""
    if span is None or end is None:
        return rows
    return rows[(rows["ts"] > end - span) & (rows["ts"] <= end)]


def newest_horizon(rows: pd.DataFrame) -> pd.DataFrame:
    if rows.empty:
        return rows
    return rows[rows["horizon"] == rows["horizon"].iloc[-1]]


def primary_losses(spec: ModelSpec, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (model loss, baseline loss) on the spec's primary metric, in the space the
    model was judged in at training: prices as log returns from the bar's close."""
    metric = spec.primary_metric
    if spec.task == "classification":
        realized = rows["realized"].to_numpy(dtype="float64")
        model = row_losses(metric, realized, rows["prediction"].to_numpy(dtype="float64"))
        baseline = row_losses(metric, realized, rows["baseline"].to_numpy(dtype="float64"))
        coin = (rows["baseline_name"] == "coin_flip").to_numpy()
        return model, np.where(coin, COIN_FLIP_ROW_LOSS, baseline)
    realized = in_model_space(spec, rows["realized"].to_numpy(dtype="float64"), rows)
    model = in_model_space(spec, rows["prediction"].to_numpy(dtype="float64"), rows)
    baseline = in_model_space(spec, rows["baseline"].to_numpy(dtype="float64"), rows)
    return row_losses(metric, realized, model), row_losses(metric, realized, baseline)


def metric_value(metric: str, losses: np.ndarray) -> float:
    """The metric whose per-row losses these are (row_losses' inverse on the mean)."""
    if not len(losses):
        return float("nan")
    if metric == "accuracy":
        return float(1.0 - losses.mean())
    if metric == "rmse":
        return float(np.sqrt(losses.mean()))
    return float(losses.mean())


def p_value_worse(comparison: Comparison) -> float:
    """One-sided p-value that the baseline's loss is lower (the model is worse)."""
    if comparison.rows < 2 or not np.isfinite(comparison.mean_loss_difference):
        return 1.0
    if not np.isfinite(comparison.statistic):  # no variation: worse on every row, or not
        return 0.0 if comparison.mean_loss_difference < 0 else 1.0
    return float(norm.cdf(comparison.statistic))


def promised_skill(rows: pd.DataFrame, promotion_skills: Mapping[VersionKey, float]) -> float:
    skills = [
        promotion_skills.get((name, version), float("nan"))
        for name, version in zip(rows["model_name"], rows["model_version"], strict=True)
    ]
    values = np.asarray(skills, dtype="float64")
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def has_probability(rows: pd.DataFrame) -> bool:
    return bool(len(rows)) and bool(rows["probability"].notna().any())


def assess_window(
    spec: ModelSpec,
    rows: pd.DataFrame,
    *,
    labels: tuple[str, str, str],
    bounds: tuple[pd.Timestamp | None, pd.Timestamp | None],
    base_rates: Mapping[VersionKey, float],
    promotion_skills: Mapping[VersionKey, float],
) -> WindowPerformance:
    """One model's figures on one window's rows (already one per bar, sorted by ts)."""
    mode, variant, window = labels
    rows = newest_horizon(rows)
    horizon = int(rows["horizon"].iloc[-1]) if len(rows) else None
    instruments = int(rows["inst_id"].nunique())
    model_loss, baseline_loss = primary_losses(spec, rows)
    lag = overlap_lag(horizon, instruments) if horizon is not None else None
    comparison = diebold_mariano(model_loss, baseline_loss, lag or 1)
    model_value = metric_value(spec.primary_metric, model_loss)
    baseline_value = metric_value(spec.primary_metric, baseline_loss)
    skill = skill_score(spec.primary_metric, model_value, baseline_value)  # NaN on no rows
    return WindowPerformance(
        model_name=spec.name,
        mode=mode,
        variant=variant,
        window=window,
        window_start=bounds[0],
        window_end=bounds[1],
        first_ts=rows["ts"].min() if len(rows) else None,
        n=len(rows),
        instruments=instruments,
        versions=int(rows["model_version"].nunique()),
        horizon=horizon,
        hac_lag=lag,
        primary_metric=spec.primary_metric,
        model_value=model_value,
        baseline_value=baseline_value,
        baseline_names=", ".join(sorted(set(rows["baseline_name"]))),
        skill=float(skill),
        mean_loss_difference=comparison.mean_loss_difference,
        dm_statistic=comparison.statistic,
        p_value=comparison.p_value,
        p_value_worse=p_value_worse(comparison),
        beats_baseline_beyond_noise=bool(skill > 0 and comparison.significant),
        promotion_skill=promised_skill(rows, promotion_skills),
        probability=probability_scores(rows, base_rates) if has_probability(rows) else None,
    )


def assess(
    outcomes: pd.DataFrame,
    specs: Sequence[ModelSpec],
    *,
    base_rates: Mapping[VersionKey, float] | None = None,
    promotion_skills: Mapping[VersionKey, float] | None = None,
    windows: Mapping[str, pd.Timedelta | None] = WINDOWS,
    shadow_models: Sequence[str] = (),
) -> list[WindowPerformance]:
    """Every model's figures per (mode, variant) and window; live is always reported, with
    n = 0 while it has no outcomes, so its figures exist (as NaN) from the first run. The
    shadow track likewise for ``shadow_models``, and only for the models it is kept for (or
    that have shadow rows): the others never have one.

    ``base_rates``: each direction version's training share of ups (its naive_constants);
    ``promotion_skills``: each version's ml_model_results.skill."""
    rows = scored_rows(outcomes)
    tracks = {("live", LIVE_VARIANT)} | set(zip(rows["mode"], rows["variant"], strict=True))
    if shadow_models:
        tracks.add((SHADOW_MODE, SHADOW_VARIANT))
    results = []
    for mode, variant in sorted(tracks, key=lambda track: (track[0] != "live", track)):
        track = rows[(rows["mode"] == mode) & (rows["variant"] == variant)]
        end = track["ts"].max() if len(track) else None
        shadowed = set(shadow_models) | set(track["model_name"])
        for spec in specs:
            if mode == SHADOW_MODE and spec.name not in shadowed:
                continue
            mine = track[track["model_name"] == spec.name]
            for window, span in windows.items():
                results.append(
                    assess_window(
                        spec,
                        window_rows(mine, end, span),
                        labels=(mode, variant, window),
                        bounds=(end - span if span is not None and end is not None else None, end),
                        base_rates=base_rates or {},
                        promotion_skills=promotion_skills or {},
                    )
                )
    return results
