"""What one run trained, read back from ml_model_results, as one line per model.

A headless run is read in its log, not in the catalog: its last lines say what it trained,
which versions were promoted or rejected, their skill over which naive rule (and whether that
is beyond noise), and which version each model now serves.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import duckdb

from blofin_assets.storage.sql import table_columns, table_exists

SUMMARY_COLUMNS = [
    "model_name",
    "version",
    "status",
    "status_reason",
    "primary_metric",
    "baseline_name",
    "skill",
    "skill_p_value",
]


@dataclass(frozen=True)
class TrainedVersion:
    """One version a run trained, as ml_model_results recorded it."""

    model_name: str
    version: str
    status: str | None
    status_reason: str | None
    primary_metric: str | None
    baseline_name: str | None
    skill: float | None
    skill_p_value: float | None


def trained_in_run(con: duckdb.DuckDBPyConnection, run_id: str) -> list[TrainedVersion]:
    """The versions run ``run_id`` trained and ml_model_results has recorded, by model name;
    none when the table (or, from an older release, a column it reads) does not exist yet."""
    if not table_exists(con, "ml_model_results"):
        return []
    if not set(SUMMARY_COLUMNS) <= set(table_columns(con, "ml_model_results")):
        return []
    rows = con.execute(
        f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM ml_model_results WHERE run_id = ? "
        "ORDER BY model_name, trained_at, id",
        [run_id],
    ).fetchall()
    return [TrainedVersion(*row) for row in rows]


def number(value: float | None, spec: str) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return format(value, spec)


def summary_line(trained: TrainedVersion, served_version: str | None) -> str:
    """``risk_scorer: promoted, skill +0.155 over naive_risk (mae, p=1e-26), serving V``; a
    version not served (a rejection says why) is named beside the one that is."""
    status = trained.status or "unknown status"
    if status != "promoted":
        status = f"{status.upper()} ({trained.status_reason or 'no reason recorded'})"
    skill = number(trained.skill, "+.3f")
    baseline = trained.baseline_name or "no baseline"
    p_value = number(trained.skill_p_value, ".2g")
    serving = served_version or "nothing"
    if served_version != trained.version:
        serving += f", not this run's {trained.version}"
    return (
        f"{trained.model_name}: {status}, skill {skill} over {baseline} "
        f"({trained.primary_metric or 'no metric'}, p={p_value}), serving {serving}"
    )


def summary_lines(trained: Sequence[TrainedVersion], served: Mapping[str, str | None]) -> list[str]:
    """A headline, then one line per version the run trained; ``served`` maps each model name
    to the version it serves now."""
    if not trained:
        return [
            "run summary: no model version trained in this run is in ml_model_results (it "
            "records every trained version when it runs)"
        ]
    counts = Counter(row.status or "unknown status" for row in trained)
    tally = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    headline = f"run summary: {len(trained)} model versions trained ({tally})"
    return [headline, *(summary_line(row, served.get(row.model_name)) for row in trained)]
