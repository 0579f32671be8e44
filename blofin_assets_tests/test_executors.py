"""The hourly_training job runs unchanged under Dagster's multiprocess executor.

Steps share no memory (every table goes through DuckDB, every model through the model store),
so the product's job, switched by run config alone, runs with each step in its own process and
no change to any asset.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from dagster import (
    DagsterEventType,
    JobDefinition,
    execute_job,
    instance_for_test,
    reconstructable,
)

from blofin_assets.ml.ensemble import ENSEMBLE_SPEC
from blofin_assets.ml.specs import MODEL_SPECS
from blofin_assets_tests.conftest import Project

REPO = Path(__file__).resolve().parent.parent
# forkserver with the code preloaded: each step process is forked from a process that has
# already imported dagster, scikit-learn and xgboost, instead of importing them again (spawn).
MULTIPROCESS_CONFIG = {
    "max_concurrent": 2,
    "start_method": {
        "forkserver": {"preload_modules": ["blofin_assets.definitions", __name__]},
    },
}


def hourly_training() -> JobDefinition:
    """The product's job, unchanged; rebuilt in every step process from the BLOFIN_*
    environment the test sets (child processes inherit it)."""
    from blofin_assets.defs import build_definitions

    return build_definitions().resolve_job_def("hourly_training")


def test_hourly_training_runs_under_the_multiprocess_executor(project: Project) -> None:
    # The project's instance settings (the duckdb_writer pool) on a temp SQLite instance
    # (persistent: the multiprocess executor cannot use an ephemeral one).
    product_instance = yaml.safe_load((REPO / "dagster_home" / "dagster.yaml").read_text())
    with instance_for_test(overrides={"concurrency": product_instance["concurrency"]}) as instance:
        result = execute_job(
            reconstructable(hourly_training),
            instance=instance,
            # Run config alone switches the executor: no code change.
            run_config={"execution": {"config": {"multiprocess": MULTIPROCESS_CONFIG}}},
        )
        assert result.success
        step_pids = {
            entry.dagster_event.pid
            for entry in instance.all_logs(result.run_id, of_type=DagsterEventType.STEP_START)
            if entry.dagster_event is not None
        }

    assert len(step_pids) > 1, step_pids
    recorded = project.query("SELECT model_name FROM ml_model_results ORDER BY model_name")
    assert [row[0] for row in recorded] == sorted(
        [*(spec.name for spec in MODEL_SPECS), ENSEMBLE_SPEC.name]
    )


def test_loading_the_code_location_freezes_what_it_imported() -> None:
    # A fresh interpreter, as a run worker, code server or forkserver parent starts: after the
    # load, the long-lived import-time objects sit in the permanent generation (skipped by
    # every later full collection, shared copy-on-write by forked step processes) and only a
    # small remainder is still tracked.
    probe = (
        "import gc, blofin_assets.definitions; print(gc.get_freeze_count(), len(gc.get_objects()))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    )
    frozen, tracked = map(int, completed.stdout.split())
    assert frozen > 10 * tracked, (frozen, tracked)
