"""ml_model_results: one append-only row per trained version (the seed's query works verbatim).

One naming rule for metrics: ``test_<metric>`` on the test block, ``train_<metric>`` on the
training rows. The seed's ``train_accuracy`` and ``test_accuracy`` already follow it; its
unprefixed ``f1``, ``precision``, ``recall``, ``r2``, ``mae``, ``rmse``, ``log_loss`` and
``brier`` stay, holding the same test values as their ``test_`` twins. Every column carries
its description as a DuckDB comment (RESULTS_DESCRIPTIONS), written on create and migration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import duckdb
import pandas as pd

from blofin_assets.storage.connection import registered, transaction
from blofin_assets.storage.model_hashes import (
    FROM_TRAINING,
    backfill_hashes,
    hash_columns,
    stored_hash_sources,
    training_hashes,
)
from blofin_assets.storage.sql import (
    apply_column_comments,
    quote_identifier,
    scalar,
    table_columns,
    table_exists,
)

# Every metric a model reports: what it is, the unit it is read in, when it is NULL.
ERROR_UNIT = "target_unit (risk points, log return or volatility)"
METRICS: dict[str, tuple[str, str, str]] = {
    "accuracy": ("Accuracy", "share of rows right (0-1)", "regressors: it is not defined for them"),
    "f1": ("F1 (direction: of 'up'; momentum: macro average)", "0-1", "regressors"),
    "precision": ("Precision (direction: of 'up'; momentum: macro average)", "0-1", "regressors"),
    "recall": ("Recall (direction: of 'up'; momentum: macro average)", "0-1", "regressors"),
    "log_loss": (
        "Log loss of direction's probability of up",
        "nats per row (a coin: 0.693)",
        "every model but direction_predictor",
    ),
    "brier": (
        "Brier score of direction's probability of up",
        "squared probability error (a coin: 0.25)",
        "every model but direction_predictor",
    ),
    "mae": ("Mean absolute error", ERROR_UNIT, "classifiers"),
    "rmse": ("Root mean squared error", ERROR_UNIT, "classifiers"),
    "r2": ("R squared", "share of variance explained (0 = the mean's)", "classifiers"),
}
SEED_TEST_NAMES = ("f1", "precision", "recall", "r2", "mae", "rmse", "log_loss", "brier")
# The metrics whose test_ and train_ columns were appended (accuracy's are the seed's).
APPENDED_METRICS = ("f1", "precision", "recall", "log_loss", "brier", "mae", "rmse", "r2")

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
    "target_definition": "VARCHAR",
    "baseline_name": "VARCHAR",
    "baselines": "VARCHAR",
    "skills": "VARCHAR",
    "skill_p_value": "DOUBLE",
    "log_loss": "DOUBLE",
    "brier": "DOUBLE",
    "data_until": "TIMESTAMPTZ",
    # Appended with one naming rule for every metric, and the headline's unit and verdict.
    **{f"test_{metric}": "DOUBLE" for metric in APPENDED_METRICS},
    **{f"train_{metric}": "DOUBLE" for metric in APPENDED_METRICS},
    "metric_unit": "VARCHAR",
    "target_unit": "VARCHAR",
    "beyond_noise": "BOOLEAN",
    "class_names": "VARCHAR",
    # Appended when the files' hashes were recorded outside the models directory.
    "model_sha256": "VARCHAR",
    "scaler_sha256": "VARCHAR",
    "config_sha256": "VARCHAR",
    "pickle_free_model_file": "VARCHAR",
    "pickle_free_model_sha256": "VARCHAR",
    "pickle_free_scaler_sha256": "VARCHAR",
    "hashes_source": "VARCHAR",
    # Appended when parameters became data (the <model>_params assets, tune_models job).
    "params_id": "VARCHAR",
    "params_source": "VARCHAR",
}
HASH_NOTE = "load_model refuses a file whose sha256 differs (storage/model_hashes.py)."


def metric_description(metric: str, block: str) -> str:
    """What a test_/train_ column holds, in which unit, and when it is NULL."""
    what, unit, null_for = METRICS[metric]
    rows = (
        "the test block (the newest 20 % of timestamps)" if block == "test" else "the training rows"
    )
    text = f"{what} on {rows}, in {unit}. NULL for {null_for}."
    if block == "train":
        text += f" Much better than test_{metric} means noise was fitted, not skill."
        if metric in ("log_loss", "brier"):
            text += " NULL too while training scores no probabilities on its own rows."
    return text


RESULTS_DESCRIPTIONS: dict[str, str] = {
    "id": "Row number, ascending in recording order (the seed's query orders by it).",
    "model_name": "The model (its Dagster asset), e.g. risk_scorer.",
    "model_type": "The estimator's class, e.g. XGBClassifier.",
    "version": "'<UTC time>Z-<hash>'; its files stay in models/model_<name>/history/<version>/.",
    "status": "promoted (served), rejected (failed an ERROR gate, never served) or interrupted "
    "(passed every gate, but the run stopped before serving it).",
    "status_reason": "Why: the failing ERROR checks, or 'all ERROR checks passed'.",
    "trained_at": "When the version was trained (UTC).",
    "run_id": "The Dagster run that trained it.",
    "code_version": "Hash of the model spec (estimator, params, features, target, transforms).",
    "train_rows": "Rows the model was fitted on (after the purge and any row cap).",
    "test_rows": "Rows of the test block every test_ metric and baseline is measured on.",
    "feature_count": "How many feature columns the model reads.",
    "train_accuracy": metric_description("accuracy", "train") + " (The seed's name.)",
    "test_accuracy": metric_description("accuracy", "test") + " (The seed's name.)",
    **{
        metric: metric_description(metric, "test")
        + f" The seed's name: the value of test_{metric}."
        for metric in SEED_TEST_NAMES
    },
    "primary_metric": "The metric the version is judged on: accuracy (classifiers), mae "
    "(regressors).",
    "primary_value": "The model's primary_metric on the test block, in metric_unit.",
    "baseline_value": "baseline_name's primary_metric on the same test rows, in metric_unit.",
    "skill": "Skill over baseline_name on primary_metric: > 0 better, < 0 worse (mae: 1 - "
    "model / rule; accuracy: the share of the rule's shortfall to 1 that the model closed).",
    "train_seconds": "Seconds the fit took.",
    "model_path": "Path of the version's model.pkl.",
    "data_start": "The first bar of the rows the version was trained and tested on (UTC).",
    "data_end": "The last bar of the rows the version was trained and tested on (UTC).",
    "data_sources": "Where its candles came from, comma-separated (demo = the SYNTHETIC market).",
    "recorded_at": "When this row was written (UTC).",
    "horizon": "Label horizon H in bars.",
    "target_definition": "Target, H, label code and naive rules: two versions' skills compare "
    "only when this is equal (the metric_regression gate's key).",
    "baseline_name": "The strongest naive rule on the test rows, the one skill is over (e.g. "
    "naive_risk = persistence of the last H bars).",
    "baselines": "JSON: every naive rule's test metrics.",
    "skills": "JSON: the skill over each naive rule on primary_metric.",
    "skill_p_value": "One-sided p of the Diebold-Mariano test (HAC variance over the "
    "overlapping labels) that the model beats baseline_name row by row.",
    "data_until": "The newest bar the version could see: its predictions of later bars are out "
    "of sample.",
    **{f"test_{metric}": metric_description(metric, "test") for metric in APPENDED_METRICS},
    **{f"train_{metric}": metric_description(metric, "train") for metric in APPENDED_METRICS},
    "metric_unit": "The unit of primary_value and baseline_value (the primary metric's), e.g. "
    "'risk score points (0-100)'. NULL for a version recorded before units were whose target "
    "definition is no longer the current one.",
    "target_unit": "The target's unit, and so mae's and rmse's (seed, test_ and train_): risk "
    "score points, H-bar log return, realised volatility; for classifiers the class coding. "
    "NULL as for metric_unit.",
    "beyond_noise": "skill > 0 with skill_p_value < 0.05: the verdict of the version's "
    "beats_baseline gate. NULL for versions from before that gate tested noise.",
    "class_names": 'JSON list of the class names, index = class (direction ["down", "up"], '
    'momentum ["decelerating", "neutral", "accelerating"]). NULL for regressors.',
    "model_sha256": f"sha256 of the version's model.pkl. {HASH_NOTE}",
    "scaler_sha256": f"sha256 of the version's scaler.pkl. {HASH_NOTE}",
    "config_sha256": "sha256 of the version's config.json (its feature order). NULL for versions "
    "saved before it was hashed.",
    "pickle_free_model_file": "The pickle-free copy of the model: model.ubj (XGBoost's own "
    "format) or model.skops. NULL for versions saved before there was one.",
    "pickle_free_model_sha256": f"sha256 of pickle_free_model_file. {HASH_NOTE}",
    "pickle_free_scaler_sha256": f"sha256 of the version's scaler.skops. {HASH_NOTE}",
    "hashes_source": "Where the hashes came from: 'training' (the training step's record in "
    "model_file_hashes, written from the bytes it wrote before the folder was visible: "
    "trustworthy even if the models directory is not); 'metadata.json' (read from the folder "
    "when the row was recorded: as trustworthy as the folder was until then); 'metadata.json, "
    "backfilled' (a row recorded before these columns: read once from its folder); 'none'.",
    "params_id": "Id of the parameter set that trained the version (sha256 of its params; the "
    "set itself is in config.json and, when tuned, in model_params). NULL before it was recorded.",
    "params_source": "'default' (the spec's own parameters) or 'tuned' (adopted by the "
    "tune_models job on backtest evidence, table model_params). NULL before it was recorded.",
}


def migrate_results(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Create ml_model_results, or add the columns an older release lacked, keeping every row;
    every column's comment set. One transaction: a failure leaves the table as it was."""
    with transaction(con):
        if not table_exists(con, "ml_model_results"):
            columns = ", ".join(f"{quote_identifier(c)} {t}" for c, t in RESULTS_COLUMNS.items())
            con.execute(f"CREATE TABLE ml_model_results ({columns})")
            added: list[str] = []
        else:
            existing = set(table_columns(con, "ml_model_results"))
            added = [column for column in RESULTS_COLUMNS if column not in existing]
            for column in added:
                con.execute(
                    f"ALTER TABLE ml_model_results ADD COLUMN {quote_identifier(column)} "
                    f"{RESULTS_COLUMNS[column]}"
                )
            fill_test_twins(con, existing, added)
        apply_column_comments(con, "ml_model_results", RESULTS_DESCRIPTIONS)
    return added


def fill_test_twins(con: duckdb.DuckDBPyConnection, existing: set[str], added: list[str]) -> None:
    """Rows stored before the test_ columns get their seed-named test values copied in, once,
    as the columns are added: a test_<metric> query then reads the whole history."""
    for metric in SEED_TEST_NAMES:
        twin = f"test_{metric}"
        if twin in added and metric in existing:
            con.execute(
                f"UPDATE ml_model_results SET {quote_identifier(twin)} = {quote_identifier(metric)}"
            )


def recorded_versions(con: duckdb.DuckDBPyConnection) -> set[tuple[str, str]]:
    """Versions recorded with their hashes, which the results asset need not read again: a
    row recorded before the hash columns is read once more, for its hashes (append_results)."""
    if "hashes_source" not in table_columns(con, "ml_model_results"):
        return set()
    return {
        (name, version)
        for name, version in con.execute(
            "SELECT model_name, version FROM ml_model_results WHERE hashes_source IS NOT NULL"
        ).fetchall()
    }


def key(row: Mapping[str, object]) -> tuple[str, str]:
    return str(row["model_name"]), str(row["version"])


def append_results(con: duckdb.DuckDBPyConnection, rows: Sequence[dict[str, object]]) -> int:
    """Append result rows not yet recorded (idempotent on model_name + version), one transaction.

    Hashes are the training step's record where it has the version (model_file_hashes),
    else the row's own (read from metadata.json). A row recorded before the hash columns gets
    its hashes filled in once, in the same transaction. Returns the rows appended."""
    migrate_results(con)
    unknown = sorted({column for row in rows for column in row} - set(RESULTS_COLUMNS))
    if unknown:
        raise ValueError(f"ml_model_results has no columns {unknown}: add them to RESULTS_COLUMNS")
    stored = stored_hash_sources(con)
    fresh = [row for row in rows if key(row) not in stored]
    unhashed = [row for row in rows if key(row) in stored and stored[key(row)] is None]
    training = training_hashes(con, [key(row) for row in fresh])
    fresh = [
        {**row, **hash_columns(training[key(row)], FROM_TRAINING)} if key(row) in training else row
        for row in fresh
    ]
    if not fresh and not unhashed:
        return 0
    with transaction(con):
        if fresh:
            insert_results(con, fresh)
        for row in unhashed:
            backfill_hashes(con, row)
    return len(fresh)


def insert_results(con: duckdb.DuckDBPyConnection, fresh: Sequence[dict[str, object]]) -> None:
    """Insert new rows, ids continuing the table's (inside the caller's transaction)."""
    frame = pd.DataFrame(fresh)
    for column in RESULTS_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    columns = [c for c in RESULTS_COLUMNS if c != "id"]
    with registered(con, "incoming_results", frame[columns]):
        next_id = scalar(con, "SELECT coalesce(max(id), 0) FROM ml_model_results")
        quoted = ", ".join(quote_identifier(c) for c in columns)
        con.execute(
            f"INSERT INTO ml_model_results (id, {quoted}) "
            f"SELECT ? + row_number() OVER (ORDER BY trained_at, model_name), {quoted} "
            "FROM incoming_results",
            [int(next_id)],
        )


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


HEADLINE_COLUMNS = {
    "id": "id",
    "model_name": "model",
    "status": "status",
    "primary_metric": "metric",
    "primary_value": "value",
    "baseline_name": "baseline",
    "baseline_value": "baseline value",
    "skill": "skill",
    "skill_p_value": "p",
    "beyond_noise": "beyond noise",
    "metric_unit": "unit",
}


def latest_results(con: duckdb.DuckDBPyConnection, limit: int = 10) -> pd.DataFrame:
    """The newest rows' headlines, readable at a glance: for the catalog's preview."""
    selected = ", ".join(quote_identifier(c) for c in HEADLINE_COLUMNS)
    frame = con.execute(
        f"SELECT {selected} FROM ml_model_results ORDER BY id DESC LIMIT ?", [limit]
    ).df()
    for column in ("primary_value", "baseline_value"):
        frame[column] = frame[column].map(lambda v: readable(v, "{:.4g}"))
    frame["skill"] = frame["skill"].map(lambda v: readable(v, "{:+.3f}"))
    frame["skill_p_value"] = frame["skill_p_value"].map(lambda v: readable(v, "{:.2g}"))
    frame["beyond_noise"] = frame["beyond_noise"].map(
        lambda v: "" if pd.isna(v) else ("yes" if v else "no")
    )
    return frame.fillna("").rename(columns=HEADLINE_COLUMNS)


def readable(value: float | None, pattern: str) -> str:
    """A number as a short string ('' when unknown): 16 digits say nothing a reader can use."""
    return "" if value is None or pd.isna(value) else pattern.format(float(value))


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
