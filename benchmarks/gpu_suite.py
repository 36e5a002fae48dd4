"""Verify and measure a GPU in one command, within a time budget; one markdown report.

    python benchmarks/gpu_suite.py --prepare   # here: copy Hydra's wheels and the data to .device/
    python benchmarks/gpu_suite.py             # on the GPU machine: 540 s
    python benchmarks/gpu_suite.py --resume    # the next call goes on where this one stopped
    python benchmarks/gpu_suite.py --dry-run --budget 60   # on a CPU, tiny shapes: checks itself

The parts, in priority order (gpu_suite_plan.py); each runs only if it fits the time left:
  1 cuda-tests            the tests marked `cuda` (python -m pytest -m cuda)
  2 check-gpu             python -m src.training.gpu_check
  3 model-speed-eager     benchmarks/model_speed.py in bf16 against timm, with FLOP utilisation
  4 model-speed-compiled  the same, compiled
  5 input-pipeline        benchmarks/input_pipeline.py on the GPU (the CIFAR-10 JPEG copy if found)
  6 mnist                 python train.py +experiment=mnist
  7 cifar10               python train.py +experiment=cifar10 dataset=folder (the JPEG copy)

A training part still running when the budget ends gets SIGTERM, early enough to save: train.py
keeps its last complete epoch in checkpoints/last.pt, and the next call with --resume continues it
with `python train.py resume=RUN_DIR`. Parts done are not run again on --resume; the others are.
Each call adds a section to the report (default outputs/gpu_suite/report.md); what --resume needs
is kept beside it (report.state.json, runs/, logs/). The suite itself imports neither torch nor
Hydra: it runs commands and reads what they leave. Where Hydra is missing it installs the wheels
in .device/wheels (see --prepare) for its commands, and it unpacks the data archives it finds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_suite_device import DEVICE_DIR, SHARED, child_env, prepare
from gpu_suite_plan import Part, Skip, plan
from gpu_suite_report import read_json, render_call, resumable, tests_outcome, training_outcome

ROOT = Path(__file__).resolve().parents[1]
HEADER = "# GPU suite report\n\nWritten by `benchmarks/gpu_suite.py`; each call adds a section.\n"
clock = time.monotonic  # the budget's clock (a test moves it on)

# A part that is not training is stopped after OVERRUN times what it needs plus OVERRUN_SLACK
# seconds: late enough for a guess that was somewhat low, early enough that a hang leaves time.
OVERRUN, OVERRUN_SLACK = 3.0, 120.0


@dataclass
class Mode:
    """What differs between a GPU run and the CPU dry run."""

    dry_run: bool
    grace: float  # seconds a training part gets between SIGTERM and the budget's end
    reserve: float  # seconds kept for the report at the very end


# ---------------------------------------------------------------------------------------------
# Running the parts


class Suite:
    def __init__(self, args: argparse.Namespace, parts: list[Part], mode: Mode, argv: list[str]):
        self.args, self.parts, self.mode = args, parts, mode
        self.deadline = clock() + args.budget
        self.report = args.report
        self.state_path = self.report.with_name(self.report.stem + ".state.json")
        self.state = self._load_state()
        self.earlier = self.report.read_text() if self.report.is_file() else HEADER
        self.call = {
            "started": datetime.now().isoformat(sep=" ", timespec="seconds"),
            "dry_run": mode.dry_run,
            "budget": args.budget,
            "command": shlex.join(["python", "benchmarks/gpu_suite.py", *argv]),
        }
        self.results: list[dict] = []
        self.started = time.monotonic()

    def _load_state(self) -> dict:
        fresh = {"dry_run": self.mode.dry_run, "parts": {}, "seconds": {}, "facts": None}
        if not self.args.resume:
            return fresh
        state = read_json(self.state_path)
        if not state:
            raise SystemExit(
                f"--resume: there is no state at {self.state_path}; run once without --resume."
            )
        if state["dry_run"] != self.mode.dry_run:
            kind = "a dry run" if state["dry_run"] else "a GPU run"
            raise SystemExit(
                f"--resume: {self.state_path} is from {kind}; resume it the same way, or "
                "start over without --resume."
            )
        return state

    def stop_now(self, signum, frame) -> None:
        """SIGTERM or Ctrl-C: the budget ends now (a cut training part still saves)."""
        self.deadline = clock() - self.mode.reserve

    def run(self) -> None:
        env, no_hydra = child_env()
        # CPU only in a dry run, also on a GPU machine: the cuda tests skip, nothing is measured
        if self.mode.dry_run:
            env["CUDA_VISIBLE_DEVICES"] = ""
        for part in self.parts:
            result = self.run_part(part, env, no_hydra)
            self.results.append(result)
            earlier = self.state["parts"].get(part.name, {})
            if result["outcome"] != "skipped" or earlier.get("outcome") not in ("cut", "done"):
                # a skipped part keeps what an earlier call left: a cut run stays resumable
                record = {k: result.get(k) for k in ("outcome", "status", "run_dir")}
                if record["run_dir"]:  # relative: the report's folder may move to another machine
                    record["run_dir"] = os.path.relpath(record["run_dir"], self.args.work)
                self.state["parts"][part.name] = record
            self.save()
        self.call["finished"] = True
        self.save()

    def run_part(self, part: Part, env: dict, no_hydra: str | None) -> dict:
        earlier = self.state["parts"].get(part.name, {})
        result = {"name": part.name, "outcome": "skipped", "command": None}
        if earlier.get("outcome") == "done":
            return {**result, "status": "done in an earlier call"}
        if self.args.only and part.name not in self.args.only:
            return {**result, "status": "skipped: not selected (--only)"}
        if part.needs_hydra and no_hydra:
            return {**result, "status": f"skipped: {no_hydra}"}
        try:
            command, run_dir = self._command(part, earlier)
        except Skip as why:
            return {**result, "status": f"skipped: {why}"}
        need = self.state["seconds"].get(part.name, part.need) + (
            self.mode.grace if part.training else 0
        )
        left = self.deadline - clock() - self.mode.reserve
        if need > left:
            status = f"skipped: did not fit (needs about {need:.0f} s, {max(left, 0):.0f} s left)"
            return {**result, "status": status}
        result.update(
            command=shlex.join(["python", *command[1:]]), run_dir=str(run_dir) if run_dir else None
        )
        returncode, cut, seconds, log = self._execute(part, command, env, need)
        result["seconds"] = seconds
        return {**result, **self._outcome(part, returncode, cut, seconds, need, log, run_dir)}

    def _command(self, part: Part, earlier: dict) -> tuple[list[str], Path | None]:
        """The part's command, and the run folder of a training part: a new one, or the one of a
        run that an earlier call cut, which it resumes. Raises Skip when the part cannot run."""
        earlier_run = self.args.work / earlier["run_dir"] if earlier.get("run_dir") else None
        if part.training and earlier.get("outcome") == "cut" and resumable(earlier_run):
            command = [
                sys.executable,
                "train.py",
                f"resume={earlier_run}",
                "trainer.progress=false",
            ]
            return command, earlier_run
        command = part.command()
        if not part.training:
            return command, None
        run_dir = self.args.work / "runs" / f"{part.name}-{datetime.now():%Y%m%d-%H%M%S}"
        command.append(f"hydra.run.dir={run_dir}")
        return command, run_dir

    def _execute(
        self, part: Part, command: list[str], env: dict, need: float
    ) -> tuple[int, str | None, float, Path]:
        """Runs `command` until it ends or the budget does: a training run gets SIGTERM `grace`
        seconds before the end (it stops at the next step and keeps its last complete epoch).
        Any other part is also stopped at its overrun_limit, so that one that hangs leaves time
        to the parts after it. Says what cut it: "budget", "overrun" or None."""
        log = self.args.work / "logs" / f"{part.name}-{datetime.now():%Y%m%d-%H%M%S}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()  # the wall time; the budget's `clock` may be moved by a test
        overrun_at = clock() + overrun_limit(need)
        with open(log, "w") as out:
            # in its own process group, to be stopped with its children
            child = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            cut = None
            while child.poll() is None:
                stop_at = (
                    self.deadline - self.mode.reserve - (self.mode.grace if part.training else 0)
                )
                if clock() >= stop_at:
                    cut = "budget"
                elif not part.training and clock() >= overrun_at:
                    cut = "overrun"
                if cut:  # stop it; the loop ends with it
                    self._stop(child, part.training)
                time.sleep(0.2)
        return child.returncode, cut, time.monotonic() - started, log

    def _stop(self, child: subprocess.Popen, training: bool) -> None:
        """A training run gets SIGTERM alone (its data workers keep on) and `grace` seconds to
        save; any other part, with its children, 5 seconds. Then SIGKILL, if it is still there."""
        if training:
            child.send_signal(signal.SIGTERM)
            self._wait(child, self.mode.grace)
        else:
            os.killpg(child.pid, signal.SIGTERM)
            self._wait(child, 5)
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()

    @staticmethod
    def _wait(child: subprocess.Popen, seconds: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=seconds)

    def _outcome(
        self,
        part: Part,
        returncode: int,
        cut: str | None,
        seconds: float,
        need: float,
        log: Path,
        run_dir: Path | None,
    ) -> dict:
        text = log.read_text(errors="replace")
        tail = "\n".join(text.splitlines()[-15:])
        if part.name == "check-gpu" and returncode == 0:
            self.state["facts"] = read_json(self.args.work / "gpu_check.json") or None
        if part.name == "cuda-tests":
            tests = tests_outcome(self.args.work / "cuda_tests.xml", returncode, cut, tail)
            if tests:
                return tests
        if part.training and run_dir is not None:
            training = training_outcome(run_dir, cut, tail)
            if training:
                return training
        elif cut:
            return self._cut_outcome(part, cut, seconds, need, tail)
        if returncode == 0:
            self.state["seconds"][part.name] = round(seconds, 1)  # what it needs next time
            return {"outcome": "done", "status": "done", "output": "" if part.training else text}
        return {
            "outcome": "failed",
            "status": f"failed (exit status {returncode}); --resume runs it again",
            "output": tail,
        }

    def _cut_outcome(self, part: Part, cut: str, seconds: float, need: float, tail: str) -> dict:
        """A part other than training that was stopped: it needs more than it ran, so the next
        call runs it only with time for that."""
        self.state["seconds"][part.name] = round(max(need, seconds) * 1.5, 1)
        why = (
            f"stopped after {overrun_limit(need):.0f} s (its guess was {need:.0f} s)"
            if cut == "overrun"
            else "cut by the budget"
        )
        return {
            "outcome": "cut",
            "status": f"{why}; --resume runs it again when "
            f"{self.state['seconds'][part.name]:.0f} s are left",
            "output": tail,
        }

    def save(self) -> None:
        """The state and the report, after every part: a call cut off still leaves both."""
        self.call["seconds"] = time.monotonic() - self.started
        self.report.parent.mkdir(parents=True, exist_ok=True)
        section = render_call(self.call, self.results, self.state["facts"])
        atomic_write(self.report, self.earlier.rstrip("\n") + "\n\n" + section)
        atomic_write(self.state_path, json.dumps(self.state, indent=2))


def overrun_limit(need: float) -> float:
    return OVERRUN * need + OVERRUN_SLACK


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    """The command line; parse_args checks what argparse cannot."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=540.0,
        help="seconds for this call, all parts together (default 540)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="go on from the last call: keep what is done, continue cut runs",
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=ROOT / "outputs" / "gpu_suite" / "report.md",
        help="the markdown report (default outputs/gpu_suite/report.md); "
        "state, runs and logs go beside it",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="where MNIST/raw/ and cifar10-jpeg/ (or their .tar.gz) are; "
        "default .device/data, then ../shared/data",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="on a CPU, tiny shapes and the digits: checks the suite itself",
    )
    parser.add_argument(
        "--only", nargs="+", metavar="PART", default=None, help="run only these parts"
    )
    parser.add_argument(
        "--prepare",
        action="store_true",
        help="copy wheels and data archives from --shared into .device/ and stop",
    )
    parser.add_argument(
        "--shared",
        type=Path,
        default=SHARED,
        help="for --prepare: the folder with wheels/ and data/ (default ../shared)",
    )
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.budget > 0:
        parser.error(
            f"--budget must be a number of seconds above 0 (got {args.budget:g}); "
            "e.g. --budget 540."
        )
    names = [part.name for part in plan(args)]
    for name in args.only or []:
        if name not in names:
            parser.error(f"--only {name}: no such part; choose from {', '.join(names)}.")
    args.report = args.report.resolve()
    args.work = args.report.parent
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.prepare:
        copied = prepare(args.shared)
        size = sum(p.stat().st_size for p in copied) / 2**20
        print(f"copied {len(copied)} files ({size:.1f} MiB) into {DEVICE_DIR}:")
        print("\n".join(f"  {p.relative_to(ROOT)}" for p in copied))
        print("take .device/ along with the code; there: python benchmarks/gpu_suite.py")
        return 0
    mode = Mode(
        args.dry_run, grace=5.0 if args.dry_run else 30.0, reserve=1.0 if args.dry_run else 5.0
    )
    suite = Suite(args, plan(args), mode, argv)
    handlers = {sig: signal.signal(sig, suite.stop_now) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        suite.run()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        suite.save()
    print(f"report: {args.report}")
    for result in suite.results:
        print(f"  {result['name']:<22} {result['status']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
