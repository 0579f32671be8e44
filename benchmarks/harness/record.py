"""The JSON line of one measured run, from what `child.py` measured.

The record's fields (one JSON line, ``"kind": "run"``):

* ``run_seconds``: wall time of ``execute_in_process`` / ``execute_job`` (definitions built
  before the clock starts; ``definitions_seconds`` is reported separately).
* ``steps``: per step key, wall seconds from STEP_START to STEP_SUCCESS (run step stats).
* ``dagster_overhead_seconds``: run wall minus the time covered by at least one step (for the
  in-process executor this is run wall minus the sum of step times).
  ``step_bookkeeping_seconds``: inside steps, the time from each step's last output event
  (materialization or check evaluation) to its STEP_SUCCESS, i.e. Dagster recording results.
* ``features_rows_per_s`` etc.: first build, candles read by the features step divided by
  step seconds. ``hourly_features_targets_window_rows_per_s``: the same window's candles
  divided by the features + targets step seconds of the hourly run, which appends only the
  new bars' rows (``hourly_candles_read_by_features`` says how many candles it read).
  ``features_targets_compute_rows_per_s``: the first build's candles divided by the two
  steps' ``compute_seconds`` (their own metadata: the features/targets functions alone,
  without reading candles or writing DuckDB); ``*_phase_seconds`` has every phase.
* ``peak_rss_mb``: in-process, ``ru_maxrss`` of the run's process. Multiprocess, the largest
  of that, of the largest waited-for child (``peak_rss_children_mb``: spawned step
  processes) and of ``peak_rss_sampled_tree_sum_mb``: the largest sum of RSS over the process
  and all its descendants (forkserver step processes too), sampled every 0.2 s; shared pages
  count once per process, so it over-states.
* ``step_peak_rss_mb`` / ``hourly_step_peak_rss_mb``: per step, the largest RSS of the process
  tree sampled (every 0.2 s) while the step ran; a step shorter than the interval has none.
  ``step_cpu_seconds`` / ``hourly_step_cpu_seconds``: the tree's CPU seconds over the step
  (from the same samples): on a loaded machine they move less than the wall seconds.
* ``models`` / ``hourly_models``: per model its fit (``train_seconds``, the step's own
  metadata), the step's wall seconds and ``step_over_fit``, their ratio (goal <= 1.3).
* ``loadavg_before`` / ``loadavg_after``: the machine's load averages around the whole child;
  ``loadavg_at_start``: as each of the three runs started (a loaded measurement shows here).
* ``cpu_seconds_process_total``: user + system CPU of the run process and its waited-for
  children (not of forkserver grandchildren); compare it with the wall time on a busy box.
* ``gc_full_*``: full (generation 2) garbage collections in the run process during the first
  build and the hourly run: how many, the longest and the total pause. A pause lands in
  whichever step allocates then, so it shows up in that step's seconds (in-process only:
  step processes of the multiprocess executor are not watched);
  ``gc_full_pause_in_hourly_features_targets_seconds`` is what landed in those two steps.
  Before the hourly and the candles-only run the child collects once, unwatched: the
  schedule starts every run in a fresh process, which has no earlier run's garbage.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.dagster_runs import DERIVED, covered_seconds, model_summary, phase_seconds
from harness.probes import FullCollections, ResourceUsage, TreeSampler
from harness.workloads import Workload

Steps = dict[str, dict[str, float]]


@dataclass
class Observed:
    """One timed run and what Dagster recorded about it."""

    run_id: str
    seconds: float
    steps: Steps
    metadata: dict[str, dict[str, Any]]

    def step_seconds(self, step: str) -> float:
        timing = self.steps.get(step)
        return timing["end"] - timing["start"] if timing else float("nan")

    def step_durations(self) -> dict[str, float]:
        return {key: round(s["end"] - s["start"], 3) for key, s in sorted(self.steps.items())}

    def step_peaks(self, sampler: TreeSampler) -> dict[str, float | None]:
        """Per step: the largest RSS sampled while it ran (None: shorter than one sample)."""
        return {
            key: sampler.peak_between(s["start"], s["end"]) for key, s in sorted(self.steps.items())
        }

    def step_cpu(self, sampler: TreeSampler) -> dict[str, float | None]:
        """Per step: CPU seconds of the process tree while it ran (to one sample, 0.2 s)."""
        return {
            key: sampler.cpu_between(s["start"], s["end"]) for key, s in sorted(self.steps.items())
        }


@dataclass
class Measured:
    """Everything the child measured while Dagster's output went to the log file."""

    import_seconds: float
    definitions_seconds: float
    first: Observed
    hourly: Observed
    incremental: Observed
    processes: int
    sampler: TreeSampler
    collections: FullCollections
    model_names: list[str]
    loadavg: dict[str, list[float]]  # run -> os.getloadavg() as it started


def rate(rows: int, seconds: float) -> float:
    return round(rows / seconds, 1) if seconds > 0 else float("nan")


def executor_label(args: argparse.Namespace) -> str:
    if args.executor == "in_process":
        return args.executor
    return f"{args.executor}/{args.start_method}/max{args.max_concurrent}"


def identity(workload: Workload, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """What ran: the workload, the executor, the source."""
    return {
        "kind": "run",
        "workload": workload.name,
        "executor": executor_label(args),
        "env_overrides": dict(args.env),
        "source": env["BLOFIN_SOURCE"],
        "expected_rows": workload.candles,
        "instruments": workload.instrument_count,
        "bar": workload.bar,
        "days": workload.days,
        "training_days": workload.training_days or workload.days,
    }


def first_build(measured: Measured) -> dict[str, Any]:
    """The first build: whole-run and per-step seconds, Dagster's share, the table rates."""
    run = measured.first
    steps, metadata = run.steps, run.metadata
    covered = covered_seconds([(s["start"], s["end"]) for s in steps.values()])
    bookkeeping = sum(s["end"] - s.get("last_output", s["end"]) for s in steps.values())
    candles_read = int(metadata["features"]["candles_read"])
    features_s, targets_s = run.step_seconds("features"), run.step_seconds("targets")
    phases = phase_seconds(metadata)
    asset_steps = [key for key in steps if key in metadata]  # steps that materialized an asset
    return {
        "rows": int(metadata["candles"]["dagster/row_count"]),
        "run_seconds": round(run.seconds, 3),
        "import_seconds": round(measured.import_seconds, 3),
        "definitions_seconds": round(measured.definitions_seconds, 3),
        "asset_seconds": {name: round(run.step_seconds(name), 3) for name in asset_steps},
        "check_seconds": round(
            sum(run.step_seconds(key) for key in steps if key not in asset_steps), 3
        ),
        "steps": run.step_durations(),
        "step_count": len(steps),
        "step_processes": measured.processes,
        "candles_read_by_features": candles_read,
        "feature_rows": int(metadata["features"]["dagster/row_count"]),
        "target_rows": int(metadata["targets"]["dagster/row_count"]),
        "features_rows_per_s": rate(candles_read, features_s),
        "targets_rows_per_s": rate(candles_read, targets_s),
        "features_targets_rows_per_s": rate(candles_read, features_s + targets_s),
        # Inside the two steps, from their metadata: where the first build's time went.
        "features_targets_phase_seconds": phases,
        "features_targets_compute_rows_per_s": rate(
            candles_read, sum(phases[name]["compute"] for name in DERIVED)
        ),
        "models": {
            name: model_summary(metadata[name], run.step_seconds(name))
            for name in measured.model_names
        },
        "step_peak_rss_mb": run.step_peaks(measured.sampler),
        "step_cpu_seconds": run.step_cpu(measured.sampler),
        "step_sum_seconds": round(sum(s["end"] - s["start"] for s in steps.values()), 3),
        "dagster_overhead_seconds": round(run.seconds - covered, 3),
        "overhead_share": round((run.seconds - covered) / run.seconds, 4),
        "step_bookkeeping_seconds": round(bookkeeping, 3),
    }


def memory(args: argparse.Namespace, usage: ResourceUsage, sampler: TreeSampler) -> dict[str, Any]:
    """Peak RSS. In-process: ru_maxrss. Multiprocess: also the sampled sum over the steps."""
    peak = max(usage.self_rss_mb, usage.children_rss_mb)
    if args.executor != "in_process":
        peak = max(peak, sampler.peak_total_mb)
    return {
        "peak_rss_mb": round(peak, 1),
        "peak_rss_self_mb": round(usage.self_rss_mb, 1),
        "peak_rss_children_mb": round(usage.children_rss_mb, 1),
        "peak_rss_sampled_tree_sum_mb": round(sampler.peak_total_mb, 1),
        "peak_rss_sampled_single_mb": round(sampler.peak_single_mb, 1),
    }


def collections(watched: FullCollections, hourly: Observed) -> dict[str, Any]:
    """Full-collection pauses of the first build and the hourly run."""
    derived = [(s["start"], s["end"]) for key, s in hourly.steps.items() if key in DERIVED]
    return {
        "gc_full_collections": len(watched.pauses),
        "gc_full_pause_max_seconds": round(max(watched.pauses, default=0.0), 4),
        "gc_full_pause_total_seconds": round(sum(watched.pauses), 4),
        "gc_full_pause_in_hourly_features_targets_seconds": round(
            watched.seconds_inside(derived), 4
        ),
    }


def hourly_run(measured: Measured) -> dict[str, Any]:
    """The scheduled hourly run on top of the first build's warehouse.

    features/targets append the new bars' rows, so its rate is the candles of the whole
    window (the first build's candles_read) kept current per second, not the candles computed.
    """
    run, metadata = measured.hourly, measured.hourly.metadata
    derived_s = run.step_seconds("features") + run.step_seconds("targets")
    window = int(measured.first.metadata["features"]["candles_read"])
    return {
        "hourly_run_seconds": round(run.seconds, 3),
        "hourly_steps": run.step_durations(),
        "hourly_step_peak_rss_mb": run.step_peaks(measured.sampler),
        "hourly_step_cpu_seconds": run.step_cpu(measured.sampler),
        "hourly_features_targets_seconds": round(derived_s, 3),
        "hourly_features_targets_window_rows_per_s": rate(window, derived_s),
        "hourly_candles_read_by_features": int(metadata["features"]["candles_read"]),
        "hourly_features_targets_phase_seconds": phase_seconds(metadata),
        "hourly_write_modes": {name: str(metadata[name]["write_mode"]) for name in DERIVED},
        "hourly_models": {
            name: model_summary(metadata[name], run.step_seconds(name))
            for name in measured.model_names
        },
    }


def incremental_run(measured: Measured) -> dict[str, Any]:
    """The candles-only run: the hourly ingest on its own."""
    run = measured.incremental
    return {
        "incremental_run_seconds": round(run.seconds, 3),
        "incremental_candles_step_seconds": round(run.step_seconds("candles"), 3),
        "incremental_new_rows": int(run.metadata["candles"]["new_rows"]),
        "incremental_steps": run.step_durations(),
    }


def run_record(
    workload: Workload,
    args: argparse.Namespace,
    env: dict[str, str],
    measured: Measured,
    usage: ResourceUsage,
    loadavg: tuple[tuple[float, ...], tuple[float, ...]],
    root: Path,
) -> dict[str, Any]:
    """The run's JSON line."""
    return {
        **identity(workload, args, env),
        **first_build(measured),
        **memory(args, usage, measured.sampler),
        **collections(measured.collections, measured.hourly),
        **hourly_run(measured),
        **incremental_run(measured),
        "cpu_seconds_process_total": round(usage.cpu_seconds, 1),
        "loadavg_before": [round(x, 2) for x in loadavg[0]],
        "loadavg_after": [round(x, 2) for x in loadavg[1]],
        "loadavg_at_start": measured.loadavg,
        "run_id": measured.first.run_id,
        "tmp_dir": str(root),
    }
