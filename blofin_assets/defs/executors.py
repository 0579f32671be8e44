"""The code location's executor: in-process by default, multiprocess by run config, Celery by
environment.

A run here is about ten steps of seconds each, and a subprocess per step (importing dagster,
scikit-learn, XGBoost) costs more than the work, so runs are in-process unless run config asks
otherwise. Steps share no in-memory state (tables go through DuckDB, models through the model
store), so ``execution: {config: {multiprocess: {max_concurrent: 2}}}`` in the launchpad or a
schedule's run config switches any run to the multiprocess executor with no code change.

Past one machine, ``BLOFIN_EXECUTOR=celery`` makes every job of the code location (schedule
ticks and the UI's "Materialize all" included) submit each step to Celery workers through the
broker ``BLOFIN_CELERY_BROKER``, their results coming back through ``BLOFIN_CELERY_BACKEND``
(docs/scaling.md). It is a deployment's choice, not a run's: the workers listen on that broker
and rebuild the job from the same environment. Both URLs stay environment references, so no
password in them reaches the definitions the UI shows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from dagster import (
    Executor,
    ExecutorDefinition,
    Field,
    InitExecutorContext,
    executor,
    multi_or_in_process_executor,
)

IN_PROCESS_DEFAULT = {"in_process": {}}
EXECUTOR_VARIABLE = "BLOFIN_EXECUTOR"
BROKER_VARIABLE = "BLOFIN_CELERY_BROKER"
# Where the workers return each step's events (redis serves as both; rpc:// with RabbitMQ).
BACKEND_VARIABLE = "BLOFIN_CELERY_BACKEND"


@executor(
    name="in_process_or_multiprocess",
    config_schema=Field(
        multi_or_in_process_executor.config_schema.as_field().config_type,
        default_value=IN_PROCESS_DEFAULT,
    ),
    requirements=multi_or_in_process_executor.get_requirements,
)
def in_process_by_default(init_context: InitExecutorContext) -> Executor:
    return multi_or_in_process_executor.executor_creation_fn(init_context)


def celery_from_environment(environ: Mapping[str, str]) -> ExecutorDefinition:
    """dagster-celery's executor on the broker (and result backend) the environment names."""
    missing = [name for name in (BROKER_VARIABLE, BACKEND_VARIABLE) if not environ.get(name)]
    if missing:
        raise ValueError(
            f"{EXECUTOR_VARIABLE}=celery needs {' and '.join(missing)}: the broker the Celery "
            "workers listen on and the backend they return results to, the same URLs as in "
            "their -y config (e.g. redis://127.0.0.1:6379/0 and redis://127.0.0.1:6379/1)"
        )
    try:
        from dagster_celery import celery_executor
    except ImportError as error:
        raise ImportError(
            f"{EXECUTOR_VARIABLE}=celery needs dagster-celery, which is not installed: "
            'pip install -e ".[scale]"'
        ) from error
    return celery_executor.configured(
        {"broker": {"env": BROKER_VARIABLE}, "backend": {"env": BACKEND_VARIABLE}}, name="celery"
    )


def code_location_executor(environ: Mapping[str, str] = os.environ) -> ExecutorDefinition:
    """``BLOFIN_EXECUTOR`` unset: today's in-process default; ``celery``: the Celery workers."""
    choice = environ.get(EXECUTOR_VARIABLE, "").strip()
    if not choice:
        return in_process_by_default
    if choice == "celery":
        return celery_from_environment(environ)
    raise ValueError(
        f"{EXECUTOR_VARIABLE}={choice!r} is not an executor: leave it unset (in-process; "
        "multiprocess by run config) or set it to 'celery'"
    )
