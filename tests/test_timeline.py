"""tests/helpers/timeline.py, the plugin docs/development/tests.md times the suite with: one line
per test, once, with the CPU of the worker and of the processes it waited for; and its summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.helpers import timeline

TESTS = """
import subprocess, sys, time

def test_waits():
    time.sleep(1.0)

def test_starts_a_busy_process():
    burn = "import time\\nwhile time.process_time() < 0.3: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
"""


def run_with_timeline(tmp_path, *options: str) -> list[dict]:
    (tmp_path / "test_two.py").write_text(TESTS)
    out = tmp_path / "timeline.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.helpers.timeline", *options],
        cwd=tmp_path,
        env={**os.environ, "TIMELINE": str(out), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_each_test_is_one_line_with_the_cpu_it_and_its_processes_used(tmp_path):
    lines = {line["test"].split("::")[1]: line for line in run_with_timeline(tmp_path)}
    assert sorted(lines) == ["test_starts_a_busy_process", "test_waits"]
    waits, busy = lines["test_waits"], lines["test_starts_a_busy_process"]
    assert waits["worker"] == busy["worker"] == "main"
    assert waits["end"] - waits["start"] >= 1.0 and waits["cpu_children"] == 0
    assert busy["cpu_children"] >= 0.3  # the child's loop, counted once it was waited for

    report = timeline.summary(list(lines.values()))
    assert "main: 2 tests" in report and "imbalance between the workers' last ends: 0 s" in report
    assert all(f"::{name}" in report for name in lines)  # among the slowest


def test_under_xdist_only_the_workers_write(tmp_path):
    pytest.importorskip("xdist")
    lines = run_with_timeline(tmp_path, "-n", "2", "-p", "no:cacheprovider")
    assert sorted(line["test"].split("::")[1] for line in lines) == [
        "test_starts_a_busy_process",
        "test_waits",
    ]
    assert {line["worker"] for line in lines} <= {"gw0", "gw1"}


def test_the_summary_of_an_empty_file_is_one_sentence(tmp_path, capsys):
    empty = tmp_path / "timeline.jsonl"
    empty.write_text("")
    with pytest.raises(SystemExit) as exit_:
        timeline.main([str(empty)])
    assert exit_.value.code == 2
    assert "holds no tests; run pytest with TIMELINE= and -p first" in capsys.readouterr().err
