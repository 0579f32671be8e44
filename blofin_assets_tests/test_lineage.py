"""Staleness as the Dagster UI shows it, read through Dagster's GraphQL API in-process, against
the real definitions and a persistent (SQLite) test instance."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

from dagster import DagsterInstance, Definitions
from dagster._core.test_utils import in_process_test_workspace
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster_graphql.test.utils import execute_dagster_graphql

from blofin_assets.defs import build_definitions
from blofin_assets.ml.specs import MODEL_SPECS
from blofin_assets_tests.conftest import Project

MODEL_NAMES = [spec.name for spec in MODEL_SPECS]
STALENESS_QUERY = """
{
  assetNodes {
    assetKey { path }
    staleStatus
    staleCauses { key { path } category reason dependency { path } }
    opVersion
    internalFreshnessPolicy {
      ... on TimeWindowFreshnessPolicy { failWindowSeconds warnWindowSeconds }
    }
  }
}
"""


def current_definitions() -> Definitions:
    """What `dagster dev` loads, rebuilt from this test's environment."""
    return build_definitions()


def definitions_with_edited_direction_model() -> Definitions:
    """A developer changed one hyperparameter of one model, nothing else."""
    specs = [
        dataclasses.replace(spec, params={**spec.params, "max_depth": 4})
        if spec.name == "direction_predictor"
        else spec
        for spec in MODEL_SPECS
    ]
    return build_definitions(specs)


@contextmanager
def graphql(instance: DagsterInstance, loader: str, module: str = __name__) -> Iterator:
    origin = LoadableTargetOrigin(module_name=module, attribute=loader)
    with in_process_test_workspace(instance, origin) as context:
        yield context


def asset_nodes(
    instance: DagsterInstance, loader: str = "current_definitions", module: str = __name__
) -> dict:
    """Every asset node as the UI gets it; ``loader`` names a function of ``module`` that
    returns the Definitions."""
    with graphql(instance, loader, module) as context:
        result = execute_dagster_graphql(context, STALENESS_QUERY)
    assert result.errors is None, result.errors
    return {"/".join(node["assetKey"]["path"]): node for node in result.data["assetNodes"]}


def test_models_are_synced_after_a_full_run_and_stay_so_on_identical_data(
    project: Project, instance: DagsterInstance
) -> None:
    project.run(instance)
    nodes = asset_nodes(instance)
    for name in ["candles", "features", "targets", *MODEL_NAMES, "ml_model_results"]:
        assert nodes[name]["staleStatus"] == "FRESH", (name, nodes[name]["staleCauses"])

    # Re-ingesting identical data (same clock: no new bar) changes no data version.
    project.run(instance, ["candles", "features", "targets"])
    nodes = asset_nodes(instance)
    for name in MODEL_NAMES:
        assert nodes[name]["staleStatus"] == "FRESH", (name, nodes[name]["staleCauses"])


def test_new_candles_make_every_model_stale(project: Project, instance: DagsterInstance) -> None:
    project.run(instance)
    project.set_env(BLOFIN_AS_OF="2026-11-20T12:30:30Z")  # 30 new minutes on the market
    project.run(instance, ["candles", "features", "targets"])
    nodes = asset_nodes(instance)
    for name in MODEL_NAMES:
        node = nodes[name]
        assert node["staleStatus"] == "STALE", name
        data_causes = [c for c in node["staleCauses"] if c["category"] == "DATA"]
        assert data_causes, node["staleCauses"]
        assert {"/".join(c["key"]["path"]) for c in data_causes} == {
            "candles",
            "features",
            "targets",
        }
        assert all(c["reason"] == "has a new data version" for c in data_causes), data_causes


def test_new_candles_alone_make_every_model_stale_before_features_are_rebuilt(
    project: Project, instance: DagsterInstance
) -> None:
    """Only `candles` materialized with new bars: the models depend on it directly, so the UI
    shows them Unsynced at once, with candles as the cause (not only features and targets)."""
    project.run(instance)
    project.set_env(BLOFIN_AS_OF="2026-11-20T12:30:30Z")
    project.run(instance, ["candles"])
    nodes = asset_nodes(instance)
    for name in ["features", "targets", *MODEL_NAMES]:
        node = nodes[name]
        assert node["staleStatus"] == "STALE", (name, node["staleCauses"])
        causes = {
            "/".join(c["key"]["path"]) for c in node["staleCauses"] if c["category"] == "DATA"
        }
        assert causes == {"candles"}, (name, node["staleCauses"])


def test_editing_one_models_hyperparameters_makes_that_model_alone_stale(
    project: Project, instance: DagsterInstance
) -> None:
    project.run(instance)
    nodes = asset_nodes(instance, "definitions_with_edited_direction_model")
    direction = nodes["direction_predictor"]
    assert direction["staleStatus"] == "STALE"
    assert [c["category"] for c in direction["staleCauses"]] == ["CODE"]
    assert "code version" in direction["staleCauses"][0]["reason"]
    for name in MODEL_NAMES[1:]:
        assert nodes[name]["staleStatus"] == "FRESH", (name, nodes[name]["staleCauses"])
    # The code version is the spec's hash, not a hand-bumped string.
    unedited = asset_nodes(instance)["direction_predictor"]["opVersion"]
    assert direction["opVersion"] != unedited
    assert unedited == MODEL_SPECS[0].code_version


def data_causes(node: dict) -> set[str]:
    return {"/".join(c["key"]["path"]) for c in node["staleCauses"] if c["category"] == "DATA"}


def test_a_new_member_version_makes_the_ensemble_unsynced_with_the_member_as_cause(
    project: Project, instance: DagsterInstance
) -> None:
    """The ensemble's arrival downstream of its members: retraining one member (a new version,
    so a new data version) makes direction_ensemble Unsynced with that member as the cause,
    and a new ensemble version makes what records and serves it Unsynced in turn."""
    project.run(instance)
    nodes = asset_nodes(instance)
    assert nodes["direction_ensemble"]["staleStatus"] == "FRESH", nodes["direction_ensemble"]
    project.run(instance, ["direction_predictor"])
    ensemble = asset_nodes(instance)["direction_ensemble"]
    assert ensemble["staleStatus"] == "STALE"
    assert data_causes(ensemble) == {"direction_predictor"}, ensemble["staleCauses"]

    project.run(instance, ["direction_ensemble"])
    nodes = asset_nodes(instance)
    assert nodes["direction_ensemble"]["staleStatus"] == "FRESH"
    assert "direction_ensemble" in data_causes(nodes["ml_model_results"])


def test_models_carry_a_two_hour_freshness_policy(project: Project, instance) -> None:
    nodes = asset_nodes(instance)
    for name in [*MODEL_NAMES, "direction_ensemble"]:
        policy = nodes[name]["internalFreshnessPolicy"]
        assert policy == {"failWindowSeconds": 7200, "warnWindowSeconds": None}, name
