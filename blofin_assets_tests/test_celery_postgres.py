"""The production setup for real: the hourly_training job through two Celery worker processes
(a real redis broker), with the Dagster instance (runs, event logs, schedules, pool slots) in a
real PostgreSQL, launched as docs/scaling.md says; the same tables and files as the in-process
run (test_pipeline.py), the DuckDB writers one at a time, the model fits on both workers.

PostgreSQL and redis-server are Debian packages (.ci/run installs them). Without them the test
FAILS, saying what to install; a developer machine without them can skip it with
BLOFIN_SKIP_CELERY_TEST=1.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

from blofin_assets.defs.executors import code_location_executor, in_process_by_default
from blofin_assets.ml.specs import MODEL_SPECS
from blofin_assets.ml.store import sha256_file
from blofin_assets.serving import load_model
from blofin_assets_tests.conftest import FROZEN_NOW
from blofin_assets_tests.services import (
    SKIP_VARIABLE,
    ServiceMissing,
    celery_worker_command,
    postgres_bin,
    postgres_server,
    redis_binary,
    redis_server,
    started,
    wait_for_workers,
)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEPLOY = REPO / "deploy" / "celery"
WORKERS = ["blofin-1", "blofin-2"]
MODEL_NAMES = sorted(spec.name for spec in MODEL_SPECS)
INSTRUMENTS = "BTC-USDT,ETH-USDT,SOL-USDT"
FROZEN_AS_TIMESTAMP = pd.Timestamp(FROZEN_NOW)


@dataclass(frozen=True)
class Deployment:
    env: dict[str, str]
    home: Path
    db_path: Path
    models_dir: Path
    logs: Path


def require_services() -> None:
    """Fail (or, opted out, skip) before starting anything if a piece is not installed."""
    try:
        postgres_bin()
        redis_binary()
        for module in ("dagster_celery", "dagster_postgres", "redis"):
            if importlib.util.find_spec(module) is None:
                raise ServiceMissing(f"Python package {module} is missing: pip install -e .[dev]")
    except ServiceMissing as missing:
        if os.environ.get(SKIP_VARIABLE) == "1":
            pytest.skip(f"{SKIP_VARIABLE}=1: {missing}")
        pytest.fail(f"{missing} (or set {SKIP_VARIABLE}=1 to skip this test)", pytrace=False)


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    """PostgreSQL, redis and two Celery workers, all private to this test, torn down after."""
    require_services()
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    logs = tmp_path / "logs"
    logs.mkdir()
    with ExitStack() as stack:
        postgres = stack.enter_context(postgres_server())
        broker = stack.enter_context(redis_server(logs))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BLOFIN_", "DAGSTER_"))}
        env.update(
            postgres.env(),
            DAGSTER_HOME=str(home),
            BLOFIN_DUCKDB_PATH=str(tmp_path / "data" / "blofin.duckdb"),
            BLOFIN_MODELS_DIR=str(tmp_path / "models"),
            BLOFIN_AS_OF=FROZEN_NOW,
            BLOFIN_LOOKBACK_DAYS="3",
            BLOFIN_TRAINING_DAYS="3",
            BLOFIN_INSTRUMENTS=INSTRUMENTS,
            BLOFIN_EXECUTOR="celery",
            BLOFIN_CELERY_BROKER=f"{broker}/0",
            BLOFIN_CELERY_BACKEND=f"{broker}/1",
            # dagster-celery starts `celery` from PATH: this venv's.
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        for name, value in postgres.env().items():  # this process reads the instance too
            monkeypatch.setenv(name, value)
        workers, worker_logs = [], []
        for name in WORKERS:
            log = logs / f"{name}.log"
            command = celery_worker_command(BIN, DEPLOY / "celery.yaml", name)
            workers.append(stack.enter_context(started(command, log, env=env, cwd=REPO)))
            worker_logs.append(log)
        wait_for_workers(env["BLOFIN_CELERY_BROKER"], WORKERS, workers, worker_logs)
        yield Deployment(env, home, tmp_path / "data" / "blofin.duckdb", tmp_path / "models", logs)


def step_events(instance: DagsterInstance, run_id: str) -> dict[str, dict[str, object]]:
    """Per step: when it started and succeeded, and which Celery worker ran it."""
    steps: dict[str, dict[str, object]] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        step = steps.setdefault(event.step_key, {})
        if event.event_type == DagsterEventType.STEP_START:
            step["start"] = entry.timestamp
        elif event.event_type == DagsterEventType.STEP_SUCCESS:
            step["end"] = entry.timestamp
        elif event.event_type == DagsterEventType.ENGINE_EVENT:
            worker = event.engine_event_data.metadata.get("Celery worker")
            if worker is not None:
                step["worker"] = worker.value.split("@")[0]
    return steps


def overlapping(spans: list[tuple[float, float]]) -> bool:
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(sorted(spans)))


def writer_steps() -> set[str]:
    """The steps in pool duckdb_writer, as the definitions declare them."""
    from blofin_assets.defs import build_definitions

    job = build_definitions().resolve_job_def("hourly_training")
    return {node.name for node in job.graph.nodes if node.definition.pool == "duckdb_writer"}


def test_the_environment_chooses_the_executor_and_the_default_is_unchanged() -> None:
    assert code_location_executor({}) is in_process_by_default
    broker, backend = "redis://127.0.0.1:1/0", "redis://127.0.0.1:1/1"
    celery = code_location_executor(
        {"BLOFIN_EXECUTOR": "celery", "BLOFIN_CELERY_BROKER": broker,
         "BLOFIN_CELERY_BACKEND": backend}
    )  # fmt: skip
    assert celery.name == "celery"
    with pytest.raises(ValueError, match=r"BLOFIN_EXECUTOR='dask' is not an executor"):
        code_location_executor({"BLOFIN_EXECUTOR": "dask"})
    with pytest.raises(ValueError, match="needs BLOFIN_CELERY_BACKEND:"):
        code_location_executor({"BLOFIN_EXECUTOR": "celery", "BLOFIN_CELERY_BROKER": "redis://x"})


@pytest.mark.slow
def test_hourly_training_through_celery_workers_and_postgres(deployment: Deployment) -> None:
    launched = subprocess.run(
        [str(BIN / "dg"), "launch", "--job", "hourly_training"],
        cwd=REPO, env=deployment.env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    output = launched.stdout + launched.stderr
    (deployment.logs / "launch.log").write_text(output)
    assert launched.returncode == 0, output[-4000:]
    assert 'RUN_SUCCESS - Finished execution of run for "hourly_training"' in output

    # The instance is PostgreSQL's, and it holds the run with every step's events.
    with DagsterInstance.from_config(str(deployment.home)) as instance:
        for storage in (instance.run_storage, instance.event_log_storage,
                        instance.schedule_storage):  # fmt: skip
            assert type(storage).__module__.startswith("dagster_postgres"), type(storage)
        runs = instance.get_runs()
        assert [(run.job_name, run.status) for run in runs] == [
            ("hourly_training", DagsterRunStatus.SUCCESS)
        ]
        steps = step_events(instance, runs[0].run_id)

    # Every step ran in a Celery worker and succeeded; the five fits used both workers at once.
    assert all({"start", "end", "worker"} <= set(step) for step in steps.values()), steps
    assert {step["worker"] for step in steps.values()} == set(WORKERS)
    fits = [steps[name] for name in MODEL_NAMES]
    assert {fit["worker"] for fit in fits} == set(WORKERS)
    assert overlapping([(fit["start"], fit["end"]) for fit in fits])
    # The DuckDB writers ran one at a time: the duckdb_writer pool holds under Celery too.
    writers = writer_steps()
    assert {"candles", "features", "targets", "ml_model_results", "model_predictions"} <= writers
    assert not overlapping([(steps[w]["start"], steps[w]["end"]) for w in writers]), {
        w: steps[w] for w in writers
    }

    # What the in-process run builds (test_pipeline.py), built by the workers.
    with duckdb.connect(str(deployment.db_path), read_only=True) as con:
        candles = con.execute("SELECT count(*), count(DISTINCT inst_id) FROM candles").fetchone()
        results = con.execute(
            "SELECT model_name, status, version, primary_value, baseline_value, skill "
            "FROM ml_model_results ORDER BY model_name"
        ).fetchall()
        predictions = con.execute(
            "SELECT model_name, model_version, count(DISTINCT inst_id) FROM model_predictions "
            "GROUP BY ALL ORDER BY model_name"
        ).fetchall()
        tables = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    assert candles == (3 * 3 * 1440, 3)
    # The five and the ensemble, which on this market is kept but not served (its gate).
    assert [row[0] for row in results] == sorted([*MODEL_NAMES, "direction_ensemble"])
    for name, status, _, primary, baseline, skill in results:
        assert status == ("rejected" if name == "direction_ensemble" else "promoted"), name
        assert None not in (primary, baseline, skill), name
    served = {name: version for name, status, version, *_ in results if status == "promoted"}
    assert predictions == [(name, served[name], 3) for name in MODEL_NAMES]
    assert {"features", "targets", "prediction_outcomes", "forward_performance"} <= {
        row[0] for row in tables
    }
    for name in MODEL_NAMES:
        model = load_model(
            name, deployment.models_dir, duckdb_path=deployment.db_path, now=FROZEN_AS_TIMESTAMP
        )
        assert model.version == served[name]
        folder = deployment.models_dir / f"model_{name}"
        assert model.metadata["sha256"]["model.pkl"] == sha256_file(folder / "model.pkl")
