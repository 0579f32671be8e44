"""Opening the DuckDB file and writing to it atomically.

Every write is one transaction, so a failure leaves the table as it was. A DuckDB file takes
one writer process at a time: ``connect`` waits for a held lock with bounded backoff and then
fails naming the holder, instead of failing on the first collision.

DuckDB's own messages for a full disk or a damaged file often name no file, or arrive behind a
follow-up error ("cannot rollback - no transaction is active"). Failures here therefore lead
with the cause and the file's path, say what to do, and chain DuckDB's error as the cause.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from blofin_assets.storage.sql import quote_identifier, scalar

LOCK_ERROR = re.compile(r"lock", re.IGNORECASE)
# What DuckDB says when the file (or its write-ahead log) is not a readable database. Checked
# before LOCK_ERROR: a checksum error names the "block" it read, which contains "lock".
DAMAGED_ERROR = re.compile(
    r"Corrupt (database|WAL) file|not a valid DuckDB database file|Could not read enough bytes"
)
# Once the file is open, only a failed checksum is surely its own: a short read may be of a
# CSV or Parquet file a query reads.
DAMAGED_BLOCK = re.compile(r"Corrupt database file")
# The operating system's words (strerror) for ENOSPC, EFBIG and EDQUOT.
NO_ROOM_ERROR = re.compile(r"No space left on device|File too large|Disk quota exceeded")


class DuckDBFileError(RuntimeError):
    """The DuckDB file could not be opened or written; the message names it and what to do."""


class DuckDBLockedError(DuckDBFileError):
    """Another process kept the DuckDB file locked for longer than we were willing to wait."""


class DuckDBDamagedError(DuckDBFileError):
    """The file is truncated, overwritten or not a DuckDB database: retrying will not help."""


class DuckDBWriteError(DuckDBFileError):
    """A write failed and its transaction was rolled back, so the tables are as they were."""


def damaged_error(path: str | Path, error: duckdb.Error) -> DuckDBDamagedError:
    """DuckDB's corruption error with the file named and the way out, which DuckDB cannot know."""
    log = f" (or its write-ahead log {path}.wal)" if "WAL" in str(error) else ""
    return DuckDBDamagedError(
        f"DuckDB file {path}{log} is damaged or is not a DuckDB database. Restore it from a "
        "backup, or move it aside (or point BLOFIN_DUCKDB_PATH at another file) and materialize "
        f"candles to build a new one. DuckDB: {error}"
    )


def write_error(path: str, error: duckdb.Error) -> DuckDBFileError:
    """The failed write's own cause, first, with the file it could not write."""
    if DAMAGED_BLOCK.search(str(error)):
        return damaged_error(path, error)
    no_room = NO_ROOM_ERROR.search(str(error))
    if no_room is None:
        return DuckDBWriteError(f"Writing DuckDB file {path} failed, rolled back: {error}")
    return DuckDBWriteError(
        f"No room to write DuckDB file {path}: {no_room.group(0)}. Nothing of this write was "
        "stored (the transaction was rolled back). Free space on its disk or raise the file-size "
        f"limit (ulimit -f), or point BLOFIN_DUCKDB_PATH at a disk with room. DuckDB: {error}"
    )


@contextmanager
def connect(
    path: str | Path,
    *,
    read_only: bool = False,
    wait_seconds: float = 120.0,
    backoff_base: float = 0.2,
    backoff_max: float = 5.0,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the file, waiting out another process's lock with bounded, jittered backoff."""
    local = not str(path).startswith("md:")  # MotherDuck databases are not local files
    if local and not read_only:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    elif local and not Path(path).exists():
        raise FileNotFoundError(f"DuckDB file {path} does not exist yet: materialize candles first")
    deadline = time.monotonic() + wait_seconds
    attempt = 0
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.Error as error:
            if DAMAGED_ERROR.search(str(error)):
                raise damaged_error(path, error) from error
            if not isinstance(error, duckdb.IOException) or not LOCK_ERROR.search(str(error)):
                raise
            attempt += 1
            if time.monotonic() >= deadline:
                raise DuckDBLockedError(
                    f"DuckDB file {path} stayed locked for {wait_seconds:.0f}s "
                    f"({attempt} attempts): {error}"
                ) from error
            delay = min(backoff_max, backoff_base * 2**attempt) * random.uniform(0.5, 1.0)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
    try:
        con.execute("SET TimeZone = 'UTC'")
        yield con
    except duckdb.Error as error:
        # A damaged block is only read, and found out, by the query that needs it.
        if DAMAGED_BLOCK.search(str(error)):
            raise damaged_error(path, error) from error
        raise
    finally:
        con.close()


def database_path(con: duckdb.DuckDBPyConnection) -> str:
    """The file behind the connection's database, for messages; ``:memory:`` if there is none."""
    path = scalar(
        con, "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    )
    return str(path) if path else ":memory:"


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """All or nothing: a failure anywhere inside leaves every table as it was.

    The first failure is the one raised. DuckDB ends the transaction itself when a write to disk
    fails, so the ROLLBACK after it fails too; that second error becomes a note on the first.
    """
    path = database_path(con)  # asked first: an aborted transaction answers no query
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException as error:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error as rollback_error:
            error.add_note(f"then ROLLBACK failed too: {rollback_error}")
        if isinstance(error, duckdb.Error):
            raise write_error(path, error) from error
        raise


@contextmanager
def registered(con: duckdb.DuckDBPyConnection, name: str, frame: pd.DataFrame) -> Iterator[str]:
    """A DataFrame visible to SQL under ``name`` for the duration of the block.

    A statement that fails inside a transaction aborts it, and then DuckDB refuses even the
    unregister: that refusal becomes a note on the first error instead of replacing it.
    """
    con.register(name, frame)
    try:
        yield name
    except BaseException as error:
        try:
            con.unregister(name)
        except duckdb.Error as cleanup_error:
            error.add_note(f"then unregistering {name!r} failed too: {cleanup_error}")
        raise
    con.unregister(name)


def insert_new_rows(
    con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame, columns: list[str]
) -> int:
    """Insert the rows whose primary key is not stored yet; returns how many were new."""
    quoted = ", ".join(quote_identifier(c) for c in columns)
    name = quote_identifier(table)
    with registered(con, "incoming_rows", frame[columns]):
        before = scalar(con, f"SELECT count(*) FROM {name}")
        con.execute(
            f"INSERT INTO {name} ({quoted}) SELECT {quoted} FROM incoming_rows "
            "ON CONFLICT DO NOTHING"
        )
        return int(scalar(con, f"SELECT count(*) FROM {name}") - before)


def query_frame(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None
) -> pd.DataFrame:
    """A query's rows as a DataFrame whose ``ts`` (if selected) is UTC whatever the session
    time zone. Through Arrow, which is several times faster than ``.df()`` on many candles.
    """
    frame = con.sql(sql, params=params or None).to_arrow_table().to_pandas()
    if "ts" not in frame.columns:
        return frame
    ts = frame["ts"]
    # TIMESTAMPTZ arrives tz-aware: converting the zone is free, re-parsing 1 M stamps is not.
    if isinstance(ts.dtype, pd.DatetimeTZDtype):
        frame["ts"] = ts.dt.tz_convert("UTC")
    else:
        frame["ts"] = pd.to_datetime(ts, utc=True)
    return frame


@dataclass(frozen=True)
class DuckDBFile:
    """Where the warehouse lives and how long to wait for another writer's lock."""

    path: str
    lock_wait_seconds: float = 120.0

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with connect(self.path, read_only=read_only, wait_seconds=self.lock_wait_seconds) as con:
            yield con
