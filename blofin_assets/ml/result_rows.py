"""Rows of ml_model_results from the versions' metadata.json: the history folders are the
source of truth, the table their queryable record."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from blofin_assets.ml.publish import target_definition
from blofin_assets.ml.specs import SPECS_BY_NAME, metric_unit
from blofin_assets.ml.store import ModelStore
from blofin_assets.storage.model_hashes import FROM_METADATA, hash_columns
from blofin_assets.storage.results import METRICS, SEED_TEST_NAMES

METRIC_NAMES = tuple(METRICS)  # each stored as test_<metric> and train_<metric>


def result_row(metadata: dict[str, Any], model_path: str) -> dict[str, Any]:
    """One ml_model_results row from a version's metadata.json; inapplicable metrics are NULL.

    Metrics are copied under one rule, test_<metric> and train_<metric>, with nothing
    derived: a metric the version did not report is NULL (accuracy for a regressor)."""
    metrics = metadata.get("metrics", {})
    train = metadata.get("train_metrics", {})
    window = metadata.get("data_window", {})
    return {
        "model_name": metadata["model_name"],
        "model_type": metadata.get("model_type"),
        "version": metadata["version"],
        "status": metadata.get("status"),
        "status_reason": metadata.get("status_reason"),
        "trained_at": pd.Timestamp(metadata["trained_at"]),
        "run_id": metadata.get("run_id"),
        "code_version": metadata.get("code_version"),
        "params_id": metadata.get("params_id"),
        "params_source": metadata.get("params_source"),
        "train_rows": metadata.get("train_rows"),
        "test_rows": metadata.get("test_rows"),
        "feature_count": metadata.get("feature_count"),
        **{f"test_{metric}": metrics.get(metric) for metric in METRIC_NAMES},
        **{f"train_{metric}": train.get(metric) for metric in METRIC_NAMES},
        **{metric: metrics.get(metric) for metric in SEED_TEST_NAMES},  # the seed's names
        "primary_metric": metadata.get("primary_metric"),
        "primary_value": metadata.get("primary_value"),
        "baseline_value": metadata.get("baseline_value"),
        "skill": metadata.get("skill"),
        "train_seconds": metadata.get("train_seconds"),
        "horizon": metadata.get("horizon_bars"),
        "target_definition": metadata.get("target_definition"),
        "baseline_name": metadata.get("baseline_kind"),
        "baselines": json.dumps(metadata["baselines"]) if "baselines" in metadata else None,
        "skills": json.dumps(metadata["skills"]) if "skills" in metadata else None,
        "skill_p_value": metadata.get("skill_p_value"),
        "data_until": pd.Timestamp(metadata["data_until"]) if metadata.get("data_until") else None,
        "model_path": model_path,
        "data_start": pd.Timestamp(window["start"]) if window.get("start") else None,
        "data_end": pd.Timestamp(window["end"]) if window.get("end") else None,
        "data_sources": ",".join(metadata.get("data_sources", [])) or None,
        "recorded_at": pd.Timestamp.now(tz="UTC"),
        **units(metadata),
        "beyond_noise": beyond_noise(metadata),
        "class_names": class_names(metadata),
        # metadata.json's hashes: append_results prefers the training step's record.
        **hash_columns(metadata.get("sha256") or {}, FROM_METADATA),
    }


def current_spec_measures_the_same(metadata: dict[str, Any]) -> bool:
    """Whether today's spec of this model scores the version's very target definition (label,
    horizon, label code, metric, rules): only then may a unit it did not record be taken from
    the spec without guessing."""
    spec = SPECS_BY_NAME.get(metadata["model_name"])
    recorded = metadata.get("target_definition")
    horizon = metadata.get("horizon_bars")
    if spec is None or recorded is None or horizon is None:
        return False
    return bool(recorded == target_definition(spec, int(horizon)))


def units(metadata: dict[str, Any]) -> dict[str, str | None]:
    """The primary metric's unit and the target's, as recorded; for a version written before
    units were, from the current spec when it measures the same target definition, else NULL."""
    primary = metadata.get("primary_metric")
    if "metric_units" in metadata:
        return {
            "metric_unit": metadata["metric_units"].get(primary) if primary else None,
            "target_unit": metadata.get("target_unit") or None,
        }
    if primary is None or not current_spec_measures_the_same(metadata):
        return {"metric_unit": None, "target_unit": None}
    spec = SPECS_BY_NAME[metadata["model_name"]]
    return {"metric_unit": metric_unit(spec, primary), "target_unit": spec.target_unit or None}


def beyond_noise(metadata: dict[str, Any]) -> bool | None:
    """The version's own beats_baseline verdict (skill_gate's rule: skill > 0, p < 0.05), as
    recorded in its checks; None for a version from before that gate tested noise (it has no
    skill_p_value), whose verdict meant something else."""
    verdict = metadata.get("checks", {}).get("beats_baseline")
    if verdict is None or "skill_p_value" not in metadata:
        return None
    return bool(verdict["passed"])


def class_names(metadata: dict[str, Any]) -> str | None:
    """JSON list of the class names (index = class), NULL for regressors. A version written
    before they were recorded takes its spec's: the class coding of direction (0 down, 1 up)
    and momentum (0 decelerating, 1 neutral, 2 accelerating) has not changed since the first
    release."""
    if "class_names" in metadata:
        names = list(metadata["class_names"])
    else:
        spec = SPECS_BY_NAME.get(metadata["model_name"])
        names = list(spec.class_names) if spec is not None else []
    return json.dumps(names) if names else None


def unrecorded_rows(
    store: ModelStore, model_names: Sequence[str], recorded: set[tuple[str, str]]
) -> list[dict[str, object]]:
    """Rows for every version on disk that the table lacks: a run that died after writing a
    model but before recording it loses nothing, the next run records it."""
    rows = []
    for name in model_names:
        for version in store.version_names(name):
            if (name, version) not in recorded:  # only new versions' files are opened
                metadata = store.read_metadata(name, version)
                path = store.version_dir(name, metadata["version"]) / "model.pkl"
                rows.append(result_row(metadata, str(path)))
    return rows
