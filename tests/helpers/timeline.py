"""Where the test suite's wall time goes: a pytest plugin that writes one JSON line per test, and a
summary of such a file.

    TIMELINE=timeline.jsonl python -m pytest -p tests.helpers.timeline   # the suite, as CI runs it
    python -m tests.helpers.timeline timeline.jsonl                      # the summary

Each line holds the test, the xdist worker that ran it, its start and end (wall clock) and the CPU
seconds of that worker and of the processes it waited for while the test ran (a daemon's or a
killed process's CPU is not counted). Under xdist only the workers write, so no test is counted
twice.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from collections import defaultdict
from pathlib import Path

_started: dict[str, tuple[float, float, float]] = {}  # test -> its start: wall clock, CPU, CPU
# Set at configure: whether this process writes (a worker, or pytest without xdist), and its name.
_records = {"on": False, "worker": "main"}


def _cpu() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    waited = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, waited.ru_utime + waited.ru_stime


def pytest_configure(config) -> None:
    # xdist names a worker in config.workerinput (PYTEST_XDIST_WORKER is also set in any pytest
    # that a test under xdist starts).
    worker = getattr(config, "workerinput", {}).get("workerid")
    distributed = bool(getattr(config.option, "numprocesses", None))
    _records["on"] = bool(os.environ.get("TIMELINE")) and bool(worker or not distributed)
    _records["worker"] = worker or "main"


def pytest_runtest_logstart(nodeid: str, location) -> None:
    if _records["on"]:
        _started[nodeid] = (time.time(), *_cpu())


def pytest_runtest_logfinish(nodeid: str, location) -> None:
    if nodeid not in _started:
        return
    start, own, waited = _started.pop(nodeid)
    own_now, waited_now = _cpu()
    line = {
        "test": nodeid,
        "worker": _records["worker"],
        "start": start,
        "end": time.time(),
        "cpu_worker": own_now - own,
        "cpu_children": waited_now - waited,
    }
    with open(os.environ["TIMELINE"], "a") as out:
        out.write(json.dumps(line) + "\n")


def _wall(line: dict) -> float:
    return line["end"] - line["start"]


def _cpu_spent(line: dict) -> float:
    return line["cpu_worker"] + line["cpu_children"]


def summary(lines: list[dict], slowest: int = 10) -> str:
    """Each worker's busy time and last end; the imbalance between them; the wall time beyond the
    CPU counted to the tests; the slowest tests."""
    origin = min(line["start"] for line in lines)
    workers = defaultdict(list)
    for line in lines:
        workers[line["worker"]].append(line)
    out, ends = [], []
    for name, tests in sorted(workers.items()):
        ends.append(max(t["end"] for t in tests))
        busy, last = sum(map(_wall, tests)), ends[-1] - origin
        out.append(f"{name}: {len(tests)} tests, busy {busy:.0f} s, the last ended at {last:.0f} s")
    beyond = sum(max(0.0, _wall(line) - _cpu_spent(line)) for line in lines)
    out.append(f"imbalance between the workers' last ends: {max(ends) - min(ends):.0f} s")
    out.append(
        f"the tests' wall time {sum(map(_wall, lines)):.0f} s, "
        f"CPU counted {sum(map(_cpu_spent, lines)):.0f} s"
    )
    out.append(f"wall time beyond the CPU counted: {beyond:.0f} s")
    out.append("slowest tests (wall s, CPU s):")
    for line in sorted(lines, key=_wall, reverse=True)[:slowest]:
        out.append(f"  {_wall(line):6.1f} {_cpu_spent(line):6.1f}  {line['test']}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Summarise a test timeline (see the docstring).")
    parser.add_argument("timeline", type=Path, help="the file TIMELINE= named")
    parser.add_argument("--slowest", type=int, default=10)
    args = parser.parse_args(argv)
    lines = [json.loads(text) for text in args.timeline.read_text().splitlines() if text.strip()]
    if not lines:
        parser.error(f"{args.timeline} holds no tests; run pytest with TIMELINE= and -p first")
    print(summary(lines, args.slowest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
