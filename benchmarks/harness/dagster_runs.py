"""Launching the product's ``hourly_training`` job as the schedule would, and reading back
what Dagster recorded about the run: step timings, materialization metadata, processes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HARNESS_PARENT = Path(__file__).resolve().parents[1]  # benchmarks/: where `harness` imports from
DERIVED = ("features", "targets")
PHASES = ("check", "read", "compute", "write")
PHASE_RUNS = ("features_targets_phase_seconds", "hourly_features_targets_phase_seconds")


def multiprocess_job() -> Any:
    """The product's hourly_training job, unchanged; step processes rebuild it from here."""
    from blofin_assets.definitions import build_definitions

    return build_definitions().resolve_job_def("hourly_training")


def execution_config(args: argparse.Namespace) -> dict[str, Any]:
    """Run config of the multiprocess executor from the CLI options."""
    config: dict[str, Any] = {"max_concurrent": args.max_concurrent}
    if args.start_method == "forkserver":
        # Step processes fork from a server that has already imported the code location.
        preload = {"preload_modules": ["blofin_assets.definitions"]}
        config["start_method"] = {"forkserver": preload}
    return {"execution": {"config": {"multiprocess": config}}}


def execute(args: argparse.Namespace, instance: Any, selection: list[str] | None) -> str:
    """Run hourly_training (or a selection) like the schedule would; return the run id."""
    from dagster import AssetKey, build_reconstructable_job, execute_job

    from blofin_assets.definitions import build_definitions

    keys = None if selection is None else [AssetKey(name) for name in selection]
    if args.executor == "in_process":
        job = build_definitions().resolve_job_def("hourly_training")
        result = job.execute_in_process(
            instance=instance, asset_selection=keys, raise_on_error=False
        )
    else:
        # A module pointer with this folder as working directory: Dagster drops the
        # script's folder from sys.path when a step process imports the job.
        job = build_reconstructable_job(
            __name__, "multiprocess_job", reconstructor_working_directory=str(HARNESS_PARENT)
        )
        result = execute_job(
            job, instance=instance, run_config=execution_config(args), asset_selection=keys
        )
    if not result.success:
        raise RuntimeError(f"run {result.run_id} failed")
    return result.run_id


def step_timings(instance: Any, run_id: str) -> dict[str, dict[str, float]]:
    """Per step: start/end (epoch s) from the run's step stats, plus the last output event."""
    from dagster import DagsterEventType

    steps: dict[str, dict[str, float]] = {}
    for stat in instance.get_run_step_stats(run_id):
        if stat.start_time is None or stat.end_time is None:
            continue
        steps[stat.step_key] = {"start": stat.start_time, "end": stat.end_time}
    outputs = {DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_CHECK_EVALUATION}
    for entry in instance.all_logs(run_id, of_type=outputs):
        step = steps.get(entry.step_key or "")
        if step is not None:
            step["last_output"] = max(step.get("last_output", 0.0), entry.timestamp)
    return steps


def materializations(instance: Any, run_id: str) -> dict[str, dict[str, Any]]:
    """Asset name -> its materialization metadata as plain values."""
    from dagster import DagsterEventType

    found: dict[str, dict[str, Any]] = {}
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
        materialization = entry.asset_materialization
        if materialization is None:
            continue
        found[materialization.asset_key.to_user_string()] = {
            key: getattr(value, "value", value) for key, value in materialization.metadata.items()
        }
    return found


def pid_count(instance: Any, run_id: str) -> int:
    """How many processes ran the run's steps."""
    from dagster import DagsterEventType

    events = instance.all_logs(run_id, of_type=DagsterEventType.STEP_START)
    return len({entry.dagster_event.pid for entry in events if entry.dagster_event})


def covered_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end] intervals."""
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total


def phase_seconds(metadata: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """features/targets -> seconds per refresh phase, as the assets report them."""
    return {
        name: {phase: round(float(metadata[name][f"{phase}_seconds"]), 3) for phase in PHASES}
        for name in DERIVED
    }


def primary_metric(metadata: dict[str, Any]) -> str:
    """The metric of the model page's ``test_<metric>`` field (the page names no other)."""
    found = [key[5:] for key in metadata if key.startswith("test_") and key != "test_rows"]
    if len(found) != 1:
        raise KeyError(f"model metadata has no single test_<metric> field: {sorted(metadata)}")
    return found[0]


def model_summary(metadata: dict[str, Any], step_seconds: float) -> dict[str, Any]:
    """A model step's figures from its materialization metadata."""
    metric = metadata.get("primary_metric") or primary_metric(metadata)
    train_seconds = float(metadata["train_seconds"])
    return {
        "train_seconds": round(train_seconds, 3),
        "step_seconds": round(step_seconds, 3),
        # The step against its estimator's fit: what is not the fit is overhead (goal <= 1.3).
        "step_over_fit": round(step_seconds / train_seconds, 3) if train_seconds > 0 else None,
        "train_rows": int(metadata["train_rows"]),
        "test_rows": int(metadata["test_rows"]),
        "status": metadata["status"],
        "primary_metric": metric,
        "primary_value": round(float(metadata[f"test_{metric}"]), 6),
        "baseline_value": round(float(metadata[f"baseline_{metric}"]), 6),
        "baseline_kind": metadata.get("baseline_kind"),
        "skill": round(float(metadata["skill"]), 6),
    }
