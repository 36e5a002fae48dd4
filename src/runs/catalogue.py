"""Saved runs: finding them, describing them, and rebuilding a model from one.

A run is read from its folder alone (summary.json, model.json, weights/best.safetensors), never
from the training config, and never by unpickling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from itertools import takewhile
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from omegaconf import ListConfig, OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_file

from src.contract import OR_NEW_RUN, OR_OTHER_RUN, SUMMARY, RunPaths, Status
from src.errors import ConfigError, DamagedFile
from src.fileio import damaged_safetensors, read_json, read_yaml
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


def _read_json(path: Path, fix: str, damaged: list[DamagedFile]) -> dict[str, Any] | None:
    """The file's object; None when it is missing or unreadable, and when damaged, noted."""
    try:
        return read_json(path, fix) if path.is_file() else None
    except DamagedFile as err:
        damaged.append(err)
    except OSError:
        pass
    return None


@dataclass
class Run:
    path: Path
    summary: dict[str, Any]
    card: dict[str, Any] | None  # model.json
    overrides: list[str] = field(default_factory=list)  # the command line's
    damaged: list[DamagedFile] = field(default_factory=list)  # of the files read, those damaged

    @classmethod
    def read(cls, path: str | Path) -> Run:
        """The run's summary.json and model.json, and its overrides (from summary.json, or from
        .hydra/ for a run that stopped at a bad setting); a damaged file is noted, not raised."""
        paths, damaged = RunPaths(path), []
        summary = _read_json(paths.summary, OR_NEW_RUN, damaged) or {}
        card = _read_json(paths.model_card, OR_OTHER_RUN, damaged)
        overrides = summary.get("overrides")
        if not isinstance(overrides, list):
            try:
                overrides = hydra_overrides(paths.root) or []
            except DamagedFile as err:
                damaged.append(err)
                overrides = []
        return cls(paths.root, summary, card, [str(o) for o in overrides], damaged)

    def damage(self, name: str) -> DamagedFile | None:
        """The sentence for the run's file ``name`` (e.g. "model.json"), if it was damaged."""
        return next((err for err in self.damaged if err.path == self.path / name), None)

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
        if self.damage(SUMMARY):
            return "damaged"
        return str(self.summary.get("status", "unknown"))

    @property
    def listed_status(self) -> str:
        """The runs table's status: summary.json's, then the files found damaged, or why the run
        cannot predict ("completed, no weights", "damaged: summary.json")."""
        parts = [] if self.damage(SUMMARY) else [self.status]
        if self.damaged:
            names = (str(err.path.relative_to(self.path)) for err in self.damaged)
            parts.append("damaged: " + ", ".join(names))
        elif self.problem:
            parts.append(self.problem)
        return ", ".join(parts)

    @property
    def problem(self) -> str | None:
        """Why the run cannot be used for prediction, or None when it can."""
        if self.card is None:
            return "model.json damaged" if self.damage("model.json") else "no model.json"
        if not self.weights_path.is_file():
            return "no weights"
        return None

    def refusal(self, prefix: str) -> ConfigError:
        """The sentence saying why the run cannot predict: a damaged file's own, if that is why."""
        damaged = self.damage("model.json")
        if damaged and self.card is None:
            return damaged
        return ConfigError(
            f"{prefix}this run cannot be used ({self.problem}); pick a run whose status "
            "table entry has weights."
        )

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
    """The command-line overrides Hydra saved for a run (.hydra/overrides.yaml), if it did; a
    damaged file (one that is not a list of overrides) raises DamagedFile."""
    path = RunPaths(run_dir).hydra_overrides
    if not path.is_file():
        return None
    saved = read_yaml(path, OR_NEW_RUN)
    if not isinstance(saved, ListConfig):
        raise DamagedFile(path, "not a YAML list of overrides", OR_NEW_RUN)
    # As typed, never resolved: an ${oc.env:...} in the file would read this machine's environment
    overrides = [str(o) for o in OmegaConf.to_container(saved, resolve=False)]
    parser = OverridesParser.create()
    for line, override in enumerate(overrides, start=1):
        try:
            parser.parse_overrides([override])
        except OverrideParseException:
            what = f"line {line}, {override[:40]!r}, is not a key=value override"
            raise DamagedFile(path, what, OR_NEW_RUN) from None
    return overrides


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
                "overrides": " ".join(run.overrides) or "-",
                "epochs": s.get("epochs_completed", 0),
                "best val": s.get("best_val_acc"),
                "test": s.get("test_acc"),
                "status": run.listed_status,
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
        raise run.refusal(f"--run {spec}: ")
    return Choice(spec, run, [])


def choose_run(spec: str, roots: list[str | Path] | tuple[str | Path, ...] = RUN_ROOTS) -> Run:
    """The run that ``choose`` takes."""
    return choose(spec, roots).run


def load_model(run: Run, device: torch.device | str = "cpu") -> VisionTransformer:
    """The run's best weights in a freshly built model, in eval mode."""
    if not run.usable:
        raise run.refusal(f"{run.path}: ")
    try:
        weights = load_file(run.weights_path)
    except (SafetensorError, OSError) as err:
        raise damaged_safetensors(run.weights_path, err, OR_OTHER_RUN) from None
    try:
        model = VisionTransformer(**run.card["model"])
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, KeyError) as err:
        raise ConfigError(
            f"{run.weights_path} does not match the run's model.json ({type(err).__name__}); "
            "the run folder is damaged, so pick another run."
        ) from None
    return model.to(device).eval()
