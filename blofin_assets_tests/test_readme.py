"""The README's code as a reader copies it: every ```python block runs as written against a
materialized demo project at the default paths, and every ```bash block names executables,
scripts (and their flags), modules, jobs, assets and BLOFIN_* variables that exist."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance

from blofin_assets.defs.resources import DEFAULTS
from blofin_assets_tests.conftest import Project

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
BIN = Path(sys.executable).parent
FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
OPERATORS = {"&&", "||", ";", "|", "&"}
ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=")
PYTHONS = {"python", "python3", ".venv/bin/python", ".venv/bin/python3"}


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(README.read_text()) if lang == language]


def commands(block: str) -> list[list[str]]:
    """Each simple command of a shell block: continuations joined, comments dropped, split at
    line ends and at &&, ||, ; and |."""
    found: list[list[str]] = []
    for line in block.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        found.append([])
        for token in lexer:
            if token in OPERATORS:
                found.append([])
            else:
                found[-1].append(token)
    return [command for command in found if command]


def test_every_python_block_runs_as_written(
    project: Project, instance: DagsterInstance, tmp_path: Path
) -> None:
    python = blocks("python")
    assert python, "README.md has no ```python block: nothing would be tested"
    # The fixture's files sit where the defaults put them, relative to its root.
    assert project.db_path == project.root / DEFAULTS["BLOFIN_DUCKDB_PATH"]
    assert project.models_dir == project.root / DEFAULTS["BLOFIN_MODELS_DIR"]
    project.run(instance)  # the demo pipeline, the whole hourly job
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOFIN_")}  # defaults
    failures = []
    for number, code in enumerate(python, start=1):
        script = tmp_path / f"readme_block_{number}.py"
        script.write_text(code)
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=project.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            failures.append(f"block {number} ({code.splitlines()[0]!r}):\n{done.stderr[-2000:]}")
    assert not failures, "\n\n".join(failures)


@pytest.fixture(scope="module")
def names() -> dict[str, set[str]]:
    """The jobs and assets the code location defines, for the commands that name them."""
    from blofin_assets.defs import build_definitions

    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    return {
        "jobs": {job.name for job in defs.resolve_all_job_defs()},
        "assets": {key.to_user_string() for key in graph.get_all_asset_keys()},
    }


def check_command(command: list[str], names: dict[str, set[str]]) -> list[str]:
    """What one command refers to, each checked; returns what was checked, raises on a miss."""
    checked = []
    while command and (assignment := ASSIGNMENT.match(command[0])):
        variable = assignment.group(1)
        if variable.startswith("BLOFIN_"):
            assert variable in DEFAULTS, f"{variable} is no setting (resources.DEFAULTS)"
            checked.append(variable)
        command = command[1:]
    if not command:
        return checked
    program, args = command[0], command[1:]
    if program.startswith(".venv/bin/"):
        assert (BIN / Path(program).name).exists(), f"{program}: not installed by the README"
        checked.append(program)
    script = None
    for previous, arg in zip(["", *args], args, strict=False):
        if previous == "-m":
            assert importlib.util.find_spec(arg) is not None, f"no module {arg}"
            checked.append(arg)
        elif previous in ("-j", "--job"):
            assert arg in names["jobs"], f"no job {arg}"
            checked.append(arg)
        elif previous in ("--select", "--assets") and re.fullmatch(r"[a-z_]+(,[a-z_]+)*", arg):
            assert set(arg.split(",")) <= names["assets"], f"no asset in {arg}"
            checked.append(arg)
        elif arg.endswith(".py"):
            assert (REPO_ROOT / arg).is_file(), f"{arg} does not exist"
            checked.append(arg)
            script = (REPO_ROOT / arg).read_text() if program in PYTHONS else None
        elif script is not None and arg.startswith("--"):
            flag = arg.split("=")[0]
            assert f'"{flag}"' in script, f"{flag} is not an option of the script"
            checked.append(flag)
    return checked


def test_every_bash_block_names_what_exists(names: dict[str, set[str]]) -> None:
    bash = blocks("bash")
    assert bash, "README.md has no ```bash block: nothing would be checked"
    checked = []
    for block in bash:
        for command in commands(block):
            checked += check_command(command, names)
    # Guards the parse: the venv's commands and at least one script were seen.
    assert any(ref.startswith(".venv/bin/") for ref in checked)
    assert any(ref.endswith(".py") for ref in checked)


def test_the_command_parser_splits_what_a_shell_would() -> None:
    block = (
        "python3 -m venv .venv && .venv/bin/pip install -e . # comment\n"
        "BLOFIN_SOURCE=file BLOFIN_INSTRUMENTS=BTC-USDT,ETH-USDT \\\n"
        "  .venv/bin/dagster asset materialize --select '*' -m blofin_assets.definitions\n"
    )
    assert commands(block) == [
        ["python3", "-m", "venv", ".venv"],
        [".venv/bin/pip", "install", "-e", "."],
        ["BLOFIN_SOURCE=file", "BLOFIN_INSTRUMENTS=BTC-USDT,ETH-USDT", ".venv/bin/dagster",
         "asset", "materialize", "--select", "*", "-m", "blofin_assets.definitions"],
    ]  # fmt: skip
    with pytest.raises(AssertionError, match="BLOFIN_NOPE"):
        check_command(["BLOFIN_NOPE=1", ".venv/bin/dagster"], {"jobs": set(), "assets": set()})
    with pytest.raises(AssertionError, match=r"missing\.py"):
        check_command([".venv/bin/python", "docs/missing.py"], {"jobs": set(), "assets": set()})
