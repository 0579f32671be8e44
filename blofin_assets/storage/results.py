"""ml_model_results: one append-only row per trained version (the seed's query works verbatim)."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pandas as pd

from blofin_assets.storage.connection import registered, transaction
from blofin_assets.storage.sql import quote_identifier, scalar, table_columns, table_exists

# Column order is the contract; new columns are only ever appended (see migrate_results).
RESULTS_COLUMNS: dict[str, str] = {
    "id": "BIGINT",
    "model_name": "VARCHAR",
    "model_type": "VARCHAR",
    "version": "VARCHAR",
    "status": "VARCHAR",
    "status_reason": "VARCHAR",
    "trained_at": "TIMESTAMPTZ",
    "run_id": "VARCHAR",
    "code_version": "VARCHAR",
    "train_rows": "BIGINT",
    "test_rows": "BIGINT",
    "feature_count": "INTEGER",
    "train_accuracy": "DOUBLE",
    "test_accuracy": "DOUBLE",
    "f1": "DOUBLE",
    "precision": "DOUBLE",
    "recall": "DOUBLE",
    "r2": "DOUBLE",
    "mae": "DOUBLE",
    "rmse": "DOUBLE",
    "primary_metric": "VARCHAR",
    "primary_value": "DOUBLE",
    "baseline_value": "DOUBLE",
    "skill": "DOUBLE",
    "train_seconds": "DOUBLE",
    "model_path": "VARCHAR",
    "data_start": "TIMESTAMPTZ",
    "data_end": "TIMESTAMPTZ",
    "data_sources": "VARCHAR",
    "recorded_at": "TIMESTAMPTZ",
    # Appended when every model began facing all its naive rules on the test rows.
    "horizon": "INTEGER",
    "target_definition": "VARCHAR",  # target, horizon, rules: what makes two skills comparable
    "baseline_name": "VARCHAR",  # the strongest rule on the test rows
    "baselines": "VARCHAR",  # JSON: every rule's test metrics
    "skills": "VARCHAR",  # JSON: skill over each rule on the primary metric
    "skill_p_value": "DOUBLE",  # one-sided Diebold-Mariano (HAC) against the strongest rule
    "log_loss": "DOUBLE",
    "brier": "DOUBLE",
    "data_until": "TIMESTAMPTZ",  # the newest bar the version could see
}


def migrate_results(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Create ml_model_results, or add the columns an older release lacked, keeping every row."""
    if not table_exists(con, "ml_model_results"):
        columns = ", ".join(f"{quote_identifier(c)} {t}" for c, t in RESULTS_COLUMNS.items())
        con.execute(f"CREATE TABLE ml_model_results ({columns})")
        return []
    existing = set(table_columns(con, "ml_model_results"))
    added = []
    for column, sql_type in RESULTS_COLUMNS.items():
        if column not in existing:
            con.execute(
                f"ALTER TABLE ml_model_results ADD COLUMN {quote_identifier(column)} {sql_type}"
            )
            added.append(column)
    return added


def recorded_versions(con: duckdb.DuckDBPyConnection) -> set[tuple[str, str]]:
    if not table_exists(con, "ml_model_results"):
        return set()
    return {
        (name, version)
        for name, version in con.execute(
            "SELECT model_name, version FROM ml_model_results"
        ).fetchall()
    }


def append_results(con: duckdb.DuckDBPyConnection, rows: Sequence[dict[str, object]]) -> int:
    """Append result rows not yet recorded (idempotent on model_name + version), one transaction."""
    migrate_results(con)
    known = recorded_versions(con)
    fresh = [row for row in rows if (row["model_name"], row["version"]) not in known]
    if not fresh:
        return 0
    frame = pd.DataFrame(fresh)
    for column in RESULTS_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    columns = [c for c in RESULTS_COLUMNS if c != "id"]
    with registered(con, "incoming_results", frame[columns]), transaction(con):
        next_id = scalar(con, "SELECT coalesce(max(id), 0) FROM ml_model_results")
        quoted = ", ".join(quote_identifier(c) for c in columns)
        con.execute(
            f"INSERT INTO ml_model_results (id, {quoted}) "
            f"SELECT ? + row_number() OVER (ORDER BY trained_at, model_name), {quoted} "
            "FROM incoming_results",
            [int(next_id)],
        )
    return len(fresh)


def promoted_skills(
    con: duckdb.DuckDBPyConnection, model_name: str, target_definition: str, limit: int
) -> list[float]:
    """Skill of the most recent promoted versions of the same target definition, newest first
    (for the regression gate). Rows from before the definition was recorded compare with
    nothing: their skill was measured against other rules."""
    if "target_definition" not in table_columns(con, "ml_model_results"):
        return []
    rows = con.execute(
        "SELECT skill FROM ml_model_results WHERE model_name = ? AND status = 'promoted' "
        "AND target_definition = ? AND skill IS NOT NULL "
        "ORDER BY trained_at DESC, id DESC LIMIT ?",
        [model_name, target_definition, limit],
    ).fetchall()
    return [float(row[0]) for row in rows]


def results_size(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """Rows recorded and the newest id: together, the table's data version."""
    total, max_id = con.execute(
        "SELECT count(*), coalesce(max(id), 0) FROM ml_model_results"
    ).fetchall()[0]
    return int(total), int(max_id)


def latest_results(con: duckdb.DuckDBPyConnection, limit: int = 10) -> pd.DataFrame:
    """The newest rows' verdicts, for the catalog's preview."""
    return con.execute(
        "SELECT id, model_name, status, primary_metric, primary_value, baseline_value, skill "
        "FROM ml_model_results ORDER BY id DESC LIMIT ?",
        [limit],
    ).df()


def promotion_skills(
    con: duckdb.DuckDBPyConnection, versions: set[tuple[str, str]]
) -> dict[tuple[str, str], float]:
    """ml_model_results.skill of each (model_name, version) that has one: what its live
    skill is compared against."""
    if not versions or not table_exists(con, "ml_model_results"):
        return {}
    wanted = pd.DataFrame(sorted(versions), columns=["model_name", "version"])
    with registered(con, "wanted_versions", wanted):
        rows = con.execute(
            "SELECT r.model_name, r.version, r.skill FROM ml_model_results r "
            "JOIN wanted_versions w USING (model_name, version) WHERE r.skill IS NOT NULL"
        ).fetchall()
    return {(name, version): float(skill) for name, version, skill in rows}
