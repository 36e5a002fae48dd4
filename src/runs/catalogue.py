"""Saved runs: finding them, describing them, and rebuilding a model from one.

A run is read from its folder alone (summary.json, model.json, weights/best.safetensors), never
from the training config, and never by unpickling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from itertools import takewhile
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_file

from src.contract import SUMMARY, RunPaths, Status
from src.errors import ConfigError, last_line
from src.model.vit import VisionTransformer

RUN_ROOTS = ("outputs", "multirun")
RUNS_COLUMNS = [
    "#",
    "when",
    "dataset",
    "model",
    "overrides",
    "epochs",
    "best val",
    "test",
    "status",
    "folder",
]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class Run:
    path: Path
    summary: dict[str, Any]
    card: dict[str, Any] | None  # model.json

    @classmethod
    def read(cls, path: str | Path) -> Run:
        paths = RunPaths(path)
        return cls(paths.root, _read_json(paths.summary) or {}, _read_json(paths.model_card))

    @property
    def weights_path(self) -> Path:
        return RunPaths(self.path).best_weights

    @property
    def started(self) -> datetime:
        try:
            return datetime.fromisoformat(self.summary["started_at"])
        except (KeyError, TypeError, ValueError):
            return datetime.fromtimestamp(self.path.stat().st_mtime)

    @property
    def status(self) -> str:
        return str(self.summary.get("status", "unknown"))

    @property
    def problem(self) -> str | None:
        """Why the run cannot be used for prediction, or None when it can."""
        if self.card is None:
            return (
                "model.json unreadable"
                if RunPaths(self.path).model_card.exists()
                else "no model.json"
            )
        if not self.weights_path.is_file():
            return "no weights"
        return None

    @property
    def usable(self) -> bool:
        return self.problem is None

    @property
    def ready(self) -> bool:
        """Completed, with weights: what `latest`, `best` and the Enter key choose from."""
        return self.usable and self.status == Status.COMPLETED

    @property
    def passed_over_because(self) -> str | None:
        """Why `latest` and `best` pass the run over, in a few words ("still training",
        "without weights"), or None when it is ready."""
        if self.status == Status.RUNNING:
            return "still training"
        if self.status != Status.COMPLETED:
            return str(self.status)
        if not self.usable:
            return "without weights" if self.problem == "no weights" else f"with {self.problem}"
        return None

    @property
    def best_val_acc(self) -> float | None:
        value = self.summary.get("best_val_acc")
        return float(value) if isinstance(value, (int, float)) else None


def hydra_overrides(run_dir: Path) -> list[str] | None:
    """The command-line overrides Hydra saved for a run (.hydra/overrides.yaml), if it did."""
    path = RunPaths(run_dir).hydra_overrides
    if not path.is_file():
        return None
    return [str(o) for o in OmegaConf.load(path)]


def find_runs(roots: list[str | Path] | tuple[str | Path, ...] = RUN_ROOTS) -> list[Run]:
    """Every run folder (one holding summary.json) under ``roots``, newest first."""
    runs = [
        Run.read(summary.parent)
        for root in roots
        if Path(root).is_dir()
        for summary in Path(root).rglob(SUMMARY)
    ]
    return sorted(runs, key=lambda run: run.started, reverse=True)


def runs_frame(runs: list[Run]) -> pd.DataFrame:
    """The table of runs that `inference.py --list` prints and the web page shows: numbered from 1
    in the order given; accuracies as fractions (NaN when missing); a run that cannot be used says
    why in the status column."""
    rows = []
    for number, run in enumerate(runs, start=1):
        s = run.summary
        rows.append(
            {
                "#": number,
                "when": run.started.strftime("%Y-%m-%d %H:%M:%S"),
                "dataset": s.get("dataset", "?"),
                "model": s.get("model", "?"),
                # a run that stopped at a bad setting has its overrides in .hydra/ alone
                "overrides": " ".join(s.get("overrides") or hydra_overrides(run.path) or []) or "-",
                "epochs": s.get("epochs_completed", 0),
                "best val": s.get("best_val_acc"),
                "test": s.get("test_acc"),
                "status": run.status if run.usable else f"{run.status}, {run.problem}",
                "folder": str(run.path),
            }
        )
    frame = pd.DataFrame(rows, columns=RUNS_COLUMNS)
    frame[["best val", "test"]] = frame[["best val", "test"]].astype(float)
    return frame


@dataclass
class Choice:
    """The run that ``--run`` names, and for ``latest`` and ``best`` the runs passed over."""

    spec: str
    run: Run
    passed_over: list[Run]

    def reasons(self) -> dict[str, int]:
        """How many runs were passed over for each reason, e.g. {"still training": 1}."""
        return count_reasons(self.passed_over)

    def better_unfinished(self) -> list[Run]:
        """Runs passed over that have weights and a better validation accuracy so far (a run
        still training, or one interrupted): ``best`` leaves them out, and says so."""
        chosen = self.run.best_val_acc or 0.0
        return [r for r in self.passed_over if r.usable and (r.best_val_acc or 0.0) > chosen]


def count_reasons(runs: list[Run]) -> dict[str, int]:
    """Runs counted by why they were passed over, most common first."""
    counts: dict[str, int] = {}
    for run in runs:
        because = run.passed_over_because or "not chosen"
        counts[because] = counts.get(because, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def choose(spec: str, roots: list[str | Path] | tuple[str | Path, ...] = RUN_ROOTS) -> Choice:
    """A run from a folder path, ``latest`` (the newest completed run with weights) or ``best``
    (the completed run with weights of top validation accuracy, the newest of equals). A run
    still training, interrupted or failed is never chosen by ``latest`` or ``best``: the choice
    keeps them as passed over, so that the caller can say so."""
    if spec in ("latest", "best"):
        runs = find_runs(roots)
        candidates = [r for r in runs if r.ready]
        if not candidates:
            where = " or ".join(f"{root}/" for root in roots)
            skipped = ", ".join(f"{n} {why}" for why, n in count_reasons(runs).items())
            raise ConfigError(
                f"--run {spec}: there is no completed run with weights under {where}"
                + (f" (passed over: {skipped})" if skipped else "")
                + "; train one first with `python train.py`."
            )
        if spec == "latest":  # passed over: the runs newer than it
            return Choice(spec, candidates[0], list(takewhile(lambda r: not r.ready, runs)))
        run = max(candidates, key=lambda r: -1.0 if r.best_val_acc is None else r.best_val_acc)
        return Choice(spec, run, [r for r in runs if not r.ready])

    path = Path(spec)
    if not path.is_dir():
        raise ConfigError(
            f"--run {spec}: no such run folder; `python inference.py --list` shows the runs."
        )
    run = Run.read(path)
    if not run.usable:
        raise ConfigError(
            f"--run {spec}: this run cannot be used ({run.problem}); pick a run whose status "
            "table entry has weights."
        )
    return Choice(spec, run, [])


def choose_run(spec: str, roots: list[str | Path] | tuple[str | Path, ...] = RUN_ROOTS) -> Run:
    """The run that ``choose`` takes."""
    return choose(spec, roots).run


def load_model(run: Run, device: torch.device | str = "cpu") -> VisionTransformer:
    """The run's best weights in a freshly built model, in eval mode."""
    if not run.usable:
        raise ConfigError(f"{run.path}: this run cannot be used ({run.problem}).")
    try:
        weights = load_file(run.weights_path)
    except (SafetensorError, OSError) as err:
        raise ConfigError(
            f"{run.weights_path} is damaged ({last_line(err)}); pick another run."
        ) from None
    try:
        model = VisionTransformer(**run.card["model"])
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, KeyError) as err:
        raise ConfigError(
            f"{run.weights_path} does not match the run's model.json ({type(err).__name__}); "
            "the run folder is damaged, so pick another run."
        ) from None
    return model.to(device).eval()
