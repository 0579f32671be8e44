"""Why candle rows are set aside, and how a refused batch is reported.

Every check of ``validate_candles`` marks rows in one ``RowFlags``; a row keeps the first reason
that hit it (``REASONS`` order), so it is reported once. The rejected rows become a frame a
reader can act on (raw values, origin, reason) and, in reject mode, one error whose message
leads with the counts and then shows examples of every reason.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from blofin_assets.market.validation.text_parsing import TS_GOOD_KINDS

# Reasons in priority order: a row is reported for the first one that applies.
REASONS: tuple[str, ...] = (
    "missing_value",
    "invalid_instrument",
    "unknown_instrument",
    "bad_timestamp",
    "non_numeric",
    "not_finite",
    "non_positive_price",
    "negative_volume",
    "inconsistent_ohlc",
    "misaligned_ts",
    "unclosed_bar",
    "conflicting_duplicate",
    "bar_size_mismatch",
)
REASON_CODES: dict[str, int] = {name: index + 1 for index, name in enumerate(REASONS)}
REJECTED_COLUMNS: list[str] = ["inst_id", "ts", "raw", "origin", "reason"]
MAX_EXAMPLES = 8


class CandleValidationError(ValueError):
    """A batch was refused; the message says what, where (origins) and how many."""

    def __init__(
        self,
        message: str,
        *,
        counts: dict[str, int] | None = None,
        examples: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.counts = dict(counts or {})
        self.examples = list(examples or [])


class RowFlags:
    """Per-row first-reason bookkeeping, vectorised: code per row + index of a reason text."""

    def __init__(self, n: int) -> None:
        self.code = np.zeros(n, dtype=np.int8)
        self.text = np.zeros(n, dtype=np.int16)
        self.texts: list[str] = [""]

    def flag(self, mask: np.ndarray, reason: str, detail: str) -> None:
        """Rows already flagged keep their earlier reason; the detail text is stored once."""
        hit = mask & (self.code == 0)
        if not hit.any():
            return
        self.texts.append(f"{reason}: {detail}")
        self.code[hit] = REASON_CODES[reason]
        self.text[hit] = len(self.texts) - 1

    def flag_rows(self, rows: np.ndarray, reason: str, detail: str) -> None:
        """``flag`` for checks that find row positions rather than a mask."""
        mask = np.zeros(len(self.code), dtype=bool)
        mask[rows] = True
        self.flag(mask, reason, detail)

    @property
    def ok(self) -> np.ndarray:
        return self.code == 0

    def counts(self) -> dict[str, int]:
        """Rows per reason (every reason, zeros included), for the run's stats."""
        return {reason: int((self.code == REASON_CODES[reason]).sum()) for reason in REASONS}

    def reason_texts(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.texts, dtype=object)[self.text[rows]]


def empty_rejected() -> pd.DataFrame:
    """The rejected frame of a clean batch, typed like a non-empty one."""
    return pd.DataFrame(
        {
            "inst_id": pd.Series([], dtype=object),
            "ts": pd.Series([], dtype="datetime64[ns, UTC]"),
            "raw": pd.Series([], dtype=object),
            "origin": pd.Series([], dtype=object),
            "reason": pd.Series([], dtype=object),
        }
    )


def rejected_frame(
    raw: pd.DataFrame,
    rows: np.ndarray,
    flags: RowFlags,
    ts_kind: np.ndarray,
    ts_ns: np.ndarray,
    origins: pd.Series,
) -> pd.DataFrame:
    """The flagged ``rows`` of ``raw`` as REJECTED_COLUMNS; ts is NaT where it did not parse."""
    bad_ts = np.where(
        np.isin(ts_kind[rows], list(TS_GOOD_KINDS)), ts_ns[rows], np.iinfo(np.int64).min
    )
    inst_values = raw["inst_id"].iloc[rows].astype("string").astype(object)
    return pd.DataFrame(
        {
            "inst_id": inst_values.where(inst_values.notna(), None).to_numpy(dtype=object),
            "ts": pd.DatetimeIndex(bad_ts.view("datetime64[ns]")).tz_localize("UTC"),
            "raw": _raw_text(raw, rows).to_numpy(dtype=object),
            "origin": origins.iloc[rows].astype(str).to_numpy(dtype=object),
            "reason": flags.reason_texts(rows),
        }
    )


def _raw_text(raw: pd.DataFrame, rows: np.ndarray) -> pd.Series:
    """The offending rows as 'col=value, ...' text, so a reader can see exactly what came in."""
    columns = [c for c in raw.columns if c != "origin"]
    if len(rows) == 0:
        return pd.Series([], dtype=object)
    text: pd.Series | None = None
    for column in columns:
        part = raw[column].iloc[rows].astype("string").fillna("<NA>").astype(object)
        part = (column + "=") + part.reset_index(drop=True)
        text = part if text is None else text + ", " + part
    assert text is not None
    return text.astype(object)


def rejection_error(
    source_label: str, stats: dict[str, int], rejected: pd.DataFrame, codes: np.ndarray
) -> CandleValidationError:
    """Counts per reason first, then examples: first one of each reason, then in input order."""
    counts = {r: stats[f"rejected_{r}"] for r in REASONS if stats[f"rejected_{r}"]}
    picked: list[int] = []
    for reason in counts:
        picked.append(int(np.flatnonzero(codes == REASON_CODES[reason])[0]))
    for index in range(len(rejected)):
        if len(picked) >= MAX_EXAMPLES:
            break
        if index not in picked:
            picked.append(index)
    picked = sorted(picked[:MAX_EXAMPLES])
    examples = [
        f"{rejected['origin'].iat[i]}: {rejected['reason'].iat[i]} [{rejected['raw'].iat[i]}]"
        for i in picked
    ]
    summary = ", ".join(f"{reason}: {count}" for reason, count in counts.items())
    message = (
        f"{source_label}: {stats['rows_rejected']} of {stats['rows_in']} candle rows rejected "
        f"({summary}). First examples:\n  "
        + "\n  ".join(examples)
        + "\nFix the source, or pass on_bad_rows='quarantine' to keep the clean rows and "
        "inspect the rejected ones."
    )
    return CandleValidationError(message, counts=counts, examples=examples)
