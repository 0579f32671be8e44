"""A plain Verdict as Dagster's AssetCheckResult: the one conversion, for data checks and the
model gates alike."""

from dagster import AssetCheckResult, AssetCheckSeverity

from blofin_assets.ml.verdict import Verdict


def check_result(verdict: Verdict) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=verdict.check_name,
        passed=verdict.passed,
        severity=AssetCheckSeverity(verdict.severity),
        description=verdict.description,
        metadata=verdict.metadata,
    )
