"""Incoming candles whose (inst_id, ts) is already stored: the same values (the overlap every
incremental fetch re-reads, a no-op) or different ones (a conflict, never dropped silently).

Stored candles are never rewritten, so a conflict either fails the insert, naming how many
rows and showing examples of stored against incoming values, or (quarantine) sets the
incoming row aside in candles_rejected with that comparison as its reason.

The five contract values (open, high, low, close, volume) must be equal. The optional volumes
count only where both sides have them: a file without BloFin's quote volume and BloFin's own
bars describe the same candle.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pandas as pd

from blofin_assets.market.contract import CANDLE_COLUMNS, OPTIONAL_CANDLE_COLUMNS
from blofin_assets.storage.connection import query_frame
from blofin_assets.storage.sql import quote_identifier

VALUE_COLUMNS = [c for c in CANDLE_COLUMNS if c not in ("inst_id", "ts")]
COMPARED_COLUMNS = [*VALUE_COLUMNS, *OPTIONAL_CANDLE_COLUMNS]
MAX_EXAMPLES = 5
REASON = "conflicts_with_stored"


class CandleConflictError(ValueError):
    """Incoming candles disagree with stored ones of the same (inst_id, ts); nothing stored."""


@dataclass(frozen=True)
class Overlap:
    """Incoming rows already stored: how many in all, and the conflicting ones."""

    stored_rows: int
    conflicts: pd.DataFrame  # inst_id, ts, stored_source, stored_<c>, incoming_<c>
    conflict_count: int

    @property
    def unchanged_rows(self) -> int:
        return self.stored_rows - self.conflict_count


def differs(column: str) -> str:
    q = quote_identifier(column)
    if column in OPTIONAL_CANDLE_COLUMNS:
        return f"coalesce(i.{q} <> s.{q}, false)"
    return f"i.{q} IS DISTINCT FROM s.{q}"


def compare_with_stored(
    con: duckdb.DuckDBPyConnection,
    incoming: str,
    span: tuple[pd.Timestamp, pd.Timestamp],
    *,
    all_conflicts: bool,
) -> Overlap:
    """Join the registered ``incoming`` frame to the stored candles on (inst_id, ts); the
    conflicting rows come back in full when ``all_conflicts`` (to quarantine), else examples."""
    join = (
        f"FROM {quote_identifier(incoming)} i JOIN candles s ON s.inst_id = i.inst_id "
        "AND s.ts = i.ts WHERE s.ts >= ? AND s.ts <= ?"  # constant bounds skip row groups
    )
    bounds = [span[0].to_pydatetime(), span[1].to_pydatetime()]
    conflict = " OR ".join(differs(c) for c in COMPARED_COLUMNS)
    stored, conflicting = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE {conflict}) {join}", bounds
    ).fetchall()[0]
    columns = ", ".join(
        f"s.{quote_identifier(c)} AS stored_{c}, i.{quote_identifier(c)} AS incoming_{c}"
        for c in COMPARED_COLUMNS
    )
    limit = "" if all_conflicts else f" LIMIT {MAX_EXAMPLES}"
    conflicts = (
        query_frame(
            con,
            f"SELECT i.inst_id, i.ts, s.source AS stored_source, {columns} {join} AND "
            f"({conflict}) ORDER BY i.inst_id, i.ts{limit}",
            bounds,
        )
        if conflicting
        else pd.DataFrame()
    )
    return Overlap(int(stored), conflicts, int(conflicting))


def comparisons(frame: pd.DataFrame) -> pd.Series:
    """Per conflict, ``close 101.5 -> 101.7, volume 3.2 -> 3.3``: each differing value,
    stored -> incoming (exact reprs, so a difference in the last digit shows)."""
    text = pd.Series("", index=frame.index, dtype=object)
    for column in COMPARED_COLUMNS:
        stored, incoming = frame[f"stored_{column}"], frame[f"incoming_{column}"]
        both = stored.notna() & incoming.notna()
        differ = (both & (stored != incoming)) | (~both & (column in VALUE_COLUMNS))
        part = column + " " + stored.map(repr) + " -> " + incoming.map(repr)
        text = text.where(~differ, text + (text != "").map({True: ", ", False: ""}) + part)
    return text


def described(frame: pd.DataFrame) -> pd.Series:
    """Per conflict: which candle, where the stored one came from, and what differs."""
    ts = pd.to_datetime(frame["ts"], utc=True).map(pd.Timestamp.isoformat)
    parts = zip(frame["inst_id"], ts, frame["stored_source"], comparisons(frame), strict=True)
    return pd.Series(
        [f"{inst} {stamp} (stored from {source}): {diff}" for inst, stamp, source, diff in parts],
        index=frame.index,
        dtype=object,
    )


def conflict_error(overlap: Overlap, *, source: str, incoming_rows: int) -> CandleConflictError:
    """What conflicts, how many, examples and the ways out; the insert is rolled back."""
    examples = list(described(overlap.conflicts.head(MAX_EXAMPLES)))
    more = overlap.conflict_count - len(examples)
    return CandleConflictError(
        f"{source}: {overlap.conflict_count} of {incoming_rows} incoming candles conflict with "
        f"stored candles of the same (inst_id, ts) but different values ({overlap.unchanged_rows} "
        "others are stored with the same values). Stored candles are never rewritten, so nothing "
        "was stored. Conflicts (stored -> incoming):\n  "
        + "\n  ".join(examples)
        + (f"\n  ... and {more} more" if more > 0 else "")
        + "\nIf the incoming candles are the right ones, load them into another "
        "BLOFIN_DUCKDB_PATH; BLOFIN_ON_BAD_ROWS=quarantine keeps the stored candles, loads the "
        "rest and sets the conflicting rows aside in candles_rejected."
    )


def conflicts_as_rejected(overlap: Overlap, *, source: str) -> pd.DataFrame:
    """The conflicting incoming rows in candles_rejected's layout, the comparison as reason."""
    frame = overlap.conflicts
    values = [frame[f"incoming_{c}"].map(lambda v, c=c: f"{c}={v!r}") for c in COMPARED_COLUMNS]
    raw = pd.Series([", ".join(row) for row in zip(*values, strict=True)], index=frame.index)
    reason = (
        f"{REASON}: stored candle (from " + frame["stored_source"] + ") differs, stored -> "
        "incoming: " + comparisons(frame)
    )
    return pd.DataFrame(
        {
            "inst_id": frame["inst_id"].astype(object),
            "ts": frame["ts"],
            "raw": raw,
            "origin": source,
            "reason": reason.astype(object),
        }
    )
