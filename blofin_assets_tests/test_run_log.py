"""What a person reading a run's log sees: a failed check said at WARNING (ERROR for an ERROR
check) with its name, asset and description, and the run ending with one line per model it
trained. The headless CLI's log is in test_operations.py; here, in-process runs of the real
definitions and their event log."""

import logging
import math
import re

from dagster import (
    AssetCheckKey,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    DagsterEventType,
    DagsterInstance,
    MaterializeResult,
    asset,
    materialize,
)

from blofin_assets.defs.candle_checks import CANDLE_CHECKS
from blofin_assets.defs.checks import DATA_CHECKS
from blofin_assets.defs.verdicts import check_result, failure_message
from blofin_assets.ml.ensemble import ENSEMBLE_SPEC
from blofin_assets.ml.specs import MODEL_SPECS
from blofin_assets.ml.store import ModelStore
from blofin_assets.ml.verdict import Verdict
from blofin_assets.storage.run_summary import TrainedVersion, summary_line, summary_lines
from blofin_assets_tests.conftest import Project

MODEL_NAMES = sorted(spec.name for spec in MODEL_SPECS)
TRAINED = sorted([*MODEL_NAMES, ENSEMBLE_SPEC.name])  # the hourly job trains the ensemble too
FAILED = re.compile(r"^check (\w+) on (\w+) FAILED \((WARN|ERROR)\): ")


def user_messages(instance: DagsterInstance, run_id: str) -> list[tuple[int, str, str]]:
    """(level, step, message) of every line our code logged, in order (no Dagster events)."""
    return [
        (entry.level, entry.step_key or "", entry.user_message)
        for entry in instance.all_logs(run_id)
        if entry.dagster_event is None
    ]


def logged_failures(messages: list[tuple[int, str, str]]) -> dict[tuple[str, str], int]:
    """(asset, check) -> the level its failure was logged at."""
    found = {}
    for level, _, message in messages:
        match = FAILED.match(message)
        if match:
            found[(match.group(2), match.group(1))] = level
    return found


def test_every_failed_data_check_is_logged_at_its_severity_and_no_passing_one(
    project: Project, instance: DagsterInstance
) -> None:
    # 3 days stored, 4 asked: training_window_covered fails WARN ("trained on 2.0 of ...").
    project.set_env(BLOFIN_TRAINING_DAYS="4")
    result = project.materialize(instance, AssetSelection.assets("candles", "features", "targets"))
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == len(DATA_CHECKS) + len(CANDLE_CHECKS)  # every check of the three
    failed = {(e.asset_key.to_user_string(), e.check_name): e for e in evaluations if not e.passed}
    assert set(failed) == {("features", "training_window_covered")}

    messages = user_messages(instance, result.run_id)
    assert logged_failures(messages) == {("features", "training_window_covered"): logging.WARNING}
    (line,) = [m for _, step, m in messages if step == "features_training_window_covered"]
    description = failed[("features", "training_window_covered")].description
    assert line == f"check training_window_covered on features FAILED (WARN): {description}"
    assert "trained on 2.0 of the 4 days asked" in line


def test_check_result_logs_the_gates_of_an_asset_that_runs_its_own_checks(
    instance: DagsterInstance,
) -> None:
    """The model assets' way (several check specs, results from plain verdicts): a passing
    gate says nothing, a failed WARN one warns, a failed ERROR one is an error."""
    verdicts = [
        Verdict("leakage_alarm", True, "ERROR", "plausible"),
        Verdict("beats_baseline", False, "WARN", "no skill over naive_price"),
        Verdict("metric_regression", False, "ERROR", "skill fell 0.2 below the median"),
    ]

    @asset(
        name="gated_model",
        check_specs=[AssetCheckSpec(v.check_name, asset="gated_model") for v in verdicts],
    )
    def gated_model(context: AssetExecutionContext) -> MaterializeResult:
        return MaterializeResult(
            check_results=[
                check_result(v, check_name=v.check_name, asset="gated_model", log=context.log)
                for v in verdicts
            ]
        )

    result = materialize([gated_model], instance=instance)
    evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evaluations == {"leakage_alarm": True, "beats_baseline": False,
                           "metric_regression": False}  # fmt: skip
    messages = user_messages(instance, result.run_id)
    assert logged_failures(messages) == {
        ("gated_model", "beats_baseline"): logging.WARNING,
        ("gated_model", "metric_regression"): logging.ERROR,
    }
    assert failure_message("gated_model", "beats_baseline", verdicts[1]) in {
        m for _, _, m in messages
    }


def test_the_hourly_job_ends_with_one_line_per_model_it_trained(
    project: Project, instance: DagsterInstance
) -> None:
    result = project.run(instance)
    entries = list(instance.all_logs(result.run_id))
    last_ours = max(i for i, e in enumerate(entries) if e.dagster_event is None)
    after = [e.dagster_event.event_type for e in entries[last_ours + 1 :]]
    ending = [DagsterEventType.STEP_SUCCESS, DagsterEventType.ENGINE_EVENT]
    assert after == [*ending, DagsterEventType.RUN_SUCCESS]  # nothing but the run's ending

    summary = [(e.level, e.step_key, e.user_message) for e in entries if e.dagster_event is None]
    summary = summary[-(len(TRAINED) + 1) :]
    assert {(level, step) for level, step, _ in summary} == {(logging.INFO, "live_skill")}
    # On the demo market the ensemble does not beat its members: kept, not served.
    assert summary[0][2] == "run summary: 6 model versions trained (5 promoted, 1 rejected)"
    rows = project.query(
        "SELECT model_name, version, status, status_reason, skill, skill_p_value, "
        "baseline_name, primary_metric "
        f"FROM ml_model_results WHERE run_id = '{result.run_id}' ORDER BY model_name"
    )
    assert [row[0] for row in rows] == TRAINED
    store = ModelStore(project.models_dir)
    for (name, version, status, reason, skill, p_value, baseline, metric), (_, _, line) in zip(
        rows, summary[1:], strict=True
    ):
        numbers = f"skill {skill:+.3f} over {baseline} ({metric}, p={p_value:.2g})"
        if name == ENSEMBLE_SPEC.name:
            assert status == "rejected" and reason.startswith("beats_members: "), reason
            assert store.served_version(name) is None
            assert line == (
                f"{name}: REJECTED ({reason}), {numbers}, serving nothing, not this run's {version}"
            )
            continue
        assert status == "promoted", (name, reason)
        assert store.served_version(name) == version
        assert line == f"{name}: promoted, {numbers}, serving {version}"

    # A run of the live_skill step alone trained nothing: the first run's rows are not its own.
    keys = [AssetCheckKey(AssetKey(name), "live_skill") for name in TRAINED]
    checks_only = project.materialize(instance, AssetSelection.checks(*keys))
    assert len(checks_only.get_asset_check_evaluations()) == len(TRAINED)
    messages = user_messages(instance, checks_only.run_id)
    (line,) = [m for _, _, m in messages if m.startswith("run summary")]
    assert line.startswith("run summary: no model version trained in this run")


def test_a_rejected_version_says_why_and_what_is_still_served() -> None:
    rejected = TrainedVersion(
        "direction_predictor", "V2", "rejected", "leakage_alarm: accuracy 0.91 > 0.75",
        "accuracy", "majority_class", 0.4012, 1e-30,
    )  # fmt: skip
    assert summary_line(rejected, "V1") == (
        "direction_predictor: REJECTED (leakage_alarm: accuracy 0.91 > 0.75), skill +0.401 "
        "over majority_class (accuracy, p=1e-30), serving V1, not this run's V2"
    )
    unknown = TrainedVersion("price_predictor", "V3", "promoted", None, "mae", "naive_price",
                             None, math.nan)  # fmt: skip
    assert summary_line(unknown, None) == (
        "price_predictor: promoted, skill n/a over naive_price (mae, p=n/a), serving nothing, "
        "not this run's V3"
    )
    lines = summary_lines([rejected, unknown], {"direction_predictor": "V1"})
    assert lines[0] == "run summary: 2 model versions trained (1 promoted, 1 rejected)"
    assert len(lines) == 3
