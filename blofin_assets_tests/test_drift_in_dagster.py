"""feature_drift and label_drift through Dagster: the real definitions train and serve the five
models on five stationary days from a file; a sixth stationary day leaves every drift check
quiet, and a seventh whose volatility is ten times larger makes feature_drift warn on every
model, naming the drifted features in the served version's importance order."""

from __future__ import annotations

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckEvaluation,
    AssetChecksDefinition,
    AssetSelection,
    DagsterInstance,
    MarkdownMetadataValue,
    materialize,
)

from blofin_assets.defs.drift_checks import build_drift_checks
from blofin_assets.ml.specs import MODEL_SPECS
from blofin_assets.ml.store import ModelStore
from blofin_assets_tests.conftest import Project
from blofin_assets_tests.in_dagster import CANDLE_FIELDS, INSTRUMENTS, run
from blofin_assets_tests.markets import candles_from_closes

START = pd.Timestamp("2026-03-01T00:00:00Z")
DAY = pd.Timedelta(days=1)


def market(days: int = 7, seed: int = 3) -> pd.DataFrame:
    """I.i.d. 0.1 % 1-bar returns; the last day's ten times larger."""
    rng = np.random.default_rng(seed)
    bars = days * 1440
    closes = {}
    for number, inst_id in enumerate(INSTRUMENTS):
        sigma = np.full(bars, 1e-3)
        sigma[-1440:] *= 10.0
        closes[inst_id] = 100.0 * (1 + number) * np.exp(np.cumsum(rng.normal(0.0, sigma)))
    return candles_from_closes(closes, start=START.isoformat())


def serve_file_until(project: Project, candles: pd.DataFrame, days: int) -> None:
    """The file holds the first ``days`` days; the clock is just after its last bar closed."""
    end = START + days * DAY
    path = project.root / f"candles_{days}d.parquet"
    candles[candles["ts"] < end][CANDLE_FIELDS].to_parquet(path, index=False)
    project.set_env(
        BLOFIN_SOURCE="file",
        BLOFIN_CANDLES_FILE=str(path),
        BLOFIN_INSTRUMENTS=",".join(INSTRUMENTS),
        # Longer than the file: no row leaves the tables, so the version's block stays stored.
        BLOFIN_TRAINING_DAYS="8",
        BLOFIN_AS_OF=(end + pd.Timedelta(seconds=30)).isoformat(),
    )


def drift_checks(project: Project) -> list[AssetChecksDefinition]:
    return [check for spec in MODEL_SPECS for check in build_drift_checks(spec)]


def run_drift_checks(
    project: Project, instance: DagsterInstance
) -> dict[tuple[str, str], AssetCheckEvaluation]:
    """The drift checks alone, beside the real definitions (added unless already registered)."""
    defs = project.defs()
    registered = {key for check in defs.asset_checks for key in check.check_keys}
    mine = [c for c in drift_checks(project) if not set(c.check_keys) <= registered]
    keys = [key for check in drift_checks(project) for key in check.check_keys]
    result = materialize(
        [*defs.assets, *defs.asset_checks, *mine],
        selection=AssetSelection.checks(*keys),
        instance=instance,
        resources=defs.resources,
    )
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 2 * len(MODEL_SPECS)
    return {(e.asset_key.to_user_string(), e.check_name): e for e in evaluations}


def add_a_day(project: Project, instance: DagsterInstance, candles: pd.DataFrame, days: int):
    serve_file_until(project, candles, days)
    result = project.materialize(instance, AssetSelection.assets("candles", "features", "targets"))
    (jumps,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "price_jumps"]
    assert jumps.passed, jumps.description  # a volatile day is not a jump


def test_drift_is_quiet_on_a_stationary_day_and_warns_on_a_tenfold_one(
    project: Project, instance: DagsterInstance
) -> None:
    candles = market()
    serve_file_until(project, candles, 5)
    assert run(project, instance, graph=True).success
    store = ModelStore(project.models_dir)
    served = {spec.name: store.served_version(spec.name) for spec in MODEL_SPECS}
    assert all(served.values()), served

    add_a_day(project, instance, candles, 6)
    quiet = run_drift_checks(project, instance)
    for (model, check), evaluation in quiet.items():
        meta = evaluation.metadata
        assert evaluation.passed, (model, check, evaluation.description)
        assert meta["judged"].value is True and meta["served_version"].text == served[model]
        assert meta["calibration_days"].value >= 2
        if check == "feature_drift":
            assert meta["max_psi_to_threshold"].value < 1.0

    add_a_day(project, instance, candles, 7)
    loud = run_drift_checks(project, instance)
    for spec in MODEL_SPECS:
        evaluation = loud[(spec.name, "feature_drift")]
        assert not evaluation.passed and evaluation.severity.value == "WARN"
        meta = evaluation.metadata
        assert meta["served_version"].text == served[spec.name]  # no retraining in between
        drifted = meta["drifted_features"].value
        assert {"rv_5", "rv_15", "atr_14_rel", "range_rel", "bb_width_20"} <= set(drifted)
        # metadata.json keeps its keys sorted by name: the ranking is by value, largest first.
        importances = store.read_metadata(spec.name, served[spec.name])["feature_importances"]
        ranked = [importances[f] for f in drifted]
        assert ranked == sorted(ranked, reverse=True)
        assert evaluation.description.startswith(f"{len(drifted)} of 24 features drifted")
        assert meta["max_psi"].value > 5.0  # a float: the check's history plots it
        assert meta["max_psi_to_threshold"].value > 1.0
        assert isinstance(meta["per_feature"], MarkdownMetadataValue)
    failed_labels = {m for (m, c), e in loud.items() if c == "label_drift" and not e.passed}
    assert {"volatility_regressor", "price_predictor"} <= failed_labels
    assert "direction_predictor" not in failed_labels


def test_a_model_with_no_served_version_has_nothing_to_compare(
    project: Project, instance: DagsterInstance
) -> None:
    serve_file_until(project, market(), 2)
    project.materialize(instance, AssetSelection.assets("candles", "features", "targets"))
    for evaluation in run_drift_checks(project, instance).values():
        assert evaluation.passed
        assert evaluation.description.startswith("no served version of ")
        assert evaluation.metadata["judged"].value is False
