"""The one verdict type every data check and model gate returns.

Plain, so checks and gates are tested without Dagster; the Dagster floor turns a verdict into
an asset check result, and a model asset keeps a candidate out of serving on an ERROR one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["WARN", "ERROR"]


@dataclass(frozen=True)
class Verdict:
    check_name: str
    passed: bool
    severity: Severity
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def blocks_serving(self) -> bool:
        return not self.passed and self.severity == "ERROR"
