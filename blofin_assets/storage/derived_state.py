"""What the last build of each derived table was made from (derived_table_state), and the
verdict it gives: append to the stored rows, or rebuild them and why."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import duckdb
import pandas as pd

from blofin_assets.storage.connection import query_frame, registered
from blofin_assets.storage.derived_rows import RowStats
from blofin_assets.storage.fingerprints import candle_content, per_instrument
from blofin_assets.storage.sql import quote_identifier, table_columns

if TYPE_CHECKING:  # the table description is passed in; importing it at run time is a cycle
    from blofin_assets.storage.derived import DerivedTable


STATE_TABLE = "derived_table_state"


STATE_DDL = f"""
CREATE TABLE IF NOT EXISTS {STATE_TABLE} (
    table_name VARCHAR NOT NULL,
    inst_id VARCHAR NOT NULL,
    code_version VARCHAR NOT NULL,
    settings VARCHAR NOT NULL,
    candles_through TIMESTAMPTZ NOT NULL,
    candle_count BIGINT NOT NULL,
    candle_content_hash UBIGINT NOT NULL,
    row_count BIGINT NOT NULL,
    row_hash UBIGINT NOT NULL,
    last_row_ts TIMESTAMPTZ,
    built_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (table_name, inst_id)
)
"""


def ensure_state_table(con: duckdb.DuckDBPyConnection) -> None:
    """Create the bookkeeping table; one from an older layout is replaced (forcing a rebuild)."""
    expected = ["table_name", "inst_id", "code_version", "settings", "candles_through",
                "candle_count", "candle_content_hash", "row_count", "row_hash", "last_row_ts",
                "built_at"]  # fmt: skip
    stored = table_columns(con, STATE_TABLE)  # [] when it does not exist
    if stored == expected:
        return
    if stored:
        con.execute(f"DROP TABLE {STATE_TABLE}")
    con.execute(STATE_DDL)


def stored_row_stats(con: duckdb.DuckDBPyConnection, name: str) -> RowStats:
    found = con.execute(
        f"SELECT inst_id, row_count, row_hash FROM {STATE_TABLE} WHERE table_name = ?", [name]
    ).fetchall()
    return {inst: (int(count), int(content)) for inst, count, content in found}


def candles_against_last_build(
    con: duckdb.DuckDBPyConnection, table_name: str, instruments: Sequence[str]
) -> tuple[pd.DataFrame, str]:
    """Per instrument of ``instruments`` that has candles: newest candle, count and content
    hash of all its stored candles (to record), and whether the candles up to the last build's
    newest one still match what was recorded then (``changed``; ``count_then``/``stored_count``
    say by how many rows).

    The totals come from ``fingerprints.per_instrument`` (kept by every insert); the part up
    to the last build's newest candle is the total less the candles after it, so only the
    candles that arrived since are hashed here, not the whole history.  The string says where
    the totals came from (``fingerprints.per_instrument``).
    """
    everything, source = per_instrument(con)
    current = everything.loc[everything["inst_id"].isin(list(instruments))].reset_index(drop=True)
    stored = {
        inst: (pd.Timestamp(through), int(count), int(content))
        for inst, through, count, content in con.execute(
            f"SELECT inst_id, candles_through, candle_count, candle_content_hash FROM "
            f"{STATE_TABLE} WHERE table_name = ?",
            [table_name],
        ).fetchall()
    }
    since: dict[str, tuple[int, int]] = {}
    if stored:
        # A constant lower bound lets DuckDB skip row groups by their min/max ts.
        earliest = min(through for through, _, _ in stored.values())
        since = {
            inst: (int(count), int(content))
            for inst, count, content in con.execute(
                f"SELECT c.inst_id, count(*), bit_xor({candle_content('c')}) FROM candles c "
                f"JOIN {STATE_TABLE} s ON s.table_name = ? AND s.inst_id = c.inst_id "
                "WHERE c.ts > s.candles_through AND c.ts > ? GROUP BY c.inst_id",
                [table_name, earliest.to_pydatetime()],
            ).fetchall()
        }
    count_then, stored_count, changed = [], [], []
    for inst, count, content in zip(
        current["inst_id"], current["candle_count"], current["content_hash"], strict=True
    ):
        later_count, later_content = since.get(inst, (0, 0))
        then = (int(count) - later_count, int(content) ^ later_content)
        record = stored.get(inst)
        count_then.append(then[0])
        stored_count.append(None if record is None else record[1])
        changed.append(record is not None and record[1:] != then)
    return pd.DataFrame(
        {
            "inst_id": current["inst_id"],
            "candles_through": current["last_ts"],
            "candle_count": current["candle_count"],
            "candle_content_hash": current["content_hash"],
            "count_then": count_then,
            "stored_count": pd.array(stored_count, dtype="Int64"),
            "changed": changed,
        }
    ), source


def rebuild_reason(
    con: duckdb.DuckDBPyConnection, table: DerivedTable, fingerprints: pd.DataFrame
) -> str | None:
    """Why the stored rows cannot be appended to, or None when they can."""
    stored = table_columns(con, table.name)  # [] when it does not exist
    if not stored:
        return "first build: the table does not exist yet"
    if stored != table.columns:
        return "the stored table's columns differ from this code's"
    state = query_frame(
        con,
        f"SELECT inst_id, code_version, settings, row_count, last_row_ts FROM {STATE_TABLE} "
        "WHERE table_name = ?",
        [table.name],
    )
    if state.empty:
        return "no record of how the stored rows were built"
    versions = sorted(set(state["code_version"]))
    if versions != [table.code_version]:
        return f"code version changed: {', '.join(versions)} -> {table.code_version}"
    if set(state["settings"]) != {table.settings_json()}:
        return f"settings changed: {settings_change(state['settings'].iloc[0], table)}"

    changed = fingerprints.loc[fingerprints["changed"]]
    vanished = sorted(set(state["inst_id"]) - set(fingerprints["inst_id"]))
    if len(changed) or vanished:
        details = [
            f"{inst} ({int(now) - int(then):+d} rows)"
            for inst, then, now in zip(
                changed["inst_id"], changed["stored_count"], changed["count_then"], strict=True
            )
        ] + [f"{inst} (all candles gone)" for inst in vanished]
        more = f" and {len(details) - 5} more" if len(details) > 5 else ""
        return f"candles at or before the last build changed for {', '.join(details[:5])}{more}"

    # Rows per instrument and the newest of each must be what the last build recorded; the
    # content hash is kept up to date from those rows, not re-read (that would cost a scan).
    actual = {
        inst: (int(count), pd.Timestamp(last))
        for inst, count, last in con.execute(
            f"SELECT inst_id, count(*), max(ts) FROM {quote_identifier(table.name)} "
            "GROUP BY inst_id"
        ).fetchall()
    }
    recorded = {
        inst: (int(count), pd.Timestamp(last))
        for inst, count, last in zip(
            state["inst_id"], state["row_count"], state["last_row_ts"], strict=True
        )
        if count
    }
    if actual != recorded:
        return "the stored rows are not the ones the last build left (edited outside the asset)"
    return None


def settings_change(stored_json: str, table: DerivedTable) -> str:
    """Only the settings that differ, e.g. ``instruments [...] -> [...]``."""
    stored, current = json.loads(stored_json), json.loads(table.settings_json())
    changed = [
        f"{key} {stored.get(key, '(none)')} -> {current.get(key, '(none)')}"
        for key in sorted(stored.keys() | current.keys())
        if stored.get(key) != current.get(key)
    ]
    return "; ".join(changed) or f"{stored_json} -> {table.settings_json()}"


def stored_marks(con: duckdb.DuckDBPyConnection, table_name: str) -> pd.DataFrame:
    """Per instrument, the newest stored row: appending starts right after it."""
    return query_frame(
        con,
        f"SELECT inst_id, last_row_ts AS mark FROM {STATE_TABLE} "
        "WHERE table_name = ? AND last_row_ts IS NOT NULL",
        [table_name],
    )


def save_state(
    con: duckdb.DuckDBPyConnection,
    table: DerivedTable,
    fingerprints: pd.DataFrame,
    stats: RowStats,
    last_row_ts: dict[str, pd.Timestamp],
) -> None:
    """Record what the rows were built from, for the next run's rebuild_reason."""
    con.execute(f"DELETE FROM {STATE_TABLE} WHERE table_name = ?", [table.name])
    recorded = fingerprints[
        ["inst_id", "candles_through", "candle_count", "candle_content_hash"]
    ].assign(
        row_count=[stats.get(inst, (0, 0))[0] for inst in fingerprints["inst_id"]],
        row_hash=pd.array(
            [stats.get(inst, (0, 0))[1] for inst in fingerprints["inst_id"]], dtype="uint64"
        ),
        last_row_ts=[last_row_ts.get(inst) for inst in fingerprints["inst_id"]],
    )
    recorded["last_row_ts"] = pd.to_datetime(recorded["last_row_ts"], utc=True)
    with registered(con, "recorded", recorded):
        con.execute(
            f"INSERT INTO {STATE_TABLE} SELECT ?, inst_id, ?, ?, candles_through, candle_count, "
            "candle_content_hash, row_count, row_hash, last_row_ts, now() FROM recorded",
            [table.name, table.code_version, table.settings_json()],
        )
