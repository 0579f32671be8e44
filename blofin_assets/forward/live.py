"""Which served version predicted which bars, scored once their labels are known.

A version serves from its promotion until the next one, and it was trained on every bar up to
its ``data_until``. So, ordering a model's promoted versions by ``data_until``, version v
answers for the bars t with data_until(v) < t <= data_until(next promoted version), and the
newest one for every bar after its own ``data_until``. Rejected and interrupted versions never
served and answer for nothing in the live record; every bar a version answers for is one it
never saw.

The shadow record (mode 'shadow') is the same rule for versions that were NOT served: for the
models named (by default only direction_ensemble, which serves only when it beats its
members), a rejected version answers for the bars after its ``data_until`` up to the next
saved version's ``data_until``, whatever that version's status. It is scored by the same code
against the same baseline, so the ensemble has forward figures beside its members' even while
it never serves; a rejected version of the five (e.g. a leak alarm) gets none.
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
from blofin_assets.ml.ensemble import MAY_SERVE_NOTHING
from blofin_assets.ml.publish import PROMOTED, REJECTED
from blofin_assets.ml.store import ModelStore
from blofin_assets.serving.loading import load_version
from blofin_assets.storage.training_rows import read_labelled_spans

LIVE = "live"
SHADOW = "shadow"
SHADOW_MODELS = MAY_SERVE_NOTHING  # the models whose rejected versions are shadow-scored


@dataclass(frozen=True)
class ServedSpan:
    """The bars one served version answers for: after ``data_until``, up to ``until``."""

    model_name: str
    version: str
    data_until: pd.Timestamp
    until: pd.Timestamp | None  # inclusive; None while it is the newest promoted version


@dataclass(frozen=True)
class PendingSpan:
    """A span's labelled bars that no stored outcome of its mode covers yet."""

    span: ServedSpan
    rows: pd.DataFrame
    mode: str = LIVE  # 'live' for a served version's span, 'shadow' for a rejected one's


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
    if not order:
        return []  # nothing was ever served (every version failed an ERROR gate)
    spans = []
    for version, following in zip(order, [*order[1:], None], strict=True):
        start = as_utc(version["data_until"])
        end = as_utc(following["data_until"]) if following is not None else None
        if end is not None and end <= start:
            continue  # retrained on the same bars: the later version took over at once
        if version.get("baseline_kind"):  # else from before baselines were recorded: unscored
            spans.append(ServedSpan(name, version["version"], start, end))
    return spans


def shadow_spans(name: str, versions: Sequence[Mapping[str, Any]]) -> list[ServedSpan]:
    """Each rejected version's bars: after its ``data_until``, up to the next saved version's
    (any status: a newer version, served or not, took over as the model's newest). The rule
    of served_spans otherwise: same bars retrained on hand over at once, and versions without
    ``data_until`` or ``baseline_kind`` cannot be placed or scored."""
    placed = [m for m in versions if m.get("data_until")]
    order = sorted(placed, key=lambda m: (as_utc(m["data_until"]), m["version"]))
    spans = []
    for version, following in zip(order, [*order[1:], None], strict=True):
        if version.get("status") != REJECTED or not version.get("baseline_kind"):
            continue
        start = as_utc(version["data_until"])
        end = as_utc(following["data_until"]) if following is not None else None
        if end is None or end > start:
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


def pending_in(
    con: duckdb.DuckDBPyConnection,
    spans: Sequence[ServedSpan],
    instruments: Sequence[str],
    mode: str,
) -> list[PendingSpan]:
    """One model's spans' labelled bars that ``mode`` has not scored yet: one label read."""
    bounds = span_bounds(spans, instruments)
    if bounds.empty:
        return []
    rows = read_labelled_spans(con, bounds, unscored_by=(spans[0].model_name, mode))
    pending = []
    for span in spans:
        own = rows[rows["span"] == span.version]
        if not own.empty:
            pending.append(PendingSpan(span, own.drop(columns="span").reset_index(drop=True), mode))
    return pending


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
        pending += pending_in(con, spans, instruments, LIVE)
    return pending


def pending_shadow(
    con: duckdb.DuckDBPyConnection,
    store: ModelStore,
    model_names: Sequence[str],
    instruments: Sequence[str],
) -> list[PendingSpan]:
    """Every rejected version's labelled bars not shadow-scored yet, for the ``model_names``
    given (callers pass only the models meant to have a shadow record: SHADOW_MODELS)."""
    pending = []
    for name in model_names:
        pending += pending_in(
            con, shadow_spans(name, list(store.versions(name))), instruments, SHADOW
        )
    return pending


def pending_outcomes(
    con: duckdb.DuckDBPyConnection,
    store: ModelStore,
    model_names: Sequence[str],
    instruments: Sequence[str],
    shadow_names: Sequence[str] = SHADOW_MODELS,
) -> list[PendingSpan]:
    """The live record's pending bars for every model, then the shadow record's for those of
    ``model_names`` in ``shadow_names`` only."""
    shadowed = [name for name in model_names if name in shadow_names]
    return [
        *pending_live(con, store, model_names, instruments),
        *pending_shadow(con, store, shadowed, instruments),
    ]


def score_pending(
    pending: Sequence[PendingSpan], models_dir: str | Path, *, scored_at: pd.Timestamp
) -> pd.DataFrame:
    """The outcomes of the pending bars, each version loaded sha256-verified, each in its
    span's mode (the same scoring for live and shadow)."""
    frames = []
    for item in pending:
        model = load_version(item.span.model_name, item.span.version, models_dir)
        frames.append(
            outcome_rows(
                model,
                item.rows,
                mode=item.mode,
                data_until=item.span.data_until,
                scored_at=scored_at,
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else empty_outcomes()
