"""What a person reads about one model version: the answer first (status, what is served, skill
over the strongest naive rule, the metric in its unit beside the rule's), then the detail.

Built from a version's metadata.json, so the Dagster page, the run summary and any other reader
say the same thing in the same words; the Dagster floor only wraps these strings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from blofin_assets.ml.metrics import strongest_baseline

RULES: dict[str, str] = {
    "majority_class": "the training block's majority class",
    "coin_flip": "a fair coin",
    "base_rate": "the training share of ups as the probability",
    "training_mean": "the training block's mean",
    "naive_direction_last_h": "the direction of the last H bars",
    "naive_direction_last_bar": "the direction of the last bar",
    "naive_momentum_zero_forward": "the class a zero forward return implies",
    "naive_risk": "persistence: the last H bars' risk",
    "naive_risk_level": "the day level 50",
    "naive_volatility": "persistence: the last H bars' volatility",
    "naive_volatility_level": "the trailing day level",
    "naive_price": "a zero return (price stays put)",
}
METRIC_NAMES = {
    "accuracy": "accuracy",
    "f1": "F1",
    "precision": "precision",
    "recall": "recall",
    "log_loss": "log loss",
    "brier": "Brier score",
    "mae": "MAE",
    "rmse": "RMSE",
    "r2": "R²",
}


def number(value: float | None) -> str:
    """Four significant digits, never sixteen; 'n/a' for a missing or undefined value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4g}"


def signed(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:+.3f}"


def p_value_text(p_value: float | None) -> str:
    if p_value is None or math.isnan(p_value):
        return "n/a"
    return f"{p_value:.2g}"


def rule_text(name: str) -> str:
    described = RULES.get(name)
    return f"{name} ({described})" if described else name


def beyond_noise(metadata: Mapping[str, Any]) -> bool:
    """The skill gate's own verdict, as recorded with the version: one rule, one place."""
    return bool(metadata.get("checks", {}).get("beats_baseline", {}).get("passed", False))


def status_text(metadata: Mapping[str, Any], served_version: str | None) -> str:
    """Promoted or rejected, and what a consumer of the served files gets either way."""
    status = metadata.get("status", "unknown")
    if status == "promoted" and served_version == metadata.get("version"):
        return "promoted: this version is served"
    served = served_version or "no version"
    return f"{status}: {served} stays served ({metadata.get('status_reason', 'no reason')})"


def metric_text(metadata: Mapping[str, Any], value: float | None = None) -> str:
    """'MAE 13.83 (risk score points (0-100))': a figure is never shown without its unit."""
    metric = metadata.get("primary_metric", "")
    units = metadata.get("metric_units", {})
    shown = metadata.get("primary_value") if value is None else value
    unit = units.get(metric)
    return f"{METRIC_NAMES.get(metric, metric)} {number(shown)}" + (f" ({unit})" if unit else "")


def baseline_text(metadata: Mapping[str, Any]) -> str:
    metric = metadata.get("primary_metric", "")
    rule = metadata.get("baseline_kind", "")
    return (
        f"{METRIC_NAMES.get(metric, metric)} {number(metadata.get('baseline_value'))} for "
        f"{rule_text(rule)}, the strongest naive rule on the same test rows"
    )


def skill_text(metadata: Mapping[str, Any]) -> str:
    """Skill, over which rule, and whether it is beyond noise, in one sentence."""
    verdict = "beyond noise" if beyond_noise(metadata) else "not beyond noise"
    return (
        f"{signed(metadata.get('skill'))} over {metadata.get('baseline_kind', '?')}: {verdict} "
        f"(one-sided Diebold-Mariano p = {p_value_text(metadata.get('skill_p_value'))}; "
        "0 = no better than the rule, 1 = perfect)"
    )


def data_window_text(metadata: Mapping[str, Any]) -> str:
    window = metadata.get("data_window", {})
    if not window:
        return "unknown"
    return (
        f"train {window['start']} .. {window['train_end']}, purge {window['purge_bars']} bars, "
        f"test {window['test_start']} .. {window['end']}"
    )


def metrics_markdown(metadata: Mapping[str, Any]) -> str:
    """Train and test side by side, with the strongest rule's test value and the unit."""
    test = metadata.get("metrics", {})
    train = metadata.get("train_metrics", {})
    baselines = metadata.get("baselines", {})
    units = metadata.get("metric_units", {})
    lines = [
        "| metric | unit | train | test | strongest rule on the test rows |",
        "| --- | --- | --- | --- | --- |",
    ]
    for metric, value in test.items():
        best = strongest_baseline(baselines, metric)
        rule = f"{number(baselines[best][metric])} ({best})" if best else ""
        lines.append(
            f"| {METRIC_NAMES.get(metric, metric)} | {units.get(metric, '')} | "
            f"{number(train.get(metric))} | {number(value)} | {rule} |"
        )
    return "\n".join(lines)


def baselines_markdown(metadata: Mapping[str, Any]) -> str:
    """Every naive rule's test metrics beside the model's, the strongest one marked."""
    test = metadata.get("metrics", {})
    metrics = list(test)
    strongest = metadata.get("baseline_kind")
    header = ["rule", *(METRIC_NAMES.get(m, m) for m in metrics)]
    rows = [["**model**", *(number(test[m]) for m in metrics)]]
    for name, values in metadata.get("baselines", {}).items():
        label = f"**{rule_text(name)}** (strongest)" if name == strongest else rule_text(name)
        rows.append([label, *(number(values[m]) if m in values else "" for m in metrics)])
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])
