"""model_file_hashes: each version's file hashes, recorded by the step that wrote the files.

metadata.json sits beside the pickles, so whoever can replace a pickle can replace its hash
there too, and a crafted pickle runs code when it is loaded. This table is written by the
training step itself, from the bytes it wrote, before the version folder becomes visible;
ml_model_results copies it when it records the version. ``load_model`` checks each file
against this record (or, for a version trained without it, ml_model_results' copy) before
unpickling anything: a record that a writer of the models directory alone cannot change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import duckdb
import pandas as pd

from blofin_assets.storage.connection import DuckDBFile, registered, transaction
from blofin_assets.storage.sql import quote_identifier, quote_literal, table_columns, table_exists

HASHES_TABLE = "model_file_hashes"
HASHES_DDL = f"""
CREATE TABLE IF NOT EXISTS {HASHES_TABLE} (
    model_name VARCHAR NOT NULL,
    version VARCHAR NOT NULL,
    file VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (model_name, version, file)
)
"""
HASHES_DESCRIPTIONS = {
    "model_name": "The model (its Dagster asset).",
    "version": "The version; its files are in models/model_<name>/history/<version>/.",
    "file": "A file of the version folder: model.pkl, scaler.pkl, config.json, the "
    "pickle-free model.skops or model.ubj and scaler.skops.",
    "sha256": "sha256 of the bytes the training step wrote, hashed as they were written.",
    "recorded_at": "When the training step recorded it: before the folder became visible.",
}

# Where ml_model_results keeps each file's sha256 (the pickle-free model is model.skops, or
# model.ubj for XGBoost, named in pickle_free_model_file).
FILE_COLUMNS = {
    "model.pkl": "model_sha256",
    "scaler.pkl": "scaler_sha256",
    "config.json": "config_sha256",
    "scaler.skops": "pickle_free_scaler_sha256",
}
PICKLE_FREE_MODEL_FILES = ("model.skops", "model.ubj")
RESULT_HASH_COLUMNS = [
    *FILE_COLUMNS.values(),
    "pickle_free_model_file",
    "pickle_free_model_sha256",
    "hashes_source",
]
# ml_model_results.hashes_source: where the row's hashes came from.
FROM_TRAINING = "training"
FROM_METADATA = "metadata.json"
BACKFILLED = "metadata.json, backfilled"
NONE_RECORDED = "none"


def stored_hash_sources(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], str | None]:
    """Every recorded version and its hashes_source (None: recorded before the hashes were)."""
    if not table_exists(con, "ml_model_results"):
        return {}
    rows = con.execute("SELECT model_name, version, hashes_source FROM ml_model_results")
    return {(name, version): source for name, version, source in rows.fetchall()}


def backfill_hashes(con: duckdb.DuckDBPyConnection, row: dict[str, object]) -> None:
    """Fill the hash columns of a row recorded before them, once, from its metadata.json (as
    fill_test_twins fills appended metric columns): the first record of those files."""
    values = {column: row.get(column) for column in RESULT_HASH_COLUMNS}
    if values["hashes_source"] != NONE_RECORDED:
        values["hashes_source"] = BACKFILLED
    assignments = ", ".join(f"{quote_identifier(c)} = ?" for c in values)
    con.execute(
        f"UPDATE ml_model_results SET {assignments} WHERE model_name = ? AND version = ? "
        "AND hashes_source IS NULL",
        [*values.values(), row["model_name"], row["version"]],
    )


def hash_columns(files: Mapping[str, str], source: str) -> dict[str, str | None]:
    """ml_model_results' hash columns from a file -> sha256 map."""
    model_file = next((f for f in PICKLE_FREE_MODEL_FILES if f in files), None)
    return {
        **{column: files.get(filename) for filename, column in FILE_COLUMNS.items()},
        "pickle_free_model_file": model_file,
        "pickle_free_model_sha256": files[model_file] if model_file else None,
        "hashes_source": source if any(f in files for f in FILE_COLUMNS) else NONE_RECORDED,
    }


def ensure_hashes_table(con: duckdb.DuckDBPyConnection) -> None:
    """Create the table with its column comments (the caller's transaction)."""
    if table_columns(con, HASHES_TABLE):
        return
    con.execute(HASHES_DDL)
    for column, text in HASHES_DESCRIPTIONS.items():
        con.execute(
            f"COMMENT ON COLUMN {HASHES_TABLE}.{quote_identifier(column)} IS {quote_literal(text)}"
        )


def record_file_hashes(
    con: duckdb.DuckDBPyConnection, model_name: str, version: str, hashes: Mapping[str, str]
) -> None:
    """Record a version's hashes, one transaction. A version already recorded with another
    hash for a file is an error: a record is never replaced."""
    frame = pd.DataFrame(
        {
            "model_name": model_name,
            "version": version,
            "file": list(hashes),
            "sha256": [*hashes.values()],
        }
    )
    frame["recorded_at"] = pd.Timestamp.now(tz="UTC")
    with transaction(con):
        ensure_hashes_table(con)
        with registered(con, "incoming_hashes", frame):
            clashes = con.execute(
                f"SELECT i.file, h.sha256, i.sha256 FROM incoming_hashes i JOIN {HASHES_TABLE} h "
                "USING (model_name, version, file) WHERE h.sha256 <> i.sha256"
            ).fetchall()
            if clashes:
                raise ValueError(
                    f"{HASHES_TABLE} already records {model_name} {version} with other hashes: "
                    + "; ".join(f"{f}: recorded {old}, now {new}" for f, old, new in clashes)
                )
            con.execute(
                f"INSERT INTO {HASHES_TABLE} SELECT model_name, version, file, sha256, "
                "recorded_at FROM incoming_hashes ON CONFLICT DO NOTHING"
            )


def record_hashes_in(
    database: DuckDBFile, model_name: str, version: str, hashes: Mapping[str, str]
) -> None:
    """record_file_hashes on its own connection: what the training step calls at save time."""
    with database.connect() as con:
        record_file_hashes(con, model_name, version, hashes)


def training_hashes(
    con: duckdb.DuckDBPyConnection, versions: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, str]]:
    """The training step's record of each (model_name, version) that has one."""
    wanted = pd.DataFrame(sorted(set(versions)), columns=["model_name", "version"])
    if wanted.empty or not table_columns(con, HASHES_TABLE):
        return {}
    with registered(con, "wanted_hashes", wanted):
        rows = con.execute(
            f"SELECT model_name, version, file, sha256 FROM {HASHES_TABLE} "
            "JOIN wanted_hashes USING (model_name, version)"
        ).fetchall()
    found: dict[tuple[str, str], dict[str, str]] = {}
    for name, version, filename, digest in rows:
        found.setdefault((name, version), {})[filename] = digest
    return found


@dataclass(frozen=True)
class RecordedHashes:
    """A version's file hashes as the database records them, which record said so, and why
    they are not to be trusted (None when they are)."""

    files: dict[str, str]
    source: str  # "model_file_hashes" or "ml_model_results (hashes_source ...)"
    untrusted: str | None = None


def training_records_anything(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the training step has recorded any version here: from then on, a version it
    did not record was not trained by this pipeline."""
    return bool(table_columns(con, HASHES_TABLE)) and bool(
        con.execute(f"SELECT EXISTS (SELECT 1 FROM {HASHES_TABLE})").fetchall()[0][0]
    )


def recorded_hashes(
    con: duckdb.DuckDBPyConnection, model_name: str, version: str
) -> RecordedHashes | None:
    """The training step's record, else ml_model_results' hash columns; None when neither
    holds a hash for the version.

    A row whose hashes the results step read from metadata.json (hashes_source
    'metadata.json') says only what the folder held when it was recorded: the results step
    records every version it finds on disk, a planted one too. Once the training step records
    hashes in this file, such a row is untrusted; rows backfilled for versions recorded before
    hashes were (pre-upgrade history) are trusted, on first record."""
    training = training_hashes(con, [(model_name, version)]).get((model_name, version))
    if training:
        return RecordedHashes(training, HASHES_TABLE)
    if "hashes_source" not in set(table_columns(con, "ml_model_results")):
        return None
    selected = [*FILE_COLUMNS.values(), "pickle_free_model_file", "pickle_free_model_sha256"]
    row = con.execute(
        f"SELECT hashes_source, {', '.join(selected)} FROM ml_model_results "
        "WHERE model_name = ? AND version = ? ORDER BY id LIMIT 1",
        [model_name, version],
    ).fetchall()
    if not row:
        return None
    source, *values = row[0]
    named = dict(zip(selected, values, strict=True))
    files = {f: named[c] for f, c in FILE_COLUMNS.items() if named[c] is not None}
    if named["pickle_free_model_file"] and named["pickle_free_model_sha256"]:
        files[named["pickle_free_model_file"]] = named["pickle_free_model_sha256"]
    if not files:
        return None
    untrusted = None
    if source == FROM_METADATA and training_records_anything(con):
        untrusted = (
            f"its training step recorded no hashes in {HASHES_TABLE} (every version trained "
            "here since hashes were recorded has them); ml_model_results copied its hashes from "
            "its own metadata.json, which vouches for nothing"
        )
    return RecordedHashes(files, f"ml_model_results (hashes_source {source!r})", untrusted)
