"""Dagster's current commands: `dg` finds the project from pyproject.toml's [tool.dg], lists
and loads its definitions, and launches a headless run, with no "superseded" warning; the
older `dagster dev` keeps working from workspace.yaml. (`dg dev` itself is started by the UI
test, through webserver.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from blofin_assets.ml.specs import MODEL_SPECS
from blofin_assets_tests.conftest import Project
from blofin_assets_tests.webserver import SUPERSEDED

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL_NAMES = sorted(spec.name for spec in MODEL_SPECS)
MODEL_CHECKS = ["beats_baseline", "feature_drift", "label_drift", "leakage_alarm", "live_skill",
                "metric_regression", "served_files_intact"]  # fmt: skip


def run(command: list[str], env: dict[str, str]) -> tuple[str, str]:
    """stdout and stderr of a command run in the repo root (where [tool.dg] is); it must
    exit 0 and warn of nothing superseded."""
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done.stdout, done.stderr


def test_dg_lists_the_five_models_and_their_checks(project: Project) -> None:
    stdout, stderr = run([str(BIN / "dg"), "list", "defs", "--json"], project.env())
    assert SUPERSEDED not in stderr
    defs = json.loads(stdout)
    assets = {a["asset_key"] for a in defs["assets"]}
    assert set(MODEL_NAMES) <= assets
    assert {"candles", "features", "targets", "ml_model_results", "forward_performance"} <= assets
    for name in MODEL_NAMES:
        checks = sorted(c["name"] for c in defs["asset_checks"] if c["asset_key"] == name)
        assert checks == MODEL_CHECKS, name
    assert {j["name"] for j in defs["jobs"]} >= {"hourly_training", "walk_forward_backtest"}


def test_dg_launch_materializes_a_selection_headless(project: Project, tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**project.env(), "DAGSTER_HOME": str(home)}
    output = "".join(run([str(BIN / "dg"), "launch", "--assets", "candles"], env))
    assert SUPERSEDED not in output
    assert 'RUN_SUCCESS - Finished execution of run for "__ASSET_JOB"' in output
    # 3 instruments x 3 days of 1m bars (the project's lookback), from the demo market.
    assert project.query("SELECT count(*), min(source), max(source) FROM candles") == [
        (3 * 3 * 1440, "demo", "demo")
    ]


def test_dagster_dev_still_loads_the_workspace_file(project: Project, tmp_path: Path) -> None:
    """`dagster dev` (superseded, still supported) reads workspace.yaml; validating it loads
    the same code location without starting a server."""
    env = {**project.env(), "DAGSTER_HOME": str(tmp_path)}
    command = [str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"]
    output = "".join(run(command, env))
    assert "Validation successful for code location blofin_assets." in output
