"""The GPU suite's markdown report: one section per call, figures read from what the parts left,
and how a part ended, read from the same (its tests' junit file, its run folder).

Only the standard library (and PyYAML, which train.py needs anyway): the suite runs where Hydra,
and even the project's own imports, may be missing.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

TARGETS = (0.90, 0.93)  # validation accuracies whose wall time the report gives


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def planned_epochs(run_dir: Path) -> int | None:
    """trainer.epochs from the run's own .hydra/config.yaml."""
    try:
        import yaml

        return int(
            yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["trainer"]["epochs"]
        )
    except (OSError, ImportError, KeyError, TypeError, ValueError):
        return None


def metric_rows(run_dir: Path) -> list[dict[str, float]]:
    try:
        with open(run_dir / "metrics.csv", newline="") as f:
            return [
                {k: float(v) for k, v in row.items() if v not in ("", None)}
                for row in csv.DictReader(f)
            ]
    except OSError:
        return []


def run_figures(run_dir: Path) -> dict:
    """A training run's figures: status, epochs, accuracies, wall times (to 90%/93% validation
    accuracy: cumulated epoch_seconds, training + validation, the EMA's validation counted too)."""
    summary = read_json(run_dir / "summary.json")
    rows = metric_rows(run_dir)
    figures = {
        "status": summary.get("status", "not started"),
        "epochs": f"{summary.get('epochs_completed', 0)} of {planned_epochs(run_dir) or '?'}",
        "device": summary.get("device"),
        "precision": summary.get("precision"),
        "parameters": summary.get("num_params"),
        "best val acc": summary.get("best_val_acc"),
        "best epoch": summary.get("best_epoch"),
        "best weights": summary.get("best_weights"),
        "test acc": summary.get("test_acc"),
        "test loss": summary.get("test_loss"),
        "train seconds (all calls)": summary.get("train_seconds"),
        "resumes": len(summary.get("resumes", [])),
    }
    if rows:
        rates = sorted(row["images_per_second"] for row in rows if "images_per_second" in row)
        figures["median images/s (training)"] = rates[len(rates) // 2] if rates else None
        elapsed = 0.0
        reached: dict[float, float] = {}
        for row in rows:
            elapsed += row.get("epoch_seconds", 0.0)
            acc = max(row.get("val_acc", 0.0), row.get("ema_val_acc", 0.0))
            for target in TARGETS:
                if acc >= target and target not in reached:
                    reached[target] = elapsed
        for target in TARGETS:
            figures[f"seconds to {target:.0%} val acc"] = reached.get(target, "not reached")
    return figures


def junit_results(path: Path) -> list[dict]:
    """One dict per test of a pytest --junitxml file: name, outcome, message, properties."""
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError):
        return []
    results = []
    for case in root.iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                outcome, message = (
                    ("skipped" if kind == "skipped" else "failed"),
                    found.get("message", ""),
                )
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        results.append(
            {
                "name": case.get("name"),
                "outcome": outcome,
                "message": message,
                "properties": properties,
            }
        )
    return results


def tests_outcome(xml: Path, returncode: int, cut: str | None, tail: str) -> dict | None:
    """The cuda-tests part's outcome from pytest's junit file; None when pytest did not finish
    its run (cut, or an exit status other than passed or failed), or left no results."""
    tests = junit_results(xml)
    counts = {o: sum(t["outcome"] == o for t in tests) for o in ("passed", "failed", "skipped")}
    summary = ", ".join(f"{n} {o}" for o, n in counts.items() if n)
    if cut or returncode not in (0, 1) or not tests:
        return None
    outcome = "done" if returncode == 0 else "failed"
    return {
        "outcome": outcome,
        "status": f"{outcome}: {summary}",
        "tests": tests,
        "output": tail if returncode else "",
    }


def training_outcome(run_dir: Path, cut: str | None, tail: str) -> dict | None:
    """A training part's outcome from its run folder: done, or cut (resumable once it saved an
    epoch); None when it ended by itself without completing (the exit status tells)."""
    if read_json(run_dir / "summary.json").get("status") == "completed":
        return {"outcome": "done", "status": "done"}
    if not cut:
        return None
    if resumable(run_dir):
        epochs = run_figures(run_dir)["epochs"]
        return {
            "outcome": "cut",
            "status": f"cut by the budget with epoch {epochs} saved; "
            "resumable: run again with --resume",
        }
    return {
        "outcome": "cut",
        "status": "cut by the budget before its first epoch ended; --resume starts it over",
        "output": tail,
    }


def resumable(run_dir: Path | None) -> bool:
    return run_dir is not None and (run_dir / "checkpoints" / "last.pt").is_file()


def _cell(value) -> str:
    if isinstance(value, float):  # accuracies and losses below 1 keep 4 decimals, seconds 1
        return f"{value:.4f}" if abs(value) < 1 else f"{value:,.1f}"
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def device_line(facts: dict | None) -> str:
    if not facts:
        return "not checked (the check-gpu part has not run)"
    gpus = (
        "; ".join(f"{g['name']} ({g['memory_gib']} GiB)" for g in facts.get("gpus", []))
        or f"no GPU (CPU, {facts.get('cpu_threads')} threads)"
    )
    cuda = f"CUDA {facts['cuda_build']}" if facts.get("cuda_build") else "CPU-only build"
    compile_ = facts.get("compile") or {}
    compiled = {True: "works", False: "fails"}.get(compile_.get("works"), "not tried")
    yes_no = {True: "yes", False: "no", None: "n/a"}
    return (
        f"{gpus} | torch {facts.get('torch')} ({cuda}), Python {facts.get('python')} | "
        f"native bf16: {yes_no[facts.get('bf16', {}).get('native')]} | "
        f"torch.compile: {compiled} | NCCL: "
        f"{yes_no[facts.get('nccl', {}).get('available')]} | trainer.device=auto and "
        f"trainer.precision=auto pick {facts.get('auto_device')}, {facts.get('auto_precision')}"
    )


def render_call(call: dict, parts: list[dict], facts: dict | None) -> str:
    """The markdown section of one call: what ran, how long, how it ended, and every figure."""
    lines = [
        f"## {call['started']}: {'dry run, ' if call['dry_run'] else ''}"
        f"budget {call['budget']:.0f} s",
        "",
        f"Command: `{call['command']}`  ",
        f"Device: {device_line(facts)}  ",
        f"Wall time of this call: {call.get('seconds', 0):.1f} s"
        + ("" if call.get("finished") else " (still running, or stopped before it could finish)"),
        "",
        "| # | part | status | wall s |",
        "| --- | --- | --- | --- |",
    ]
    for i, part in enumerate(parts, 1):
        wall = f"{part['seconds']:.1f}" if part.get("seconds") is not None else ""
        lines.append(f"| {i} | {part['name']} | {_cell(part['status'])} | {wall} |")
    for part in parts:
        if part.get("command") is None:
            continue  # skipped, or done in an earlier call: its details are in that call's section
        lines += ["", f"### {part['name']}", "", f"`{part['command']}`", ""]
        if part.get("run_dir"):
            lines += [f"Run folder: `{part['run_dir']}`", "", "| figure | value |", "| --- | --- |"]
            lines += [
                f"| {k} | {_cell(v)} |" for k, v in run_figures(Path(part["run_dir"])).items()
            ]
            lines.append("")
        if part.get("tests"):
            lines += ["| test | outcome | figures / reason |", "| --- | --- | --- |"]
            for test in part["tests"]:
                extra = (
                    ", ".join(f"{k} {v}" for k, v in test["properties"].items()) or test["message"]
                )
                lines.append(f"| {test['name']} | {test['outcome']} | {_cell(extra)} |")
            lines.append("")
        if part.get("output"):
            lines += ["```", part["output"].rstrip(), "```"]
    return "\n".join(lines) + "\n"
