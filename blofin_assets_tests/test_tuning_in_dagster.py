"""The tune_models job through Dagster: an adoption shows in the UI's staleness with its cause,
the next hourly run trains with the adopted set, and ml_model_results says which set."""

from __future__ import annotations

import json

from dagster import DagsterInstance, DefaultScheduleStatus, Definitions

from blofin_assets.defs import build_definitions
from blofin_assets.ml.specs import MODEL_SPECS, SPECS_BY_NAME
from blofin_assets_tests.conftest import Project
from blofin_assets_tests.test_lineage import asset_nodes

# The demo market's risk target has a signal the real risk_scorer finds; three boosting rounds
# at a tiny learning rate barely leave the training mean: the defaults underfit it.
UNDERFIT_RISK = SPECS_BY_NAME["risk_scorer"].with_params(
    {**SPECS_BY_NAME["risk_scorer"].params, "max_iter": 3, "learning_rate": 0.01}
)


def underfit_definitions() -> Definitions:
    return build_definitions([UNDERFIT_RISK])


def test_tuning_is_its_own_job_on_a_stopped_daily_schedule(project: Project) -> None:
    defs = project.defs()
    hourly = defs.resolve_job_def("hourly_training")
    tuning = defs.resolve_job_def("tune_models")
    tuned = {key.to_user_string() for key in tuning.asset_layer.selected_asset_keys}
    assert tuned == {f"{spec.name}_params" for spec in MODEL_SPECS}
    hourly_keys = {key.to_user_string() for key in hourly.asset_layer.selected_asset_keys}
    assert not tuned & hourly_keys
    schedule = defs.resolve_schedule_def("tune_models_schedule")
    assert schedule.default_status == DefaultScheduleStatus.STOPPED
    assert schedule.job_name == "tune_models"


def test_an_adoption_makes_the_model_unsynced_and_the_next_run_trains_with_it(
    project: Project, instance: DagsterInstance
) -> None:
    project.set_env(BLOFIN_TUNING_TRIALS="6", BLOFIN_TUNING_TIMEOUT_SECONDS="60")
    defs = underfit_definitions()
    defs.resolve_job_def("hourly_training").execute_in_process(instance=instance)
    assert (
        asset_nodes(instance, "underfit_definitions", __name__)["risk_scorer"]["staleStatus"]
        == "FRESH"
    )

    result = defs.resolve_job_def("tune_models").execute_in_process(instance=instance)
    assert result.success
    adopted, source, params = project.query(
        "SELECT adopted, source, params FROM model_params WHERE model_name = 'risk_scorer'"
    )[0]
    assert adopted and source == "tuned", project.query("SELECT reason FROM model_params")
    assert json.loads(params) != UNDERFIT_RISK.params
    trials = project.query(
        "SELECT count(*), count(DISTINCT trial) FROM tuning_trials WHERE model_name = 'risk_scorer'"
    )[0]
    assert trials[0] == trials[1] >= 2

    risk = asset_nodes(instance, "underfit_definitions", __name__)["risk_scorer"]
    assert risk["staleStatus"] == "STALE"
    causes = [c for c in risk["staleCauses"] if c["category"] == "DATA"]
    assert ["/".join(c["key"]["path"]) for c in causes] == ["risk_scorer_params"], causes
    assert causes[0]["reason"] == "has a new data version"

    defs.resolve_job_def("hourly_training").execute_in_process(instance=instance)
    rows = project.query(
        "SELECT params_source, params_id, skill FROM ml_model_results "
        "WHERE model_name = 'risk_scorer' ORDER BY id"
    )
    (first_source, first_id, first_skill), (second_source, second_id, second_skill) = rows
    assert (first_source, second_source) == ("default", "tuned")
    assert first_id == UNDERFIT_RISK.params_id and second_id != first_id
    assert second_skill > first_skill
    assert (
        asset_nodes(instance, "underfit_definitions", __name__)["risk_scorer"]["staleStatus"]
        == "FRESH"
    )
