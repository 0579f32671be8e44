"""A plain Verdict as Dagster's AssetCheckResult: the one conversion, for data checks and the
model gates alike, and the one place a failed check is said in the run log.

Dagster logs every check evaluation at DEBUG, among hundreds of step events: a headless run
that exits 0 would hide a failed WARN check. So a failure is also logged at WARNING (ERROR for
an ERROR check), naming the check, its asset and what failed.
"""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    DagsterLogManager,
)

from blofin_assets.ml.verdict import Verdict


def failure_message(asset: str, check_name: str, verdict: Verdict) -> str:
    return f"check {check_name} on {asset} FAILED ({verdict.severity}): {verdict.description}"


def log_failed_check(log: DagsterLogManager, asset: str, check_name: str, verdict: Verdict) -> None:
    """Nothing for a passing verdict; a failure at the level its severity calls for."""
    if verdict.passed:
        return
    message = failure_message(asset, check_name, verdict)
    if verdict.severity == "ERROR":
        log.error(message)
    else:
        log.warning(message)


def check_result(
    verdict: Verdict,
    *,
    check_name: str | None = None,
    asset: str | None = None,
    log: DagsterLogManager | None = None,
) -> AssetCheckResult:
    """``check_name`` (and ``asset``) for a step that runs several checks (the model gates, the
    live_skill step); a function decorated with @asset_check is its check's name, so it passes
    none. With ``log``, a failure is also logged; that needs ``asset`` to name it."""
    if log is not None:
        if asset is None:
            raise ValueError("check_result(log=...) needs the asset the check is on")
        log_failed_check(log, asset, check_name or verdict.check_name, verdict)
    return AssetCheckResult(
        asset_key=asset,
        check_name=check_name,
        passed=verdict.passed,
        severity=AssetCheckSeverity(verdict.severity),
        description=verdict.description,
        metadata=verdict.metadata,
    )


def asset_check_result(context: AssetCheckExecutionContext, verdict: Verdict) -> AssetCheckResult:
    """The result of the one check an @asset_check function runs, its failure logged under the
    check's Dagster name (a verdict's own name may differ: ``finite_values`` serves two)."""
    (spec,) = context.check_specs
    asset = spec.asset_key.to_user_string()
    log_failed_check(context.log, asset, spec.name, verdict)
    return check_result(verdict)
