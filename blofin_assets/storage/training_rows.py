"""Reads of the features and targets tables for training and scoring."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from blofin_assets.ml.row_plan import RowPlan, plan_rows
from blofin_assets.ml.specs import ModelSpec
from blofin_assets.storage.connection import query_frame, registered
from blofin_assets.storage.outcomes import OUTCOMES_TABLE
from blofin_assets.storage.sql import quote_identifier, scalar, table_columns, table_exists

# Above this share of the labelled rows a keyed read costs more than it saves.
PLANNED_READ_SHARE = 0.9
LABELLED_JOIN = "features f JOIN targets t USING (inst_id, ts)"
TRAINING_ORDER = "ORDER BY ts, inst_id"


def read_training_frame(
    con: duckdb.DuckDBPyConnection,
    columns: Sequence[str] | None = None,
    *,
    keys: pd.DataFrame | None = None,
    since: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Labelled rows: features joined to targets on (inst_id, ts), in time order.

    Given ``columns`` (a model's own: its features, target, baselines), only those are read:
    each model step reads this frame, and the other targets' labels are a third of its width.
    Given ``keys`` (inst_id, ts rows of read_training_keys, e.g. a row plan's), only those rows
    are read, in the same order; a key with no labelled row is an error, not a shorter frame.
    Given ``since``, only rows at or after it (the ensemble learns from its members' later
    bars only).
    """
    select = _training_select(con, columns)
    if keys is None:
        where, params = ("WHERE ts >= ?", [since]) if since is not None else ("", [])
        return query_frame(
            con, f"SELECT {select} FROM {LABELLED_JOIN} {where} {TRAINING_ORDER}", params
        )
    if since is not None:
        raise ValueError("give keys or since, not both")
    wanted = pa.Table.from_pandas(keys[["inst_id", "ts"]], preserve_index=False)
    # Each table narrowed to the planned keys before the join, so the join's hash table holds
    # the planned rows, not every labelled row's target columns.
    planned = "SEMI JOIN planned_keys k USING (inst_id, ts)"
    with registered(con, "planned_keys", wanted):
        frame = query_frame(
            con,
            f"SELECT {select} FROM (SELECT * FROM features {planned}) f "
            f"JOIN (SELECT * FROM targets {planned}) t USING (inst_id, ts) {TRAINING_ORDER}",
        )
    if len(frame) != len(keys):
        raise ValueError(
            f"{len(keys)} planned training rows, {len(frame)} found in features/targets: "
            "the tables changed between the key read and the row read"
        )
    return frame


def read_training_keys(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """(inst_id, ts) of every labelled row, in read_training_frame's order: all a row plan
    (ml/row_plan.py) needs, a fraction of the wide read."""
    return query_frame(con, f"SELECT inst_id, ts FROM {LABELLED_JOIN} {TRAINING_ORDER}")


def _training_select(con: duckdb.DuckDBPyConnection, columns: Sequence[str] | None) -> str:
    stored = {table: table_columns(con, table) for table in ("features", "targets")}
    for table, stored_columns in stored.items():
        if not stored_columns:
            raise ValueError(f"table {table!r} does not exist yet: materialize it first")
    if columns is None:
        return "f.*, t.* EXCLUDE (inst_id, ts)"
    missing = [c for c in columns if c not in stored["features"] and c not in stored["targets"]]
    if missing:
        raise ValueError(
            f"features/targets tables lack {len(missing)} column(s) the model needs: "
            f"{missing}; rematerialize features and targets"
        )
    return ", ".join(
        # inst_id and ts are the join keys (USING): unqualified, once.
        quote_identifier(c)
        if c in ("inst_id", "ts")
        else f"{'f' if c in stored['features'] else 't'}.{quote_identifier(c)}"
        for c in dict.fromkeys(["inst_id", "ts", *columns])
    )


SPAN_COLUMNS = ["span", "inst_id", "after", "until"]


def read_labelled_spans(
    con: duckdb.DuckDBPyConnection,
    spans: pd.DataFrame,
    *,
    unscored_by: tuple[str, str] | None = None,
) -> pd.DataFrame:
    """Labelled rows (every features and targets column) inside per-instrument spans of bars.

    ``spans`` holds SPAN_COLUMNS: a ``span`` label (e.g. a model version) returned on its rows,
    ``inst_id``, ``after`` (exclusive) and ``until`` (inclusive; NaT = no end). One query for
    every span: a forward record asks for one span per version and instrument each hour.
    With ``unscored_by`` = (model_name, mode), rows that prediction_outcomes already holds for
    that model, mode and version (the span label) are left out, wherever they lie in the span:
    a bar back-filled behind the newest scored one is still scored. Rows are in (span, ts,
    inst_id) order.
    """
    missing = [c for c in SPAN_COLUMNS if c not in spans.columns]
    if missing:
        raise ValueError(f"spans lack columns {missing}")
    for table in ("features", "targets"):
        if not table_columns(con, table):
            raise ValueError(f"table {table!r} does not exist yet: materialize it first")
    bounds = spans[SPAN_COLUMNS].astype({"span": str, "inst_id": str})
    for column in ("after", "until"):
        bounds[column] = pd.to_datetime(bounds[column], utc=True)
    if bounds["after"].isna().any():
        raise ValueError("every span needs an `after` bound: a bar the reader has not seen")
    unscored, params = "", []
    if unscored_by is not None and table_exists(con, OUTCOMES_TABLE):
        unscored = (
            f"WHERE NOT EXISTS (SELECT 1 FROM {OUTCOMES_TABLE} o WHERE o.inst_id = f.inst_id "
            "AND o.ts = f.ts AND o.model_version = s.span AND o.model_name = ? AND o.mode = ?) "
        )
        params = list(unscored_by)
    with registered(con, "labelled_spans", bounds):
        return query_frame(
            con,
            "SELECT s.span, f.*, t.* EXCLUDE (inst_id, ts) FROM labelled_spans s "
            "JOIN features f ON f.inst_id = s.inst_id AND f.ts > s.after "
            "AND (s.until IS NULL OR f.ts <= s.until) "
            "JOIN targets t ON t.inst_id = f.inst_id AND t.ts = f.ts "
            f"{unscored}ORDER BY s.span, f.ts, f.inst_id",
            params,
        )


def latest_feature_rows(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Each instrument's newest features row: the latest closed bar, label not known yet."""
    return query_frame(
        con,
        "SELECT * FROM features QUALIFY row_number() OVER (PARTITION BY inst_id ORDER BY ts DESC)"
        " = 1 ORDER BY inst_id",
    )


def label_balance(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Class shares of the stored labels, so a skewed horizon shows in the catalog."""
    up_share = scalar(con, "SELECT avg(target_direction) FROM targets")
    shares = con.execute(
        "SELECT target_momentum, count(*) / sum(count(*)) OVER () FROM targets "
        "GROUP BY target_momentum ORDER BY target_momentum"
    ).fetchall()
    return {
        "direction_up_share": float(up_share) if up_share is not None else float("nan"),
        "momentum_class_shares": {str(k): round(float(v), 4) for k, v in shares},
    }


def read_model_rows(
    con: duckdb.DuckDBPyConnection,
    spec: ModelSpec,
    columns: Sequence[str],
    *,
    horizon: int,
    test_fraction: float,
) -> tuple[pd.DataFrame, RowPlan | None]:
    """A model's training frame and, for a spec with row caps, its row plan: the keys of every
    labelled row are read, the split and caps planned on them, and only the planned rows'
    ``columns`` are read (``train_model(spec, frame, plan=plan)`` is then the model the whole
    frame gives). A spec whose caps cannot bind (fewer labelled rows than every cap), or keep
    nearly every row, reads everything at once and returns no plan (train_model plans on the
    frame itself: the same rows)."""
    _training_select(con, columns)  # missing tables or columns: the clear error, first
    caps = [cap for cap in (spec.max_train_rows, spec.max_test_rows) if cap is not None]
    if not caps or scalar(con, f"SELECT count(*) FROM {LABELLED_JOIN}") <= min(caps):
        return read_training_frame(con, columns), None
    keys = read_training_keys(con)
    if keys.empty:
        raise ValueError("features and targets share no labelled row yet: nothing to train on")
    plan = plan_rows(
        spec, keys["ts"], keys["inst_id"], horizon=horizon, test_fraction=test_fraction
    )
    if len(plan.positions) > PLANNED_READ_SHARE * len(keys):  # the caps keep nearly all
        return read_training_frame(con, columns), None
    return read_training_frame(con, columns, keys=keys.iloc[plan.positions]), plan
