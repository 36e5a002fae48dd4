"""The house rules of the code (docs: Development, "Where a change goes"), checked on every
run: rooms with a docstring, imports that only point down, modules under 400 lines, functions
under 60."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY_RUN, WITH_FIGURES

# Floors from the ground up: a room may import its own modules and the rooms on floors below.
FLOORS = [
    {"errors", "fileio", "distributed", "contract"},
    {"model", "data", "tracking"},
    {"runs"},
    {"report"},
    {"training"},
    {"predict"},
    {"web"},
]
FLOOR = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
CODE = [
    "src",
    "deploy",
    "benchmarks",
    "hydra_plugins",
    "docs/hooks",
    "train.py",
    "inference.py",
    "app.py",
]


def python_files(*names: str) -> list[Path]:
    files: list[Path] = []
    for name in names:
        path = ROOT / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def room(module: str) -> str | None:
    """``src.runs.folder`` -> ``runs``; None for anything outside src/."""
    parts = module.split(".")
    return parts[1] if parts[0] == "src" and len(parts) > 1 else None


def src_imports(path: Path) -> set[str]:
    """The src modules that ``path`` imports (``from src import distributed`` counts as
    ``src.distributed``), type-checking-only imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("src.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "src":
                found |= {f"src.{alias.name}" for alias in node.names}
            elif node.module.startswith("src."):
                found.add(node.module)
    return found


def test_every_room_opens_with_a_docstring_saying_what_belongs_there():
    rooms = [p for p in (ROOT / "src").iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    assert {p.name for p in rooms} == set(FLOOR) - FLOORS[0]
    for package in rooms:
        assert ast.get_docstring(ast.parse((package / "__init__.py").read_text())), package


@pytest.mark.parametrize("path", python_files("src"), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down_the_floors(path):
    own = room("src." + ".".join(path.relative_to(ROOT / "src").with_suffix("").parts))
    upward = [
        module
        for module in src_imports(path)
        if room(module) != own and FLOOR[room(module)] >= FLOOR[own]
    ]
    assert not upward, f"{path.relative_to(ROOT)} imports {upward}, on its floor or above"


def test_no_module_over_400_lines_and_no_function_over_60():
    too_long = []
    for path in python_files(*CODE):
        lines = path.read_text().count("\n")
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(ROOT)}: {lines} lines")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} {length}")
    assert not too_long, "\n".join(too_long)


def test_train_py_is_a_page_not_a_library():
    """The library and the tests import src.training, never the script."""
    importers = [
        path.relative_to(ROOT)
        for path in python_files("src", "tests")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Import)
        and any(a.name == "train" for a in node.names)
        or isinstance(node, ast.ImportFrom)
        and node.module == "train"
    ]
    assert not importers


@pytest.mark.parametrize("args", [["model.depth=0"], ["--help"]], ids=["refused", "help"])
def test_a_refused_setting_and_help_answer_before_the_slow_imports(args, tmp_path):
    """torchvision (which loads torch._dynamo) and scikit-learn take about 3 s of a start of
    about 6 s; a refused setting, or --help, answers without them (src/data/__init__.py)."""
    result = import_times(*args, f"hydra.run.dir={tmp_path}")  # not the project's outputs/
    assert result.returncode == (1 if args[0] != "--help" else 0), result.stderr[-2000:]
    imported = imported_modules(result)
    assert {"torch", "hydra", "src.training.run"} <= imported  # (the list is read as it should)
    assert not imported & {"torchvision", "sklearn", "torch._dynamo"}


def test_a_whole_run_never_imports_scikit_learn(tmp_path):
    """Its import (SciPy with it) cost every run about 1.3 s: the split, the digits and the
    metrics do without it (src/data/stratified.py, src/data/digits.py, src/report/metrics.py)."""
    result = import_times(*TINY_RUN, WITH_FIGURES, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "metrics_per_class.csv").is_file()  # the run went to its end
    imported = imported_modules(result)
    assert "torch._dynamo" in imported  # (the list is read as it should)
    assert not imported & {"sklearn", "scipy"}


def import_times(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "train.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def imported_modules(result: subprocess.CompletedProcess) -> set[str]:
    """The modules a ``python -X importtime`` process imported, from its stderr."""
    return {
        line.rsplit("|", 1)[-1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
