"""Which served version predicted which bars, scored once their labels are known.

A version serves from its promotion until the next one, and it was trained on every bar up to
its ``data_until``. So, ordering a model's promoted versions by ``data_until``, version v
answers for the bars t with data_until(v) < t <= data_until(next promoted version), and the
newest one for every bar after its own ``data_until``. Rejected and interrupted versions never
served and answer for nothing; every bar a version answers for is one it never saw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from blofin_assets.forward.outcomes import empty_outcomes, outcome_rows
from blofin_assets.market.clock import as_utc
from blofin_assets.ml.publish import PROMOTED
from blofin_assets.ml.store import ModelStore
from blofin_assets.serving.loading import load_version
from blofin_assets.storage.training_rows import read_labelled_spans

LIVE = "live"


@dataclass(frozen=True)
class ServedSpan:
    """The bars one served version answers for: after ``data_until``, up to ``until``."""

    model_name: str
    version: str
    data_until: pd.Timestamp
    until: pd.Timestamp | None  # inclusive; None while it is the newest promoted version


@dataclass(frozen=True)
class PendingSpan:
    """A span's labelled bars that no stored live outcome covers yet."""

    span: ServedSpan
    rows: pd.DataFrame


def served_spans(
    name: str, versions: Sequence[Mapping[str, Any]], served: str | None
) -> list[ServedSpan]:
    """Each served version's bars, from the versions' metadata (the module docstring's rule).

    A 'promoted' version trained after the served one never served: its run stopped between
    saving and serving it (the next training relabels it 'interrupted'). Versions from before
    ``data_until`` was recorded cannot be placed and are left out; they are all older.
    """
    promoted = [m for m in versions if m.get("status") == PROMOTED and m.get("data_until")]
    current = next((m for m in promoted if m["version"] == served), None)
    if current is not None:
        served_at = pd.Timestamp(current["trained_at"])
        promoted = [m for m in promoted if pd.Timestamp(m["trained_at"]) <= served_at]
    order = sorted(promoted, key=lambda m: (as_utc(m["data_until"]), m["version"]))
    spans = []
    for version, following in zip(order, [*order[1:], None], strict=True):
        start = as_utc(version["data_until"])
        end = as_utc(following["data_until"]) if following is not None else None
        if end is not None and end <= start:
            continue  # retrained on the same bars: the later version took over at once
        if version.get("baseline_kind"):  # else from before baselines were recorded: unscored
            spans.append(ServedSpan(name, version["version"], start, end))
    return spans


def span_bounds(spans: Sequence[ServedSpan], instruments: Sequence[str]) -> pd.DataFrame:
    """One read bound per (version, instrument): the bars the version answers for."""
    bounds = [
        {"span": span.version, "inst_id": inst, "after": span.data_until, "until": span.until}
        for span in spans
        for inst in instruments
        if span.until is None or span.data_until < span.until
    ]
    return pd.DataFrame(bounds, columns=["span", "inst_id", "after", "until"])


def pending_live(
    con: duckdb.DuckDBPyConnection,
    store: ModelStore,
    model_names: Sequence[str],
    instruments: Sequence[str],
) -> list[PendingSpan]:
    """Every served version's labelled bars not scored yet, for ``instruments``: one label
    read per model, leaving out the bars prediction_outcomes already holds (so a bar that
    arrives late, behind bars already scored, is scored too). The read is bounded by the
    features and targets tables, i.e. the training window."""
    pending = []
    for name in model_names:
        spans = served_spans(name, list(store.versions(name)), store.served_version(name))
        bounds = span_bounds(spans, instruments)
        if bounds.empty:
            continue
        rows = read_labelled_spans(con, bounds, unscored_by=(name, LIVE))
        for span in spans:
            own = rows[rows["span"] == span.version]
            if not own.empty:
                pending.append(PendingSpan(span, own.drop(columns="span").reset_index(drop=True)))
    return pending


def score_pending(
    pending: Sequence[PendingSpan], models_dir: str | Path, *, scored_at: pd.Timestamp
) -> pd.DataFrame:
    """The outcomes of the pending bars, each version loaded sha256-verified."""
    frames = []
    for item in pending:
        model = load_version(item.span.model_name, item.span.version, models_dir)
        frames.append(
            outcome_rows(
                model, item.rows, mode=LIVE, data_until=item.span.data_until, scored_at=scored_at
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else empty_outcomes()
