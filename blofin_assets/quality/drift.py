"""Has the market moved away from what the served model learnt? Two verdicts per model.

``feature_drift``: each input feature over the last 24 h of stored bars (ending at the newest
row of ``features``) against the served version's training block, the rows from its
metadata.json ``data_window`` ``start`` to ``train_end``, read back from ``features``.
``label_drift``: the same for the model's label (in the space the estimator fits: a price as
its H-bar log return) over the last 24 h of labelled rows in ``targets``, with the base rates
(class shares, or median and spread) side by side. The statistics are in drift_stats.py.

The features and targets tables keep only the training window (BLOFIN_TRAINING_DAYS back from
the newest bar), so the block of a version that has stayed served while newer bars arrived is
partly gone: the comparison uses the rows still stored and says what share of the block that
is; once fewer than MIN_CALIBRATION_DAYS whole days of it remain the verdict fails (WARN) as
not measurable, because the one model nobody retrained is the one whose drift matters.

Measured on 80 consecutive demo days (see drift_stats.py for the features): no label drifts
(largest PSI: direction 0.03, momentum 0.18, risk 0.62, volatility 1.49, price 0.72). With the
last day's volatility ten times larger, volatility (PSI 4.4 to 7.2) and price (1.7 to 2.5)
drift on all five days tried; direction, momentum and risk do not, as they should not: a sign
does not scale, and momentum and risk are measured in the instrument's own trailing volatility.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from blofin_assets.market.clock import as_utc
from blofin_assets.ml.specs import ModelSpec
from blofin_assets.ml.store import ModelStore
from blofin_assets.ml.target_space import in_model_space
from blofin_assets.ml.verdict import Verdict
from blofin_assets.quality.drift_stats import (
    BINS,
    DRIFT_MULTIPLE,
    MIN_CALIBRATION_DAYS,
    PSI_SIGNIFICANT,
    RECENT_WINDOW,
    ColumnDrift,
    by_importance,
    compare_columns,
    drift_table,
)
from blofin_assets.storage.connection import query_frame
from blofin_assets.storage.sql import quote_identifier, scalar, table_columns

# A read is thinned to about this many rows, evenly over time, beyond it: deciles and PSI
# need thousands of rows, not millions (hundreds of instruments x 14 days of 1m bars).
MAX_ROWS = 250_000
MIN_RECENT_ROWS = 100
RULE = (
    f"drifted when PSI (last 24 h vs training block, {BINS} bins at its deciles) > "
    f"max({PSI_SIGNIFICANT}, {DRIFT_MULTIPLE:g} x the PSI of the block's most unusual day)"
)


def block_bounds(metadata: Mapping[str, Any]) -> tuple[pd.Timestamp, pd.Timestamp]:
    window = metadata.get("data_window") or {}
    if not window.get("start") or not window.get("train_end"):
        raise ValueError(
            f"metadata.json of {metadata.get('model_name')}/{metadata.get('version')} has no "
            f"data_window start/train_end (has {sorted(window)}): cannot find its training block"
        )
    return as_utc(window["start"]), as_utc(window["train_end"])


def read_rows(
    con: duckdb.DuckDBPyConnection,
    select: str,
    source: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
) -> pd.DataFrame:
    """Rows with start < ts <= end, thinned evenly in time to about MAX_ROWS; ``source`` is a
    FROM clause whose key columns are ``inst_id`` and ``ts``."""
    params: list[object] = [start.to_pydatetime(), end.to_pydatetime()]
    where = "ts > ? AND ts <= ?"
    rows = int(scalar(con, f"SELECT count(*) FROM {source} WHERE {where}", params))
    step = -(-rows // MAX_ROWS)
    thin = "" if step <= 1 else f"QUALIFY row_number() OVER (ORDER BY ts, inst_id) % {step} = 0"
    return query_frame(con, f"SELECT ts, {select} FROM {source} WHERE {where} {thin}", params)


def not_measured(name: str, description: str, **metadata: Any) -> Verdict:
    return Verdict(name, False, "WARN", description, {"judged": False, **metadata})


def served_context(metadata: Mapping[str, Any]) -> dict[str, Any]:
    start, train_end = block_bounds(metadata)
    return {
        "served_version": str(metadata.get("version", "")),
        "training_block": f"{start.isoformat()} .. {train_end.isoformat()}",
    }


def compare(
    check_name: str,
    reference: pd.DataFrame,
    recent: pd.DataFrame,
    columns: Sequence[str],
    metadata: Mapping[str, Any],
    table: str,
) -> tuple[list[ColumnDrift], dict[str, Any]] | Verdict:
    """The columns' drifts and what was compared, or the verdict that says why nothing was."""
    start, train_end = block_bounds(metadata)
    context = served_context(metadata)
    stored_from = reference["ts"].min() if not reference.empty else None
    coverage = (
        0.0
        if stored_from is None
        else min(1.0, (train_end - stored_from) / max(train_end - start, pd.Timedelta(1)))
    )
    drifts, days, non_finite = compare_columns(reference, recent, columns)
    figures = {
        **context,
        "rule": RULE,
        "reference_rows": len(reference),
        "recent_rows": len(recent),
        "recent_window": (
            f"{recent['ts'].min().isoformat()} .. {recent['ts'].max().isoformat()}"
            if not recent.empty
            else "none"
        ),
        "block_stored_share": round(float(coverage), 4),
        "calibration_days": days,
        "non_finite_rows": non_finite,
    }
    if len(recent) < MIN_RECENT_ROWS:
        return not_measured(
            check_name,
            f"{len(recent)} rows in the last 24 h of {table} (fewer than {MIN_RECENT_ROWS}): "
            "too few to compare",
            **figures,
        )
    if days < MIN_CALIBRATION_DAYS:
        block = f"the training block of {context['served_version']} ({context['training_block']})"
        needs = f"the drift yardstick needs {MIN_CALIBRATION_DAYS}"
        if coverage >= 0.999:  # a young history, not a lost one: nothing to warn about
            return Verdict(
                check_name,
                True,
                "WARN",
                f"not judged: {block} holds {days} whole day(s); {needs}",
                {"judged": False, **figures},
            )
        return not_measured(
            check_name,
            f"drift not measurable: {table} no longer holds {block}: it starts {stored_from}, "
            f"so {days} whole day(s) of the block are left; {needs}",
            **figures,
        )
    figures["recent_rows_in_training_block"] = int((recent["ts"] <= train_end).sum())
    return drifts, figures


def caveats(figures: Mapping[str, Any]) -> str:
    """What weakens the comparison, said in the description rather than only in metadata."""
    notes = []
    if figures["block_stored_share"] < 0.999:
        notes.append(
            f"only {figures['block_stored_share']:.0%} of the training block is still stored"
        )
    if figures["recent_rows_in_training_block"]:
        notes.append(
            f"{figures['recent_rows_in_training_block']} of the {figures['recent_rows']} recent "
            "rows are inside the training block"
        )
    return f" ({'; '.join(notes)})" if notes else ""


def stored_block(
    con: duckdb.DuckDBPyConnection, select: str, source: str, metadata: Mapping[str, Any]
) -> pd.DataFrame:
    start, train_end = block_bounds(metadata)
    # data_window.start is the block's first row: the bound is inclusive.
    return read_rows(con, select, source, start - pd.Timedelta(microseconds=1), train_end)


def recent_rows(con: duckdb.DuckDBPyConnection, select: str, source: str) -> pd.DataFrame:
    newest = scalar(con, f"SELECT max(ts) FROM {source}")
    if newest is None:
        return pd.DataFrame({"ts": pd.Series([], dtype="datetime64[ns, UTC]")})
    newest = as_utc(newest)
    return read_rows(con, select, source, newest - RECENT_WINDOW, newest)


def feature_drift(
    con: duckdb.DuckDBPyConnection, metadata: Mapping[str, Any], features: Sequence[str]
) -> Verdict:
    """The served version's input features, last 24 h against its training block."""
    name = "feature_drift"
    missing = [f for f in features if f not in table_columns(con, "features")]
    if missing:
        return not_measured(
            name, f"features table lacks {len(missing)} input(s) of the version: {missing}"
        )
    select = ", ".join(quote_identifier(f) for f in features)
    reference = stored_block(con, select, "features", metadata)
    recent = recent_rows(con, select, "features")
    compared = compare(name, reference, recent, features, metadata, "features")
    if isinstance(compared, Verdict):
        return compared
    drifts, figures = compared
    importances = {k: float(v) for k, v in (metadata.get("feature_importances") or {}).items()}
    drifted = by_importance(drifts, importances)
    worst = max(drifts, key=lambda d: d.psi)
    psi_of = {d.column: d.psi for d in drifts}
    named = ", ".join(f"{f} (PSI {psi_of[f]:.2f})" for f in drifted[:8])
    more = f" and {len(drifted) - 8} more" if len(drifted) > 8 else ""
    nearest = max(drifts, key=lambda d: d.psi / d.threshold)
    description = (
        f"{len(drifted)} of {len(drifts)} features drifted in the last 24 h from the training "
        f"block of {figures['served_version']}, most important first: {named}{more}"
        if drifted
        else f"no feature drifted from the training block of {figures['served_version']} "
        f"({len(drifts)} compared; nearest its threshold: {nearest.column}, PSI "
        f"{nearest.psi:.3f} of {nearest.threshold:.3f})"
    ) + caveats(figures)
    return Verdict(
        name,
        not drifted,
        "WARN",
        description,
        {
            "judged": True,
            "max_psi": round(worst.psi, 4),
            "max_psi_feature": worst.column,
            # Crosses 1 when the check warns: the number to plot beside max_psi.
            "max_psi_to_threshold": round(nearest.psi / nearest.threshold, 4),
            "max_ks": round(max(d.ks for d in drifts), 4),
            "drifted_count": len(drifted),
            "drifted_features": drifted,
            **figures,
            "per_feature": drift_table(drifts, importances),
        },
    )


def base_rates(spec: ModelSpec, values: np.ndarray) -> dict[str, float]:
    """What a person compares first: each class's share, or the median and 90 % range."""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return {}
    if spec.task == "classification":
        names = spec.class_names or tuple(str(c) for c in sorted(np.unique(values)))
        return {n: round(float(np.mean(values == i)), 4) for i, n in enumerate(names)}
    low, median, high = np.quantile(values, [0.05, 0.5, 0.95])
    return {"p05": float(low), "median": float(median), "p95": float(high)}


def labels_in_model_space(spec: ModelSpec, frame: pd.DataFrame) -> pd.DataFrame:
    values = in_model_space(spec, frame[spec.target].to_numpy(dtype="float64"), frame)
    return pd.DataFrame({"ts": frame["ts"], spec.target: values})


def label_drift(
    con: duckdb.DuckDBPyConnection, metadata: Mapping[str, Any], spec: ModelSpec
) -> Verdict:
    """The model's label, last 24 h of labelled rows against its training block (labels exist
    only for bars whose horizon has closed, so the window ends H bars before the newest)."""
    name = "label_drift"
    if spec.target not in table_columns(con, "targets"):
        return not_measured(name, f"targets table has no column {spec.target}")
    target = quote_identifier(spec.target)
    source = (
        f"(SELECT t.inst_id, t.ts, t.{target}, f.close FROM targets t "
        "JOIN features f USING (inst_id, ts)) AS labelled"
    )
    select = f"{target}, close"
    reference = labels_in_model_space(spec, stored_block(con, select, source, metadata))
    recent = labels_in_model_space(spec, recent_rows(con, select, source))
    compared = compare(name, reference, recent, [spec.target], metadata, "targets")
    if isinstance(compared, Verdict):
        return compared
    (drift,), figures = compared
    space = " as its H-bar log return" if spec.target_transform == "log_return" else ""
    before = base_rates(spec, reference[spec.target].to_numpy())
    after = base_rates(spec, recent[spec.target].to_numpy())
    rates = ", ".join(f"{k} {before[k]:.4g} -> {after.get(k, float('nan')):.4g}" for k in before)
    verdict = "drifted" if drift.drifted else "did not drift"
    return Verdict(
        name,
        not drift.drifted,
        "WARN",
        f"{spec.target}{space} {verdict} in the last 24 h of labels from the training block of "
        f"{figures['served_version']}: PSI {drift.psi:.3f} (threshold {drift.threshold:.3f}); "
        f"training -> last 24 h: {rates}{caveats(figures)}",
        {
            "judged": True,
            "psi": round(drift.psi, 4),
            "threshold": round(drift.threshold, 4),
            "ks": round(drift.ks, 4),
            "target": spec.target,
            "training_base_rates": before,
            "recent_base_rates": after,
            **figures,
        },
    )


def served_model(store: ModelStore, name: str) -> tuple[dict[str, Any], list[str]] | None:
    """The served version's metadata.json and its input features (config.json), read from one
    resolved version directory so a promotion in between cannot mix two versions; None when
    nothing is served."""
    directory = store.served_dir(name)
    if directory is None:
        return None
    metadata = store.read_metadata(name, directory.name)
    config = json.loads((directory / "config.json").read_text())
    features = config.get("features") or list(metadata.get("feature_importances") or {})
    if not features:
        raise ValueError(f"{directory}: config.json names no features and metadata no importances")
    return metadata, list(features)


def nothing_served(check_name: str, name: str) -> Verdict:
    return Verdict(
        check_name,
        True,
        "WARN",
        f"no served version of {name}: nothing to compare",
        {"judged": False, "served_version": "none"},
    )
