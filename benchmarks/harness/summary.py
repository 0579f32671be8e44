"""The parent's lines: the machine, per workload the medians over its repeats with PASS/FAIL
against the goals, and the S-to-M scaling goal."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import statistics
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from harness.dagster_runs import DERIVED, PHASE_RUNS, PHASES
from harness.workloads import FEATURES_TARGETS_GOAL, GOALS, SCALING_GOALS, STEP_OVER_FIT_GOAL

Record = dict[str, Any]

MEDIAN_FIELDS = (
    "run_seconds",
    "cpu_seconds_process_total",
    "peak_rss_mb",
    "dagster_overhead_seconds",
    "overhead_share",
    "step_bookkeeping_seconds",
    "features_rows_per_s",
    "targets_rows_per_s",
    "features_targets_rows_per_s",
    "features_targets_compute_rows_per_s",
    "hourly_run_seconds",
    "hourly_features_targets_seconds",
    "hourly_features_targets_window_rows_per_s",
    "incremental_run_seconds",
    "incremental_candles_step_seconds",
)
# The schedule's run is the hourly one; the first build's rates are reported beside it.
RATE_GOALS = (
    "hourly_features_targets_window_rows_per_s",
    "features_targets_compute_rows_per_s",
    "features_targets_rows_per_s",
)
PACKAGES = (
    "dagster",
    "scikit-learn",
    "xgboost",
    "xgboost-cpu",
    "duckdb",
    "pandas",
    "numpy",
    "TA-Lib",
)


def median(values: list[float]) -> float:
    """Median to 4 significant digits (metric values such as an MAE of 7e-4 stay readable)."""
    return float(f"{statistics.median(values):.4g}")


def phase_medians(records: list[Record]) -> dict[str, dict[str, dict[str, float]]]:
    """Median seconds per features/targets phase, for each run kind every record reports."""
    return {
        run: {
            name: {phase: median([r[run][name][phase] for r in records]) for phase in PHASES}
            for name in DERIVED
        }
        for run in PHASE_RUNS
        if records and all(run in r for r in records)
    }


def model_medians(records: list[Record]) -> dict[str, dict[str, Any]]:
    """Per model: median fit and step seconds and their ratio (first build, and hourly run
    where the lines have it), test metric, baseline and skill; every status seen."""

    def of(name: str, field: str, run: str = "models") -> float | None:
        values = [r[run][name].get(field) for r in records if run in r]
        values = [v for v in values if v is not None]
        return median(values) if values else None

    return {
        name: {
            "train_seconds": of(name, "train_seconds"),
            "step_seconds": of(name, "step_seconds"),
            "step_over_fit": of(name, "step_over_fit"),
            "hourly_train_seconds": of(name, "train_seconds", "hourly_models"),
            "hourly_step_seconds": of(name, "step_seconds", "hourly_models"),
            "hourly_step_over_fit": of(name, "step_over_fit", "hourly_models"),
            "primary_metric": records[0]["models"][name]["primary_metric"],
            "primary_value": of(name, "primary_value"),
            "baseline_value": of(name, "baseline_value"),
            "skill": of(name, "skill"),
            "status": sorted({r["models"][name]["status"] for r in records}),
        }
        for name in records[0]["models"]
    }


def step_medians(records: list[Record], field: str) -> dict[str, float]:
    """Median per step key of a per-step field (seconds, peak RSS); steps without a value in
    a line (shorter than one RSS sample, or lines from before the field) are left out."""
    keys = dict.fromkeys(key for r in records for key in r.get(field) or {})
    found = {key: [r[field][key] for r in records if (r.get(field) or {}).get(key) is not None]
             for key in keys}  # fmt: skip
    return {key: median(values) for key, values in found.items() if values}


def goal_verdicts(summary: Record) -> dict[str, str]:
    """PASS/FAIL of the workload's goals and of the features + targets rate goal."""
    goals: dict[str, str] = {}
    for key, limit in GOALS.get(summary["workload"], {}).items():
        strict = key == "incremental_run_seconds"  # "< 2 s"; the others are "<="
        passed = summary[key] < limit if strict else summary[key] <= limit
        goals[f"{key} {'<' if strict else '<='} {limit:g}"] = "PASS" if passed else "FAIL"
    for key in RATE_GOALS:
        passed = summary[key] >= FEATURES_TARGETS_GOAL
        goals[f"{key} >= {FEATURES_TARGETS_GOAL:g}"] = "PASS" if passed else "FAIL"
    for name, model in summary["models"].items():
        ratio = model.get("hourly_step_over_fit")
        if ratio is not None:
            passed = ratio <= STEP_OVER_FIT_GOAL
            goals[f"hourly {name} step/fit <= {STEP_OVER_FIT_GOAL:g}"] = (
                "PASS" if passed else "FAIL"
            )
    return goals


def summarize(records: list[Record]) -> Record:
    """Medians over the repeats of one workload, and PASS/FAIL against the goals."""
    first = records[0]
    summary: Record = {
        "kind": "summary",
        **{key: first[key] for key in ("workload", "executor", "source", "rows", "instruments")},
        "env_overrides": first.get("env_overrides", {}),
        "runs": len(records),
        "bar": first["bar"],
        "days": first["days"],
        "training_days": first.get("training_days", first["days"]),
        **{key: median([r[key] for r in records]) for key in MEDIAN_FIELDS},
        "asset_seconds": {
            name: median([r["asset_seconds"][name] for r in records])
            for name in first["asset_seconds"]
        },
        "check_seconds": median([r["check_seconds"] for r in records]),
        "step_seconds": step_medians(records, "steps"),
        "hourly_step_seconds": step_medians(records, "hourly_steps"),
        "step_peak_rss_mb": step_medians(records, "step_peak_rss_mb"),
        "hourly_step_peak_rss_mb": step_medians(records, "hourly_step_peak_rss_mb"),
        "step_cpu_seconds": step_medians(records, "step_cpu_seconds"),
        "hourly_step_cpu_seconds": step_medians(records, "hourly_step_cpu_seconds"),
        "models": model_medians(records),
        **phase_medians(records),
        "run_seconds_all": [r["run_seconds"] for r in records],
        "max_loadavg_1m": max(max(loads_1m(r)) for r in records),
    }
    if "code" in first:  # runs of another checkout, labelled by hand
        summary["code"] = first["code"]
    summary["goals"] = goal_verdicts(summary)
    return summary


def loads_1m(record: Record) -> list[float]:
    """Every 1-minute load average a run line carries (around the child, at each run)."""
    at_start = record.get("loadavg_at_start") or {}
    return [record["loadavg_before"][0], record["loadavg_after"][0]] + [
        load[0] for load in at_start.values()
    ]


def scaling_goals(summaries: dict[str, Record]) -> list[Record]:
    """time(larger)/time(smaller) against its limit (the row ratio where SCALING_GOALS says
    None), for each pair of SCALING_GOALS that ran in this invocation."""
    lines = []
    for smaller, larger, metric, limit in SCALING_GOALS:
        if smaller not in summaries or larger not in summaries:
            continue
        time_ratio = summaries[larger][metric] / summaries[smaller][metric]
        row_ratio = summaries[larger]["rows"] / summaries[smaller]["rows"]
        bound = row_ratio if limit is None else limit
        lines.append(
            {
                "kind": "scaling",
                "smaller": smaller,
                "larger": larger,
                "metric": metric,
                "time_ratio": round(time_ratio, 3),
                "row_ratio": round(row_ratio, 3),
                "limit": round(bound, 3),
                "goal": "PASS" if time_ratio <= bound else "FAIL",
            }
        )
    return lines


def machine() -> Record:
    """The machine and package versions the lines after it were measured with."""
    cpu = "unknown"
    with Path("/proc/cpuinfo").open() as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with Path("/proc/meminfo").open() as info:
        mem_kb = int(next(line for line in info if line.startswith("MemTotal")).split()[1])
    versions = {}
    for package in PACKAGES:
        with suppress(md.PackageNotFoundError):
            versions[package] = md.version(package)
    return {
        "kind": "machine",
        "nproc": os.cpu_count(),
        "ram_gb": round(mem_kb / 1024**2, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
