"""Rows of ml_model_results from the versions' metadata.json: the history folders are the
source of truth, the table their queryable record."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from blofin_assets.ml.store import ModelStore


def result_row(metadata: dict[str, Any], model_path: str) -> dict[str, Any]:
    """One ml_model_results row from a version's metadata.json; inapplicable metrics are NULL."""
    metrics = metadata.get("metrics", {})
    train = metadata.get("train_metrics", {})
    classification = "accuracy" in metrics
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
        "train_rows": metadata.get("train_rows"),
        "test_rows": metadata.get("test_rows"),
        "feature_count": metadata.get("feature_count"),
        "train_accuracy": train.get("accuracy") if classification else None,
        "test_accuracy": metrics.get("accuracy") if classification else None,
        "f1": metrics.get("f1"),
        "precision": metrics.get("precision"),
        "recall": metrics.get("recall"),
        "r2": metrics.get("r2"),
        "mae": metrics.get("mae"),
        "rmse": metrics.get("rmse"),
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
        "log_loss": metrics.get("log_loss"),
        "data_until": pd.Timestamp(metadata["data_until"]) if metadata.get("data_until") else None,
        "brier": metrics.get("brier"),
        "model_path": model_path,
        "data_start": pd.Timestamp(window["start"]) if window.get("start") else None,
        "data_end": pd.Timestamp(window["end"]) if window.get("end") else None,
        "data_sources": ",".join(metadata.get("data_sources", [])) or None,
        "recorded_at": pd.Timestamp.now(tz="UTC"),
    }


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
