"""Dagster's own in-process-or-multiprocess executor, with in-process as the default.

A run here is about ten steps of seconds each, and a subprocess per step (importing dagster,
scikit-learn, XGBoost) costs more than the work, so runs are in-process unless run config asks
otherwise. Steps share no in-memory state (tables go through DuckDB, models through the model
store), so ``execution: {config: {multiprocess: {max_concurrent: 2}}}`` in the launchpad or a
schedule's run config switches any run to the multiprocess executor with no code change.
"""

from dagster import Executor, Field, InitExecutorContext, executor, multi_or_in_process_executor

IN_PROCESS_DEFAULT = {"in_process": {}}


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
