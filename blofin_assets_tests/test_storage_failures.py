"""A full disk or a damaged DuckDB file fails with its own cause first, naming the file.

The full disk is real: a child process lowers its file-size limit (RLIMIT_FSIZE) and ignores
SIGXFSZ, so DuckDB's writes past the limit fail with EFBIG ("File too large") through the same
path as ENOSPC on a full disk. The damaged files are real files with bytes cut or overwritten.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from blofin_assets.storage.connection import (
    DuckDBDamagedError,
    DuckDBWriteError,
    connect,
    registered,
    transaction,
)

resource = pytest.importorskip("resource", reason="RLIMIT_FSIZE needs a POSIX system")

SEED_ROWS = 10
HINT = "Restore it from a backup"

# Runs as its own process, since the file-size limit lasts as long as the process does.
WRITER = """
import json, resource, signal, sys
from blofin_assets.storage.connection import connect, transaction

path, limit, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, not the process
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
stage = "open"
try:
    with connect(path) as con, transaction(con):
        stage = "insert"
        con.execute("INSERT INTO bars SELECT range, md5(range::VARCHAR) FROM range(?)", [rows])
        stage = "commit"
except Exception as error:
    cause = error.__cause__
    print(json.dumps({
        "stage": stage, "type": type(error).__name__, "message": str(error),
        "cause": str(cause), "cause_notes": getattr(cause, "__notes__", []),
    }))
else:
    print(json.dumps({"stage": "committed"}))
"""


def seeded_file(path: Path) -> list[tuple]:
    """A small checkpointed warehouse file; returns its rows."""
    with connect(path) as con:
        con.execute("CREATE TABLE bars (i BIGINT, s VARCHAR)")
        con.execute("INSERT INTO bars SELECT range, 'seed' FROM range(?)", [SEED_ROWS])
        con.execute("CHECKPOINT")
    return stored_rows(path)


def stored_rows(path: Path) -> list[tuple]:
    with connect(path, read_only=True) as con:
        return con.execute("SELECT * FROM bars ORDER BY i").fetchall()


def write_under_file_size_limit(path: Path, rows: int) -> dict[str, object]:
    """Insert ``rows`` in a child whose files may not grow past the seeded file's size."""
    limit = path.stat().st_size + 64 * 1024  # less than one DuckDB block of growth
    child = subprocess.run(
        [sys.executable, "-c", WRITER, str(path), str(limit), str(rows)],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert child.returncode == 0, child.stderr
    return json.loads(child.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("rows", "failing_stage", "failing_file"),
    [
        # Fewer rows than a row group: they go to the write-ahead log, which COMMIT writes.
        pytest.param(50_000, "commit", ".duckdb.wal", id="wal-at-commit"),
        # A few row groups: COMMIT checkpoints them into the file itself.
        pytest.param(300_000, "commit", ".duckdb", id="checkpoint-at-commit"),
        # Many row groups: DuckDB writes them to the file during the INSERT.
        pytest.param(2_000_000, "insert", ".duckdb", id="row-groups-during-insert"),
    ],
)
def test_a_write_out_of_space_names_its_cause_and_the_file_first(
    tmp_path: Path, rows: int, failing_stage: str, failing_file: str
) -> None:
    path = tmp_path / "blofin.duckdb"
    before = seeded_file(path)

    outcome = write_under_file_size_limit(path, rows)

    assert outcome["stage"] != "committed", "RLIMIT_FSIZE was not honoured: the write succeeded"
    assert outcome["stage"] == failing_stage, outcome
    # The write really hit the limit, on the file expected, and that is what DuckDB said.
    assert f'Could not write file "{path.parent / ("blofin" + failing_file)}"' in outcome["cause"]
    assert "File too large" in outcome["cause"]
    assert outcome["type"] == DuckDBWriteError.__name__
    message = str(outcome["message"])
    assert message.startswith(f"No room to write DuckDB file {path}: File too large."), message
    assert "BLOFIN_DUCKDB_PATH" in message
    assert "cannot rollback" not in message
    if failing_stage == "commit":
        # DuckDB aborted the transaction itself: our ROLLBACK failed and is only a note.
        assert any("cannot rollback" in note for note in outcome["cause_notes"]), outcome
    assert stored_rows(path) == before
    with connect(path) as con, transaction(con):  # the file still takes writes, with room
        con.execute("INSERT INTO bars VALUES (-1, 'after')")
    assert len(stored_rows(path)) == SEED_ROWS + 1


def test_a_failed_statement_inside_a_transaction_names_the_file_and_rolls_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "blofin.duckdb"
    with connect(path) as con:
        con.execute("CREATE TABLE bars (i BIGINT PRIMARY KEY)")
        con.execute("INSERT INTO bars VALUES (1)")
        with pytest.raises(DuckDBWriteError) as error, transaction(con):
            con.execute("INSERT INTO bars VALUES (2)")
            con.execute("INSERT INTO bars VALUES (1)")
        assert con.execute("SELECT i FROM bars").fetchall() == [(1,)]
    assert str(error.value).startswith(f"Writing DuckDB file {path} failed, rolled back:")
    assert isinstance(error.value.__cause__, duckdb.ConstraintException)


def test_an_error_outside_duckdb_leaves_the_transaction_as_itself(tmp_path: Path) -> None:
    with connect(tmp_path / "blofin.duckdb") as con:
        con.execute("CREATE TABLE bars (i BIGINT)")
        with pytest.raises(ValueError, match=r"^not a duckdb error$"), transaction(con):
            con.execute("INSERT INTO bars VALUES (1)")
            raise ValueError("not a duckdb error")
        assert con.execute("SELECT count(*) FROM bars").fetchone() == (0,)


def warehouse(path: Path) -> None:
    """A checkpointed file of several blocks, so damage can land in its data."""
    with connect(path) as con:
        con.execute(
            "CREATE TABLE bars AS SELECT range AS i, md5(range::VARCHAR) AS s FROM range(200000)"
        )
        con.execute("CHECKPOINT")


def overwrite(offset: int, data: bytes) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        with path.open("r+b") as file:
            file.seek(offset)
            file.write(data)

    return damage


def truncate(size: Callable[[int], int]) -> Callable[[Path], None]:
    return lambda path: os.truncate(path, size(path.stat().st_size))


def replace_with(data: Callable[[int], bytes]) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data(path.stat().st_size))


DAMAGE = {
    "empty": truncate(lambda size: 0),
    "truncated-in-the-header": truncate(lambda size: 100),
    "truncated-to-half": truncate(lambda size: size // 2),
    "truncated-by-a-block": truncate(lambda size: size - 4096),
    "magic-header-overwritten": overwrite(0, b"\xff" * 4096),
    "database-header-overwritten": overwrite(4096, os.urandom(4096)),  # a checksum error
    "random-bytes": replace_with(os.urandom),
    "a-csv-file": replace_with(lambda size: b"inst_id,ts,open\nBTC-USDT,1,2\n" * 100),
}


@pytest.mark.parametrize("read_only", [False, True], ids=["write", "read-only"])
@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_file_fails_to_open_naming_it_and_the_way_out(
    tmp_path: Path, damage: Callable[[Path], None], read_only: bool
) -> None:
    path = tmp_path / "blofin.duckdb"
    warehouse(path)
    damage(path)
    with pytest.raises(DuckDBDamagedError) as error, connect(path, read_only=read_only):
        pass
    message = str(error.value)
    assert message.startswith(f"DuckDB file {path} is damaged or is not a DuckDB database. ")
    assert HINT in message and "BLOFIN_DUCKDB_PATH" in message
    assert isinstance(error.value.__cause__, duckdb.Error)
    assert str(error.value.__cause__) in message


@pytest.mark.parametrize("write", [False, True], ids=["read", "write"])
def test_a_damaged_block_found_by_a_query_names_the_file(tmp_path: Path, write: bool) -> None:
    path = tmp_path / "blofin.duckdb"
    warehouse(path)
    overwrite(path.stat().st_size // 2, os.urandom(4096))(path)  # data, not the catalog
    with pytest.raises(DuckDBDamagedError) as error, connect(path) as con:  # opens fine
        if write:
            with transaction(con):
                con.execute("INSERT INTO bars SELECT * FROM bars")
        else:
            con.execute("SELECT sum(length(s)) FROM bars").fetchall()
    assert str(error.value).startswith(f"DuckDB file {path} is damaged")
    assert "Corrupt database file" in str(error.value) and HINT in str(error.value)


def test_a_damaged_write_ahead_log_is_named_too(tmp_path: Path) -> None:
    source, path = tmp_path / "source.duckdb", tmp_path / "blofin.duckdb"
    with connect(source) as con:
        con.execute("SET checkpoint_threshold = '1GB'")  # the next commit stays in the log
        con.execute("CREATE TABLE bars AS SELECT range AS i FROM range(1000)")
        shutil.copy(source, path)  # a copy of the file and its log as a crash would leave them
        shutil.copy(f"{source}.wal", f"{path}.wal")
    log = Path(f"{path}.wal")
    overwrite(log.stat().st_size // 2, os.urandom(200))(log)
    with pytest.raises(DuckDBDamagedError) as error, connect(path):
        pass
    assert str(error.value).startswith(f"DuckDB file {path} (or its write-ahead log {log})")
    assert "Corrupt WAL file" in str(error.value) and HINT in str(error.value)


def test_a_constraint_broken_inside_a_transaction_is_the_error_raised(tmp_path: Path) -> None:
    """A failing INSERT of a registered frame aborts the transaction; the clean-up after it
    must not replace the constraint's own message with "transaction is aborted"."""
    path = tmp_path / "constraint.duckdb"
    with connect(path) as con:
        con.execute("CREATE TABLE t (x INTEGER PRIMARY KEY, CHECK (x > 0))")
        incoming = pd.DataFrame({"x": [1, -1]})
        with (
            pytest.raises(DuckDBWriteError, match=str(path)) as caught,
            transaction(con),
            registered(con, "incoming", incoming),
        ):
            con.execute("INSERT INTO t SELECT x FROM incoming")
        assert "CHECK constraint" in str(caught.value)
        assert "transaction is aborted" not in str(caught.value).split("\n")[0]
        assert con.execute("SELECT count(*) FROM t").fetchall()[0][0] == 0
