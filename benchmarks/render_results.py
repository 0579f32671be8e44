"""Render the JSON lines of ``run_benchmark.py`` as the markdown tables of RESULTS.md.

Usage::

    python benchmarks/render_results.py benchmarks/results/latest.jsonl > tables.md
    python benchmarks/render_results.py benchmarks/results/raw/*.jsonl

Every summary line becomes a column of the main table; every run line a row of the per-run
table; model skill comes from the summaries (medians). Runs that no summary line follows (runs
of two checkouts interleaved by hand, labelled by a ``code`` field) are summarized here, one
column per workload, executor and code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from harness.dagster_runs import PHASE_RUNS  # this directory, beside this script
from harness.summary import phase_medians, summarize


def load(paths: list[str]) -> list[dict[str, Any]]:
    records = []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                records.append(json.loads(line))
    return records


def label(summary: dict[str, Any]) -> str:
    extra = summary.get("env_overrides") or {}
    env = "".join(f" {k}={v}" for k, v in extra.items())
    code = f" at {summary['code'].split()[0]}" if summary.get("code") else ""
    return f"{summary['workload']} {summary['executor']}{env} ({summary['source']}){code}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def number(value: Any, digits: int = 1) -> str:
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def main_table(summaries: list[dict[str, Any]]) -> str:
    metrics = [
        ("runs", "runs", 0),
        ("rows", "candles", 0),
        ("run_seconds", "whole run, s (median)", 1),
        ("cpu_seconds_process_total", "CPU s of the run process", 1),
        ("peak_rss_mb", "peak RSS, MB", 0),
        ("dagster_overhead_seconds", "Dagster overhead, s", 2),
        ("overhead_share", "overhead share of run", 3),
        ("features_targets_rows_per_s", "first build: features+targets, candles/s", 0),
        (
            "features_targets_compute_rows_per_s",
            "first build: features+targets compute only, candles/s",
            0,
        ),
        ("features_rows_per_s", "features, candles/s", 0),
        ("targets_rows_per_s", "targets, candles/s", 0),
        ("hourly_run_seconds", "hourly run (whole job, +60 min), s", 1),
        ("hourly_features_targets_seconds", "hourly run: features+targets steps, s", 3),
        (
            "hourly_features_targets_window_rows_per_s",
            "hourly run: window candles kept current / s",
            0,
        ),
        ("incremental_run_seconds", "incremental candles run, s", 2),
        ("incremental_candles_step_seconds", "incremental candles step, s", 2),
        ("max_loadavg_1m", "max 1-min load seen", 1),
    ]
    rows = [
        [name] + [number(s.get(key, "n/a"), digits) for s in summaries]
        for key, name, digits in metrics
    ]
    for run, title in zip(PHASE_RUNS, ("first build", "hourly run"), strict=True):
        for asset in ("features", "targets"):
            rows.append(
                [f"{title}: `{asset}` check / read / compute / write, s"]
                + [
                    " / ".join(f"{v:.3f}" for v in s[run][asset].values()) if run in s else "n/a"
                    for s in summaries
                ]
            )
    assets = list(dict.fromkeys(a for s in summaries for a in s["asset_seconds"]))
    rows += [
        [f"step `{asset}`, s"]
        + [number(s["asset_seconds"].get(asset, "n/a"), 2) for s in summaries]
        for asset in assets
    ]
    rows.append(["asset-check steps (sum), s"] + [number(s["check_seconds"], 2) for s in summaries])
    rows += [
        [f"fit `{model}`, s"] + [number(s["models"][model]["train_seconds"], 2) for s in summaries]
        for model in summaries[0]["models"]
    ]
    return table(["metric", *map(label, summaries)], rows)


def skill_table(summaries: list[dict[str, Any]]) -> str:
    rows = []
    for model in summaries[0]["models"]:
        cells = []
        for s in summaries:
            m = s["models"][model]
            cells.append(
                f"{m['primary_value']:.4g} vs {m['baseline_value']:.4g} "
                f"(skill {m['skill']:+.3f}, {'/'.join(m['status'])})"
            )
        rows.append([f"`{model}` ({summaries[0]['models'][model]['primary_metric']})", *cells])
    return table(["model (metric)", *map(label, summaries)], rows)


def goals_table(summaries: list[dict[str, Any]], scaling: list[dict[str, Any]]) -> str:
    rows = [[label(s), goal, verdict] for s in summaries for goal, verdict in s["goals"].items()]
    rows += [scaling_row(x) for x in scaling]
    return table(["run set", "goal", "verdict"], rows)


def scaling_row(line: dict[str, Any]) -> list[str]:
    """A scaling line: the S-to-M form of the sets before W, or any pair since."""
    if "time_ratio_M_over_S" in line:
        return [
            "S vs M",
            f"time(M)/time(S) = {line['time_ratio_M_over_S']} <= rows(M)/rows(S) = "
            f"{line['row_ratio_M_over_S']}",
            line["goal"],
        ]
    small, large, metric = line["smaller"], line["larger"], line["metric"]
    return [
        f"{small} vs {large}",
        f"{metric}: time({large})/time({small}) = {line['time_ratio']} <= {line['limit']} "
        f"(rows x{line['row_ratio']})",
        line["goal"],
    ]


def steps_table(summary: dict[str, Any]) -> str:
    """Every step of one summary: seconds and peak RSS in the first build and the hourly run,
    and for a model step its fit and the step's multiple of it."""
    models = summary.get("models", {})
    first, hourly = summary.get("step_seconds", {}), summary.get("hourly_step_seconds", {})
    peaks = summary.get("step_peak_rss_mb", {})
    hourly_peaks = summary.get("hourly_step_peak_rss_mb", {})
    cpu, hourly_cpu = (
        summary.get("step_cpu_seconds", {}),
        summary.get("hourly_step_cpu_seconds", {}),
    )
    rows = []
    for step in sorted(first, key=lambda key: -first[key]):
        model = models.get(step, {})

        def fit(prefix: str, model: dict[str, Any] = model) -> str:
            if model.get(f"{prefix}train_seconds") is None:
                return ""
            ratio = model.get(f"{prefix}step_over_fit")
            multiple = "" if ratio is None else f" (x{ratio:.2f})"  # lines before W had none
            return f"{model[f'{prefix}train_seconds']:.2f}{multiple}"

        rows.append(
            [
                f"`{step}`",
                number(first[step], 2),
                number(cpu.get(step, ""), 1),
                fit(""),
                number(peaks.get(step, ""), 0),
                number(hourly.get(step, "n/a"), 2),
                number(hourly_cpu.get(step, ""), 1),
                fit("hourly_"),
                number(hourly_peaks.get(step, ""), 0),
            ]
        )
    header = ["step", "first build s", "CPU s", "fit s (step/fit)", "peak RSS MB", "hourly s",
              "hourly CPU s", "hourly fit s (step/fit)", "hourly peak RSS MB"]  # fmt: skip
    return table(header, rows)


def runs_table(runs: list[dict[str, Any]]) -> str:
    rows = [
        [
            r["workload"],
            r["executor"]
            + "".join(f" {k}={v}" for k, v in (r.get("env_overrides") or {}).items())
            + (f" at {r['code'].split()[0]}" if r.get("code") else ""),
            number(r["run_seconds"]),
            number(r["cpu_seconds_process_total"]),
            number(r["peak_rss_mb"], 0),
            number(r.get("peak_rss_sampled_tree_sum_mb", "n/a"), 0),
            number(r["dagster_overhead_seconds"], 2),
            number(r.get("hourly_run_seconds", "n/a")),
            number(r.get("hourly_features_targets_seconds", "n/a"), 3),
            number(r["incremental_run_seconds"], 2),
            " / ".join(f"{load:.1f}" for load in loads(r)),
        ]
        for r in runs
    ]
    header = ["workload", "executor", "run s", "CPU s", "peak RSS MB", "tree RSS MB",
              "overhead s", "hourly run s", "hourly f+t s", "incremental s",
              "1-min load: before / (first, hourly, incremental) / after"]  # fmt: skip
    return table(header, rows)


def loads(run: dict[str, Any]) -> list[float]:
    """1-minute load averages of a run line, in time order (lines before W had two)."""
    at_start = run.get("loadavg_at_start") or {}
    return [run["loadavg_before"][0], *(v[0] for v in at_start.values()), run["loadavg_after"][0]]


def group_key(record: dict[str, Any]) -> tuple[str, str, str]:
    return record["workload"], record["executor"], str(record.get("code"))


def summaries_and_runs(records: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list]]:
    """Each summary with the runs it summarizes (the runs before it, in file order), then a
    summary computed here for each group of runs that no summary line followed."""
    pending: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    pairs = []
    for record in records:
        if record["kind"] == "run":
            pending.setdefault(group_key(record), []).append(record)
        elif record["kind"] == "summary":
            runs = pending.pop(group_key(record), [])
            # Summaries written before they carried these take them from their runs.
            if runs:
                record.setdefault("env_overrides", runs[0].get("env_overrides"))
            for run, medians in phase_medians(runs).items():
                record.setdefault(run, medians)
            pairs.append((record, runs))
    pairs += [(summarize(runs), runs) for runs in pending.values()]
    return pairs


def main(paths: list[str]) -> None:
    records = load(paths)
    pairs = summaries_and_runs(records)
    summaries = [summary for summary, _ in pairs]
    runs = [run for _, group in pairs for run in group]
    scaling = [r for r in records if r["kind"] == "scaling"]
    print("### Medians per workload\n")
    print(main_table(summaries))
    print("\n### Goals\n")
    print(goals_table(summaries, scaling))
    print("\n### Model quality (test metric vs baseline, median over runs)\n")
    print(skill_table(summaries))
    for summary in summaries:
        if summary.get("step_seconds"):
            print(f"\n### Every step: {label(summary)}\n")
            print(steps_table(summary))
    print("\n### Every run\n")
    print(runs_table(runs))


if __name__ == "__main__":
    main(sys.argv[1:])
