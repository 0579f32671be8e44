"""One measured run, in a fresh process: the first build (the whole ``hourly_training`` job on
an empty warehouse), the hourly run (the clock 60 minutes on, the whole job again on top of it,
as the schedule runs it) and a candles-only run another 60 minutes on. ``record.py`` turns
what this measures into the run's JSON line.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.dagster_runs import execute, materializations, pid_count, step_timings
from harness.probes import (
    FullCollections,
    ResourceUsage,
    TreeSampler,
    log_path_on_failure,
    redirect_fds,
)
from harness.record import Measured, Observed, run_record
from harness.workloads import FROZEN_NOW, INCREMENTAL_MINUTES, REPO, WORKLOADS, Workload


def child_run(args: argparse.Namespace) -> dict[str, Any]:
    """One measured run in this (fresh) process; returns its JSON record."""
    from blofin_assets import process

    # This process is an entry point, like the code location's load: it chooses the OpenMP
    # policy before anything loads scikit-learn or XGBoost (an --env value wins).
    process.prefer_passive_openmp()
    workload = WORKLOADS[args.workload]
    root, env = prepare(workload, args)
    log_path = root / "dagster.log"
    load_before = os.getloadavg()
    with log_path_on_failure(log_path), redirect_fds(log_path):
        measured = measure(args)
    usage = ResourceUsage.now()
    record = run_record(workload, args, env, measured, usage, (load_before, os.getloadavg()), root)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
        record["tmp_dir"] = None
    return record


def prepare(workload: Workload, args: argparse.Namespace) -> tuple[Path, dict[str, str]]:
    """A temp dir holding the run's Dagster home, DuckDB file and models; the run's env."""
    root = Path(tempfile.mkdtemp(prefix=f"blofin-bench-{workload.name}-"))
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {
        **workload.env(),
        "DAGSTER_HOME": str(home),
        "BLOFIN_DUCKDB_PATH": str(root / "data" / "blofin.duckdb"),
        "BLOFIN_MODELS_DIR": str(root / "models"),
        "BLOFIN_AS_OF": FROZEN_NOW,
        "BLOFIN_SOURCE": "file" if args.candles_file else "demo",
        "BLOFIN_CANDLES_FILE": str(Path(args.candles_file).resolve()) if args.candles_file else "",
    }
    for name in ("BLOFIN_API_URL", "BLOFIN_ON_BAD_ROWS", "BLOFIN_HORIZON"):
        os.environ.pop(name, None)
    os.environ.update(env)  # step subprocesses of the multiprocess executor inherit these
    return root, env


def timed(
    args: argparse.Namespace, instance: Any, selection: list[str] | None
) -> tuple[str, float]:
    started = time.perf_counter()
    run_id = execute(args, instance, selection)
    return run_id, time.perf_counter() - started


def observed(instance: Any, run_id: str, seconds: float) -> Observed:
    return Observed(
        run_id, seconds, step_timings(instance, run_id), materializations(instance, run_id)
    )


def load_now() -> list[float]:
    """The machine's 1/5/15-minute load averages: a shared box shows here how busy it was."""
    return [round(x, 2) for x in os.getloadavg()]


def advance_clock(hours: int) -> None:
    """Move the frozen clock to FROZEN_NOW + `hours` schedule periods."""
    import pandas as pd

    later = pd.Timestamp(FROZEN_NOW) + pd.Timedelta(minutes=INCREMENTAL_MINUTES * hours)
    os.environ["BLOFIN_AS_OF"] = later.isoformat()


def measure(args: argparse.Namespace) -> Measured:
    """Load the code location as production does, then time the three runs."""
    started = time.perf_counter()
    import pandas  # noqa: F401  (counted in import_seconds, as the product loads it)
    from dagster import DagsterInstance

    from blofin_assets.definitions import build_definitions  # freezes the loaded heap
    from blofin_assets.ml.specs import MODEL_SPECS

    import_seconds = time.perf_counter() - started
    started = time.perf_counter()
    build_definitions().resolve_job_def("hourly_training")
    definitions_seconds = time.perf_counter() - started

    loadavg: dict[str, list[float]] = {}
    with DagsterInstance.get() as instance:
        # RSS is sampled (with times, for per-step peaks) through the first build and the
        # hourly run; the machine's load is read as each run starts.
        sampler, collections = TreeSampler(), FullCollections()
        sampler.start()
        collections.start()
        loadavg["first_build"] = load_now()
        run_id, seconds = timed(args, instance, None)
        first = observed(instance, run_id, seconds)
        processes = pid_count(instance, run_id)

        # The next hour, as the schedule runs it: the whole job on top of the first build.
        # The schedule starts each run in a fresh process, with no garbage from an earlier
        # run; this one would otherwise collect the first run's and the event-log reads'
        # above inside its own steps.
        advance_clock(1)
        collections.collect_unwatched()
        loadavg["hourly"] = load_now()
        hourly = observed(instance, *timed(args, instance, None))
        collections.stop()
        sampler.stop()

        # The hour after that, candles only: the incremental ingest on its own.
        advance_clock(2)
        gc.collect()  # as above; pauses are no longer watched here
        loadavg["incremental"] = load_now()
        incremental = observed(instance, *timed(args, instance, ["candles"]))
    return Measured(
        import_seconds=import_seconds,
        definitions_seconds=definitions_seconds,
        first=first,
        hourly=hourly,
        incremental=incremental,
        processes=processes,
        sampler=sampler,
        collections=collections,
        model_names=[spec.name for spec in MODEL_SPECS],
        loadavg=loadavg,
    )
