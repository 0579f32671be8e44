"""Train a candidate, judge it, keep it in history, and serve it only if it passed.

A candidate that fails an ERROR gate is kept under history/<version>/ with status 'rejected'
and the reason; the served files stay on the last good version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from blofin_assets.ml.gates import leakage_gate, regression_gate, skill_gate
from blofin_assets.ml.row_plan import RowPlan
from blofin_assets.ml.specs import ModelSpec, metric_unit
from blofin_assets.ml.store import ModelStore
from blofin_assets.ml.tables import TARGETS_CODE_VERSION
from blofin_assets.ml.training import TrainedModel, train_model
from blofin_assets.ml.verdict import Verdict
from blofin_assets.storage.connection import DuckDBFile
from blofin_assets.storage.model_hashes import record_hashes_in

PROMOTED = "promoted"
REJECTED = "rejected"
INTERRUPTED = "interrupted"  # passed every gate, but the process died before serving it


@dataclass(frozen=True)
class PublishedModel:
    trained: TrainedModel
    version: str
    status: str
    status_reason: str
    gates: tuple[Verdict, ...]
    version_dir: Path
    served_version: str | None
    metadata: dict[str, Any]
    interrupted: tuple[str, ...] = ()  # earlier versions found never served, relabelled now


def model_version(trained_at: pd.Timestamp, spec: ModelSpec, run_id: str) -> str:
    """Sortable by time, unique per run: '<UTC time>-<hash of spec and run>'."""
    digest = hashlib.sha256(f"{spec.code_version}:{run_id}".encode()).hexdigest()[:8]
    return f"{trained_at.strftime('%Y%m%dT%H%M%S')}Z-{digest}"


def version_second(version: str) -> str:
    """The '<UTC time>' part of a model_version name; compares as time does."""
    return version.split("-", 1)[0]


def model_config(spec: ModelSpec, horizon: int) -> dict[str, Any]:
    """How to use model.pkl from any program: inputs, their order, and what comes out."""
    if spec.target_transform == "log_return":
        output = "H-bar log return; price = close * exp(prediction)"
    elif spec.task == "classification":
        output = "class label (predict) and class probabilities (predict_proba)"
    else:
        output = f"{spec.target} in target units"
    return {
        "model_name": spec.name,
        "model_type": spec.model_type,
        "task": spec.task,
        "target": spec.target,
        "features": list(spec.features),
        "params": dict(spec.params),
        "horizon_bars": horizon,
        "target_transform": spec.target_transform,
        "output": output,
        "class_names": list(spec.class_names),
        "usage": "model.predict(scaler.transform(features[config['features']]))",
        "code_version": spec.code_version,
    }


def target_definition(spec: ModelSpec, horizon: int) -> str:
    """What a skill is a skill at: two versions' skills compare only when this is equal."""
    rules = "|".join(spec.baselines)
    return (
        f"{spec.target} H={horizon} ({TARGETS_CODE_VERSION}), {spec.primary_metric} "
        f"vs the strongest of {rules}"
    )


def data_window(trained: TrainedModel) -> dict[str, Any]:
    """Which bars the version saw: its training block, its test block and the purge between."""
    return {
        "start": trained.data_window[0].isoformat(),
        "end": trained.data_window[1].isoformat(),
        "train_end": trained.split.train_end.isoformat(),
        "test_start": trained.split.test_start.isoformat(),
        "purge_bars": trained.split.purge_bars,
        "purged_rows": trained.split.purged_rows,
    }


def model_metadata(
    trained: TrainedModel,
    *,
    status: str,
    status_reason: str,
    gates: Sequence[Verdict],
    trained_at: pd.Timestamp,
    run_id: str,
    horizon: int,
    data_sources: Sequence[str],
    data_until: pd.Timestamp,
    params_source: str = "default",
) -> dict[str, Any]:
    evaluation = trained.evaluation
    return {
        "model_name": trained.spec.name,
        "model_type": trained.spec.model_type,
        "code_version": trained.spec.code_version,
        "params_id": trained.spec.params_id,
        "params_source": params_source,
        "trained_at": trained_at.isoformat(),
        "run_id": run_id,
        "status": status,
        "status_reason": status_reason,
        "train_rows": trained.train_rows,
        "test_rows": trained.test_rows,
        "feature_count": len(trained.spec.features),
        "data_window": data_window(trained),
        "instruments": list(trained.instruments),
        "data_sources": list(data_sources),
        "synthetic_data": "demo" in data_sources,
        "horizon_bars": horizon,
        "max_train_rows": trained.spec.max_train_rows,
        "row_sampling": trained.spec.row_sampling,
        "max_test_rows": trained.spec.max_test_rows,
        "primary_metric": evaluation.primary_metric,
        "primary_value": evaluation.primary_value,
        "baseline_value": evaluation.baseline_value,
        "baseline_kind": trained.evaluation.baseline_name,
        "metrics": evaluation.metrics,
        "train_metrics": trained.train_metrics,
        "train_metrics_method": trained.train_metrics_method,
        "target_unit": trained.spec.target_unit,
        "metric_units": {m: metric_unit(trained.spec, m) for m in evaluation.metrics},
        "class_names": list(trained.spec.class_names),
        "baseline": evaluation.baseline,
        "baselines": evaluation.baselines,
        "skills": evaluation.skills(),
        "skill": evaluation.skill,
        "skill_p_value": (
            evaluation.comparison.p_value if evaluation.comparison is not None else None
        ),
        "target_definition": target_definition(trained.spec, horizon),
        "naive_constants": trained.naive_constants,
        "data_until": data_until.isoformat(),
        "train_seconds": trained.train_seconds,
        "feature_importances": trained.feature_importances.scores,
        "feature_importance_stderr": trained.feature_importances.stderr,
        "feature_importance_method": trained.feature_importances.method,
        "checks": {
            gate.check_name: {
                "passed": gate.passed,
                "severity": gate.severity,
                "description": gate.description,
            }
            for gate in gates
        },
    }


def train_and_publish(
    spec: ModelSpec,
    frame: pd.DataFrame,
    *,
    store: ModelStore,
    horizon: int,
    promoted_skills: Sequence[float],
    run_id: str,
    data_until: pd.Timestamp,
    plan: RowPlan | None = None,
    data_sources: Sequence[str] = (),
    trained_at: pd.Timestamp | None = None,
    hash_record: DuckDBFile | None = None,
    params_source: str = "default",
) -> PublishedModel:
    """The whole life of one candidate; no path serves a model that failed an ERROR gate.

    ``data_until`` is the newest stored bar when it was trained: every bar after it is one the
    version never saw, which is what makes its later predictions out of sample. With
    ``hash_record``, the files' hashes go into its model_file_hashes table as they are saved,
    before the version is visible or served: what load_model trusts, not metadata.json."""
    return publish_trained(
        train_model(spec, frame, horizon=horizon, plan=plan),
        store=store,
        horizon=horizon,
        promoted_skills=promoted_skills,
        run_id=run_id,
        data_until=data_until,
        data_sources=data_sources,
        trained_at=trained_at,
        hash_record=hash_record,
        params_source=params_source,
    )


def publish_trained(
    trained: TrainedModel,
    *,
    store: ModelStore,
    horizon: int,
    promoted_skills: Sequence[float],
    run_id: str,
    data_until: pd.Timestamp,
    data_sources: Sequence[str] = (),
    trained_at: pd.Timestamp | None = None,
    hash_record: DuckDBFile | None = None,
    params_source: str = "default",
    extra_gates: Sequence[Verdict] = (),
) -> PublishedModel:
    """Judge a trained candidate, keep it in history, serve it only if no ERROR gate failed
    (``extra_gates``: a model's own, e.g. the ensemble's bar of its members)."""
    spec = trained.spec
    trained_at = trained_at or pd.Timestamp.now(tz="UTC")
    gates = (
        leakage_gate(trained),
        regression_gate(trained, promoted_skills),
        skill_gate(trained),
        *extra_gates,
    )
    blocking = [gate for gate in gates if gate.blocks_serving]
    status = REJECTED if blocking else PROMOTED
    reason = (
        "; ".join(f"{gate.check_name}: {gate.description}" for gate in blocking)
        if blocking
        else "all ERROR checks passed"
    )
    version = model_version(trained_at, spec, run_id)
    metadata = model_metadata(
        trained,
        status=status,
        status_reason=reason,
        gates=gates,
        trained_at=trained_at,
        run_id=run_id,
        horizon=horizon,
        data_sources=data_sources,
        data_until=data_until,
        params_source=params_source,
    )
    store.clean_staging(spec.name)
    interrupted = mark_interrupted_promotions(store, spec.name)
    version_dir = store.save_version(
        spec.name,
        version,
        estimator=trained.estimator,
        scaler=trained.scaler,
        config=model_config(spec, horizon),
        metadata={**metadata, "outlier_reference": trained.reference.summary()},
        reference=trained.reference.arrays(),
        record_hashes=partial(record_hashes_in, hash_record, spec.name, version)
        if hash_record is not None
        else None,
    )
    if status == PROMOTED:
        store.promote(spec.name, version)
    return PublishedModel(
        trained=trained,
        version=version,
        status=status,
        status_reason=reason,
        gates=gates,
        version_dir=version_dir,
        served_version=store.served_version(spec.name),
        metadata=store.read_metadata(spec.name, version),
        interrupted=tuple(interrupted),
    )


def mark_interrupted_promotions(store: ModelStore, name: str) -> list[str]:
    """Relabel versions recorded 'promoted' that were never served; return their names.

    A version is saved with its final status before the served link is switched, so a crash
    in between leaves a 'promoted' version newer than the served one.  Every promotion serves
    its version at once, so only such a crash produces one; left alone, it would enter
    ml_model_results as promoted and set the bar of the regression gate.
    """
    served = store.served_version(name)
    served_at = pd.Timestamp(store.read_metadata(name, served)["trained_at"]) if served else None
    # Names start with the training time to the second: only those from the served version's
    # second on can be newer, so a long history is not read every hour.
    since = version_second(served) if served else ""
    candidates = [v for v in store.version_names(name) if version_second(v) >= since]
    relabelled = []
    for version in candidates:
        metadata = store.read_metadata(name, version)
        if metadata.get("status") != PROMOTED or version == served:
            continue
        if served_at is not None and pd.Timestamp(metadata["trained_at"]) <= served_at:
            continue  # promoted and served once, superseded since
        store.rewrite_metadata(
            name,
            version,
            {
                **metadata,
                "status": INTERRUPTED,
                "status_reason": "passed every ERROR gate, but the run stopped before serving "
                f"it; {served or 'no version'} stayed served",
            },
        )
        relabelled.append(version)
    return relabelled
