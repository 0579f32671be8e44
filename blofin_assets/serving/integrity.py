"""What a version's files are checked against before anything is loaded from them.

A crafted pickle runs code when it is loaded, and metadata.json sits in the same folder as the
pickles: whoever can replace one can replace the hash it records. So by default a file's
sha256 is checked against the DuckDB file's record (storage/model_hashes.py: written by the
training step from the bytes it wrote, copied into ml_model_results), which a writer of the
models directory alone cannot change. ``verify_with="metadata"`` checks against metadata.json
instead, for a models directory without its database: that catches a truncated or corrupted
file, not a deliberate replacement.

Each file is read once, hashed, and loaded from those same bytes, so it cannot be swapped
between the check and the load.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import duckdb

from blofin_assets.ml.store import ModelStore
from blofin_assets.storage.connection import connect
from blofin_assets.storage.model_hashes import HASHES_TABLE, recorded_hashes

VerifyWith = Literal["duckdb", "metadata"]
VERIFY_WITH = ("duckdb", "metadata")
DEFAULT_DUCKDB_PATH = "data/blofin.duckdb"  # the project's BLOFIN_DUCKDB_PATH default
# A read-only connection waits while another process holds the file open for writing; the
# pipeline's writes are short, so waiting beats failing (DuckDBLockedError after this long).
DEFAULT_LOCK_WAIT_SECONDS = 120.0
WEAKER = "beside the files: it catches corruption, not a deliberate replacement"


class ModelIntegrityError(RuntimeError):
    """A served file is missing, truncated, not the one that was trained, or nothing outside
    the models directory vouches for it."""


def database_path(duckdb_path: str | Path | None) -> str:
    """The argument, else BLOFIN_DUCKDB_PATH, else the project's default."""
    return str(duckdb_path or os.environ.get("BLOFIN_DUCKDB_PATH") or DEFAULT_DUCKDB_PATH)


def database_record(
    name: str, version: str, duckdb_path: str | Path | None, lock_wait_seconds: float
) -> tuple[dict[str, str], str]:
    """The version's file hashes as the DuckDB file records them, and who says so.

    Opened read-only: that takes a shared lock, so it waits (bounded, then DuckDBLockedError)
    while another process holds the file open for writing, and it fails at once in a process
    that itself holds the file open read-write (DuckDB allows one configuration per process).
    """
    path = database_path(duckdb_path)
    opt_out = (
        "For a models directory that has no database, load with verify_with='metadata' "
        f"(weaker: metadata.json sits {WEAKER})."
    )
    if not path.startswith("md:") and not Path(path).is_file():
        raise ModelIntegrityError(
            f"cannot verify {name} version {version}: DuckDB file {path} does not exist "
            f"(pass duckdb_path= or set BLOFIN_DUCKDB_PATH). {opt_out}"
        )
    try:
        with connect(path, read_only=True, wait_seconds=lock_wait_seconds) as con:
            record = recorded_hashes(con, name, version)
    except duckdb.ConnectionException as error:
        raise ModelIntegrityError(
            f"cannot read the hash record in {path}: this process already holds it open with "
            f"another configuration (read-write); load after closing that connection ({error})"
        ) from error
    if record is None:
        raise ModelIntegrityError(
            f"refusing to load {name} version {version}: {path} records no hashes for it "
            f"(neither {HASHES_TABLE} nor ml_model_results), so nothing outside the models "
            f"directory vouches for its files. A version just trained is recorded by its "
            f"training step, or by ml_model_results' next materialization. {opt_out}"
        )
    if record.untrusted is not None:
        raise ModelIntegrityError(
            f"refusing to load {name} version {version}: {path} {record.source} holds hashes "
            f"for it, but {record.untrusted}. A version not trained by this pipeline, or saved "
            f"by a call without hash_record. {opt_out}"
        )
    return record.files, f"{path} {record.source}"


def metadata_record(directory: Path, metadata: Mapping[str, Any]) -> tuple[dict[str, str], str]:
    """The hashes metadata.json records (the weaker check)."""
    return dict(metadata.get("sha256") or {}), f"{directory / 'metadata.json'} ({WEAKER})"


def read_and_check(
    directory: Path,
    filenames: Sequence[str],
    expected: Mapping[str, str],
    vouched_by: str,
    *,
    unless_unrecorded: Sequence[str] = (),
) -> tuple[dict[str, bytes], list[str]]:
    """Each file's bytes, read once, and every way they differ from ``expected`` (both hashes
    named). A file in ``unless_unrecorded`` (config.json, which versions from before it was
    hashed lack) is read unchecked when the record has no hash for it."""
    problems, data = [], {}
    for filename in filenames:
        path = directory / filename
        if filename not in expected and filename not in unless_unrecorded:
            problems.append(f"{vouched_by} records no sha256 for {path}")
            continue
        try:
            data[filename] = path.read_bytes()
        except OSError as error:
            problems.append(
                f"{path} is unreadable (expected sha256 {expected.get(filename)}): "
                f"{error.strerror or error}"
            )
            continue
        actual = hashlib.sha256(data[filename]).hexdigest()
        if filename in expected and actual != expected[filename]:
            problems.append(
                f"{path} has sha256 {actual}, but {vouched_by} records {expected[filename]}"
            )
    return data, problems


def verified_bytes(
    directory: Path,
    filenames: Sequence[str],
    expected: Mapping[str, str],
    vouched_by: str,
    *,
    unless_unrecorded: Sequence[str] = (),
) -> dict[str, bytes]:
    """read_and_check's bytes, or ModelIntegrityError naming every problem."""
    data, problems = read_and_check(
        directory, filenames, expected, vouched_by, unless_unrecorded=unless_unrecorded
    )
    if problems:
        raise ModelIntegrityError(
            "refusing to load files that are not the ones trained: " + "; ".join(problems)
        )
    return data


def served_record_problems(
    store: ModelStore,
    name: str,
    duckdb_path: str | Path | None = None,
    lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS,
) -> list[str]:
    """How the served version's files differ from the DuckDB file's record of them (every
    recorded file: pickles, pickle-free copies, config.json), unpickling nothing; [] when no
    version is served (ModelStore.verify_served says so). For the served_files_intact check,
    which otherwise compares with metadata.json, beside the files."""
    directory = store.served_dir(name)
    if directory is None or not directory.is_dir():
        return []
    try:
        expected, vouched_by = database_record(name, directory.name, duckdb_path, lock_wait_seconds)
    except ModelIntegrityError as error:
        return [str(error)]
    return read_and_check(directory, sorted(expected), expected, vouched_by)[1]
