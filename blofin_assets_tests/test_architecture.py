"""The two floors hold: plain packages import no Dagster, their imports form no cycle, and
importing the library changes nothing in the importer's process (ARCHITECTURE.md)."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "blofin_assets"
DAGSTER_FLOOR = {"blofin_assets.defs", "blofin_assets.definitions"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement names, at any depth of the file (lazy imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def in_dagster_floor(module: str) -> bool:
    return any(module == top or module.startswith(top + ".") for top in DAGSTER_FLOOR)


PLAIN_MODULES = {
    module_name(path): path
    for path in sorted(PACKAGE.rglob("*.py"))
    if not in_dagster_floor(module_name(path))
}


def test_the_plain_floor_is_not_empty_and_the_dagster_floor_exists() -> None:
    """Guards the walk below: a wrong root would make the boundary test pass vacuously."""
    packages = {name.split(".")[1] for name in PLAIN_MODULES if "." in name}
    assert {"market", "storage", "ml", "quality", "serving"} <= packages
    assert (PACKAGE / "defs" / "code_location.py").is_file()
    assert len(PLAIN_MODULES) > 30


@pytest.mark.parametrize("module", sorted(PLAIN_MODULES))
def test_plain_modules_import_no_dagster(module: str) -> None:
    dagster = sorted(
        name
        for name in imported_modules(PLAIN_MODULES[module])
        if name.split(".")[0] == "dagster" or name.split(".")[0].startswith("dagster_")
    )
    upward = sorted(
        name for name in imported_modules(PLAIN_MODULES[module]) if in_dagster_floor(name)
    )
    assert not dagster, f"{module} imports {dagster}: Dagster code belongs in blofin_assets/defs"
    assert not upward, f"{module} imports the Dagster floor ({upward}); imports run downward"


def test_plain_modules_import_each_other_without_a_cycle() -> None:
    """A cycle means two rooms are one room; run-time imports only (TYPE_CHECKING is free)."""
    graph: dict[str, set[str]] = {}
    for module, path in PLAIN_MODULES.items():
        tree = ast.parse(path.read_text())
        runtime = [
            node
            for node in tree.body
            if not (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test))
        ]
        names = set()
        for node in runtime:
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.module and inner.level == 0:
                    names.add(inner.module)
                    names.update(f"{inner.module}.{alias.name}" for alias in inner.names)
                elif isinstance(inner, ast.Import):
                    names.update(alias.name for alias in inner.names)
        graph[module] = {name for name in names if name in PLAIN_MODULES and name != module}

    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        if module in visiting:
            cycle = [*visiting[visiting.index(module) :], module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        visiting.append(module)
        for target in sorted(graph[module]):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


PROBE = """
import gc, json, os, sys
before = os.environ.get("OMP_WAIT_POLICY")
import {module}
print(json.dumps({{
    "omp_before": before,
    "omp_after": os.environ.get("OMP_WAIT_POLICY"),
    "frozen": gc.get_freeze_count(),
    "dagster_loaded": "dagster" in sys.modules,
}}))
"""


def probe(module: str) -> dict[str, object]:
    """Import ``module`` in a fresh interpreter with no OMP_WAIT_POLICY set; report its effects."""
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=300,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "module", ["blofin_assets.serving", "blofin_assets.ml.training", "blofin_assets.defs"]
)
def test_importing_the_library_leaves_the_process_as_it_was(module: str) -> None:
    effects = probe(module)
    assert effects["omp_before"] is None
    assert effects["omp_after"] is None, f"importing {module} set OMP_WAIT_POLICY"
    assert effects["frozen"] == 0, f"importing {module} froze the heap"
    if module != "blofin_assets.defs":
        assert effects["dagster_loaded"] is False, f"importing {module} loaded Dagster"


def test_the_code_location_entry_point_sets_the_process_policy() -> None:
    effects = probe("blofin_assets.definitions")
    assert effects["omp_after"] == "PASSIVE"
    assert effects["frozen"] > 0


def test_architecture_md_names_every_room_of_the_tree() -> None:
    """ARCHITECTURE.md matches the tree: every package folder and module is named in it, and
    every module it names exists (a renamed room fails here until the page follows)."""
    text = (PACKAGE.parent / "ARCHITECTURE.md").read_text()
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
    folders = sorted({path.parent.name for path in PACKAGE.rglob("*.py")} - {"blofin_assets"})
    modules = sorted({path.stem for path in PACKAGE.rglob("*.py")} - {"__init__"})
    assert [f for f in folders if f"{f}/" not in text] == []
    assert [m for m in modules if m not in words] == []
    tree = text.split("```")[1]  # the drawing of the tree; prose may name rooms yet to come
    named = set(re.findall(r"([a-z_]+)\.py\b", tree))
    assert sorted(named - set(modules)) == []
