"""A plain Verdict as Dagster's AssetCheckResult: the one conversion, for data checks and the
model gates alike."""

from dagster import AssetCheckResult, AssetCheckSeverity

from blofin_assets.ml.verdict import Verdict


def check_result(verdict: Verdict, *, check_name: str | None = None) -> AssetCheckResult:
    """``check_name`` for an asset that runs several checks in its step (the model gates); a
    function decorated with @asset_check is its check's name, so it passes none."""
    return AssetCheckResult(
        check_name=check_name,
        passed=verdict.passed,
        severity=AssetCheckSeverity(verdict.severity),
        description=verdict.description,
        metadata=verdict.metadata,
    )
