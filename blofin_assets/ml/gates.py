"""Verdicts on a freshly trained candidate, decided before anything is served.

They are plain functions so they are tested without Dagster; the model assets turn them into
asset check results. An ERROR verdict keeps the candidate out of serving.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from blofin_assets.ml.training import TrainedModel
from blofin_assets.ml.verdict import Verdict

REGRESSION_HISTORY = 5
# Both train and test above this on the same metric: the label is visible in the features.
PERFECT_SCORE = 0.99


def leakage_gate(model: TrainedModel) -> Verdict:
    """A score too good for this target is a bug until proven otherwise."""
    spec = model.spec
    test = model.evaluation.metrics
    reasons = [
        f"test {metric} = {test[metric]:.4f} > plausible limit {limit}"
        for metric, limit in spec.leakage_limits.items()
        if metric in test and test[metric] > limit
    ]
    score = "accuracy" if spec.task == "classification" else "r2"
    if model.train_metrics[score] >= PERFECT_SCORE and test[score] >= PERFECT_SCORE:
        reasons.append(
            f"train {score} = {model.train_metrics[score]:.4f} and test {score} = "
            f"{test[score]:.4f}: both near perfect"
        )
    metadata = {
        **{f"test_{k}": v for k, v in test.items()},
        **{f"train_{k}": v for k, v in model.train_metrics.items()},
        "limits": dict(spec.leakage_limits),
    }
    if reasons:
        return Verdict(
            "leakage_alarm",
            False,
            "ERROR",
            "Implausible score, likely LEAKAGE (a feature computed from the future, a shuffled "
            "split or a label among the features): " + "; ".join(reasons),
            metadata,
        )
    return Verdict("leakage_alarm", True, "ERROR", "Scores are in a plausible range.", metadata)


def skill_gate(model: TrainedModel) -> Verdict:
    """Beats the strongest naive rule on the test rows, beyond noise? Reported (WARN); a
    model that does not may still be served, and says so."""
    evaluation = model.evaluation
    comparison = evaluation.comparison
    p_value = comparison.p_value if comparison is not None else float("nan")
    metadata = {
        "primary_metric": evaluation.primary_metric,
        "model_value": evaluation.primary_value,
        "baseline_value": evaluation.baseline_value,
        "skill": evaluation.skill,
        "baseline": evaluation.baseline_name,
        "skill_by_baseline": evaluation.skills(),
        "p_value": p_value,
    }
    beats = evaluation.beats_baseline_beyond_noise
    if beats:
        verdict = "beats"
    elif evaluation.skill > 0:
        verdict = "is not shown to beat (skill within noise)"
    else:
        verdict = "does not beat"
    # The ensemble's bar includes its members' own calls (ml/ensemble.py names them member_*).
    bar = "rule or member" if evaluation.baseline_name.startswith("member_") else "naive rule"
    return Verdict(
        "beats_baseline",
        beats,
        "WARN",
        f"{model.spec.name} {verdict} the strongest {bar} on the test rows "
        f"({evaluation.baseline_name}): {evaluation.primary_metric} "
        f"{evaluation.primary_value:.6g} vs {evaluation.baseline_value:.6g}, skill "
        f"{evaluation.skill:+.4f}, one-sided p = {p_value:.3g} (Diebold-Mariano, HAC)",
        metadata,
    )


def regression_gate(
    model: TrainedModel, promoted_skills: Sequence[float], *, history: int = REGRESSION_HISTORY
) -> Verdict:
    """Compare skill over baseline with the median of the last promoted versions.

    Skill (not the raw metric) is compared because raw errors move with the market's volatility
    regime; skill over the strongest rule on the same rows does not. ``promoted_skills`` must
    come from versions of the same target definition (target, horizon, baselines): a skill
    against another horizon's label is another number.
    """
    spec = model.spec
    recent = [s for s in promoted_skills if s == s][:history]  # newest first, NaN dropped
    metadata: dict[str, Any] = {
        "skill": model.evaluation.skill,
        "history_versions": len(recent),
        "warn_drop": spec.regression_warn_drop,
        "error_drop": spec.regression_error_drop,
    }
    if not recent:
        return Verdict(
            "metric_regression",
            True,
            "ERROR",
            "No promoted history yet: nothing to regress.",
            metadata,
        )
    median = statistics.median(recent)
    drop = median - model.evaluation.skill
    metadata.update({"history_median_skill": median, "skill_drop": drop})
    if drop > spec.regression_error_drop:
        return Verdict(
            "metric_regression",
            False,
            "ERROR",
            f"Skill fell by {drop:.4f} (from median {median:.4f} of the last {len(recent)} "
            f"promoted versions to {model.evaluation.skill:.4f}), more than the allowed "
            f"{spec.regression_error_drop}.",
            metadata,
        )
    if drop > spec.regression_warn_drop:
        return Verdict(
            "metric_regression",
            False,
            "WARN",
            f"Skill fell by {drop:.4f} (median {median:.4f} -> {model.evaluation.skill:.4f}), "
            f"more than the warning threshold {spec.regression_warn_drop}.",
            metadata,
        )
    return Verdict(
        "metric_regression",
        True,
        "ERROR",
        f"Skill {model.evaluation.skill:.4f} within {spec.regression_warn_drop} of the median "
        f"{median:.4f} of the last {len(recent)} promoted versions.",
        metadata,
    )
