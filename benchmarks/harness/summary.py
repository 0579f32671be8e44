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
from harness.workloads import FEATURES_TARGETS_GOAL, GOALS

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
    """Per model: median fit seconds, test metric, baseline and skill; every status seen."""

    def of(name: str, field: str) -> float:
        return median([r["models"][name][field] for r in records])

    return {
        name: {
            "train_seconds": of(name, "train_seconds"),
            "primary_metric": records[0]["models"][name]["primary_metric"],
            "primary_value": of(name, "primary_value"),
            "baseline_value": of(name, "baseline_value"),
            "skill": of(name, "skill"),
            "status": sorted({r["models"][name]["status"] for r in records}),
        }
        for name in records[0]["models"]
    }


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
        "models": model_medians(records),
        **phase_medians(records),
        "run_seconds_all": [r["run_seconds"] for r in records],
        "max_loadavg_1m": max(max(r["loadavg_before"][0], r["loadavg_after"][0]) for r in records),
    }
    if "code" in first:  # runs of another checkout, labelled by hand
        summary["code"] = first["code"]
    summary["goals"] = goal_verdicts(summary)
    return summary


def scaling_goal(summaries: dict[str, Record]) -> Record | None:
    """time(M)/time(S) <= rows(M)/rows(S), when both ran in this invocation."""
    if "S" not in summaries or "M" not in summaries:
        return None
    time_ratio = summaries["M"]["run_seconds"] / summaries["S"]["run_seconds"]
    row_ratio = summaries["M"]["rows"] / summaries["S"]["rows"]
    return {
        "kind": "scaling",
        "time_ratio_M_over_S": round(time_ratio, 3),
        "row_ratio_M_over_S": round(row_ratio, 3),
        "goal": "PASS" if time_ratio <= row_ratio else "FAIL",
    }


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
