"""live_skill: is a served model still better than its baseline on the bars it predicted?

ERROR when over the last 7 days its skill is below zero beyond noise (the one-sided
Diebold-Mariano test that the *baseline* is better, HAC over the label overlap): a week of
evidence that acting on it is worse than acting on the naive rule, so only once the live
record reaches back most of the week (ModelSpec.live_error_days). WARN when over the last
24 hours the skill is below zero beyond noise, or far below what its versions promised at
promotion (ml_model_results.skill, row-weighted over the versions that served). A window
with fewer than the spec's minimum of scored predictions is not judged. The thresholds live
in the spec table (ModelSpec.live_min_predictions, live_skill_margin, live_error_days).
"""

from __future__ import annotations

import math

import pandas as pd

from blofin_assets.ml.significance import SIGNIFICANCE_LEVEL
from blofin_assets.ml.specs import ModelSpec
from blofin_assets.ml.verdict import Severity, Verdict

CHECK_NAME = "live_skill"


def live_row(latest: pd.DataFrame, model_name: str, window: str) -> pd.Series | None:
    """The live (served) row of ``model_name`` and ``window`` in forward_performance rows."""
    if latest.empty:
        return None
    match = latest[
        (latest["model_name"] == model_name)
        & (latest["mode"] == "live")
        & (latest["variant"] == "served")
        & (latest["window"] == window)
    ]
    return None if match.empty else match.iloc[-1]


def worse_beyond_noise(row: pd.Series | None, minimum: int) -> bool:
    if row is None or int(row["n"]) < minimum:
        return False
    worse = float(row["p_value_worse"])
    return bool(float(row["skill"]) < 0 and worse < SIGNIFICANCE_LEVEL)


def covers(row: pd.Series | None, days: float) -> bool:
    """Whether the window's outcomes reach back ``days`` from its end."""
    if row is None or pd.isna(row["first_ts"]) or pd.isna(row["window_end"]):
        return False
    return bool(
        pd.Timestamp(row["window_end"]) - pd.Timestamp(row["first_ts"]) >= pd.Timedelta(days=days)
    )


def described(row: pd.Series | None, window: str) -> str:
    if row is None or int(row["n"]) == 0:
        return f"{window}: no live outcomes"
    return (
        f"{window}: skill {float(row['skill']):+.4f} on {int(row['n'])} predictions "
        f"(p better {float(row['p_value']):.3g}, p worse {float(row['p_value_worse']):.3g})"
    )


def far_below_promise(row: pd.Series | None, spec: ModelSpec) -> bool:
    if row is None or int(row["n"]) < spec.live_min_predictions:
        return False
    promised = float(row["promotion_skill"])
    skill = float(row["skill"])
    return math.isfinite(promised) and skill < promised - spec.live_skill_margin


def live_skill(spec: ModelSpec, latest: pd.DataFrame) -> Verdict:
    """The verdict on ``spec``'s model from the newest forward_performance rows."""
    day = live_row(latest, spec.name, "24h")
    week = live_row(latest, spec.name, "7d")
    minimum = spec.live_min_predictions
    summary = f"{described(day, '24h')}; {described(week, '7d')}"
    metadata = {
        "skill_24h": float(day["skill"]) if day is not None else float("nan"),
        "n_24h": int(day["n"]) if day is not None else 0,
        "skill_7d": float(week["skill"]) if week is not None else float("nan"),
        "n_7d": int(week["n"]) if week is not None else 0,
        "promotion_skill": float(day["promotion_skill"]) if day is not None else float("nan"),
        "min_predictions": minimum,
        "margin": spec.live_skill_margin,
    }

    def verdict(passed: bool, severity: Severity, reason: str) -> Verdict:
        return Verdict(CHECK_NAME, passed, severity, f"{reason} ({summary})", metadata)

    if worse_beyond_noise(week, minimum) and covers(week, spec.live_error_days):
        return verdict(False, "ERROR", "below its baseline beyond noise over 7 days")
    if worse_beyond_noise(day, minimum):
        return verdict(False, "WARN", "below its baseline beyond noise over the last 24 h")
    if far_below_promise(day, spec):
        promised = metadata["promotion_skill"]
        return verdict(
            False,
            "WARN",
            f"24 h skill more than {spec.live_skill_margin} below the {promised:+.4f} "
            "measured at promotion",
        )
    if day is None or int(day["n"]) < minimum:
        return verdict(True, "WARN", f"not judged: fewer than {minimum} scored predictions in 24 h")
    return verdict(True, "WARN", "not below its baseline beyond noise, nor far below its promise")
