"""Two or more runs side by side: the settings that differ (and only those), the final metrics,
their curves overlaid and their per-class differences.

    python -m src.report.compare outputs/2026-12-06/10-04-55 outputs/2026-12-06/11-30-12
    python -m src.report.compare multirun/2026-12-06/09-00-00       # every job of a sweep
    python -m src.report.compare latest best --out comparisons/

Settings come from each run's .hydra/config.yaml, flattened to dotted keys (``optimizer.lr``);
metrics from summary.json, metrics.csv and metrics_per_class.csv. The two figures
(compare_curves.png, compare_per_class.png) go to ``--out``. The web page's Compare tab shows the
same tables and figures.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from omegaconf import DictConfig, OmegaConf

from src.contract import SUMMARY, RunPaths
from src.errors import ConfigError
from src.report.compare_plots import plot_compared_curves, plot_per_class_change
from src.report.plots import write_png
from src.runs.catalogue import RUN_ROOTS, Run, choose, find_runs, hydra_overrides
from src.runs.resume import RESOLVER_CALL, dotted_keys

ABSENT = "-"  # a key one run has and another does not
SUMMARY_AVERAGES = ("macro avg", "weighted avg", "accuracy")  # metrics_per_class.csv's last rows


@dataclass
class Comparison:
    """The runs, each with a short label (the part of its path the others do not share), its
    flattened settings and its overrides; ``notes`` say what could not be read."""

    runs: list[Run]
    labels: list[str]
    configs: list[dict[str, Any]]
    overrides: list[list[str]]
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, runs: list[Run]) -> Comparison:
        notes: list[str] = []
        configs = [flat_config(run, notes) for run in runs]
        overrides = [run_overrides(run) for run in runs]
        return cls(runs, short_labels([run.path for run in runs]), configs, overrides, notes)

    def config_diff(self) -> pd.DataFrame:
        """The settings that differ between the runs, and only those: one row per dotted key
        (sorted), one column per run; a key a run lacks reads "-"."""
        keys = sorted(set().union(*self.configs))
        rows = {}
        for key in keys:
            values = [config.get(key, ABSENT) for config in self.configs]
            if any(value != values[0] for value in values[1:]):
                rows[key] = [_shown(value) for value in values]
        frame = pd.DataFrame.from_dict(rows, orient="index", columns=self.labels)
        frame.index.name = "setting"
        return frame

    def own_overrides(self) -> tuple[list[list[str]], list[str]]:
        """Each run's overrides that not every run shares, and those they all share."""
        shared = set.intersection(*(set(o) for o in self.overrides)) if self.overrides else set()
        own = [[o for o in overrides if o not in shared] for overrides in self.overrides]
        return own, [o for o in self.overrides[0] if o in shared] if self.overrides else []

    def metrics(self) -> pd.DataFrame:
        """The final metrics side by side: one row per metric, one column per run (text, as
        printed: accuracies in percent, times in seconds)."""
        rows = [final_metrics(run) for run in self.runs]
        frame = pd.DataFrame(rows, index=self.labels).T
        frame.index.name = "metric"
        return frame

    def curves(self) -> dict[str, pd.DataFrame]:
        """metrics.csv of each run that has one, by label; the others are noted."""
        found = {}
        for label, run in zip(self.labels, self.runs):
            table = _csv(RunPaths(run.path).metrics, "epoch")
            if table is None:
                self._note(f"{label} ({run.path}) has no readable metrics.csv: no curves")
            else:
                found[label] = table
        return found

    def per_class(self, metric: str = "f1") -> pd.DataFrame:
        """metrics_per_class.csv's ``metric`` for each class (rows, in the first run's order)
        and run (columns); runs without the file are noted and left out."""
        columns = {}
        for label, run in zip(self.labels, self.runs):
            table = _csv(run.path / "metrics_per_class.csv", "class")
            if table is None or metric not in table:
                self._note(f"{label} ({run.path}) has no readable metrics_per_class.csv")
                continue
            table = table[~table["class"].astype(str).isin(SUMMARY_AVERAGES)]
            columns[label] = table.set_index(table["class"].astype(str))[metric]
        frame = pd.DataFrame(columns)
        frame.index.name = "class"
        return frame

    def legend(self) -> dict[str, str]:
        """Each run's label with what sets it apart: its own overrides, else its differing
        settings (the first few)."""
        own, _ = self.own_overrides()
        diff = self.config_diff()
        names = {}
        for i, label in enumerate(self.labels):
            what = " ".join(own[i]) or " ".join(f"{k}={diff.iloc[:, i][k]}" for k in diff.index[:3])
            names[label] = f"{label}: {what}" if what else label
        return names

    def _note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)


def flat_config(run: Run, notes: list[str]) -> dict[str, Any]:
    """The run's .hydra/config.yaml as {dotted key: value}, lists kept whole; interpolations are
    resolved where they can be. Empty (and noted) when the file is missing or unreadable."""
    path = RunPaths(run.path).hydra_config
    try:
        config = OmegaConf.load(path)
    except FileNotFoundError:
        notes.append(f"{run.path} has no .hydra/config.yaml: its settings are not compared")
        return {}
    except (OSError, ValueError, yaml.YAMLError):
        notes.append(f"{path} is damaged: its settings are not compared")
        return {}
    if not isinstance(config, DictConfig):
        return {}
    typed = OmegaConf.to_container(config, resolve=False)
    _keep_resolver_calls_as_typed(config, typed)
    try:
        tree = OmegaConf.to_container(config, resolve=True)
    except Exception:  # an interpolation that names a resolver only training registers
        tree = typed
    return dotted_keys(tree, keep_empty=True)


def _keep_resolver_calls_as_typed(config: DictConfig, typed: dict) -> None:
    """Escapes in ``config`` each value of ``typed`` (its unresolved container) that calls a
    resolver (``${oc.env:...}``, ``${now:...}``), so that it is shown as the run typed it: resolved
    here, it would read this machine's environment (a password in MLFLOW_TRACKING_URI, say) into a
    table that the page shows."""
    for key, value in dotted_keys(typed, keep_empty=True).items():
        if (literal := _literal(value)) != value:
            OmegaConf.update(config, key, literal, merge=False)


def _literal(value: Any) -> Any:
    if isinstance(value, str) and RESOLVER_CALL.search(value):
        return value.replace("${", "\\${")
    if isinstance(value, list):
        return [_literal(item) for item in value]
    return value


def run_overrides(run: Run) -> list[str]:
    """The command line's overrides (.hydra/overrides.yaml, else summary.json's), each key once:
    of ``trainer.epochs=2 trainer.epochs=1``, the last, which Hydra applied."""
    try:
        saved = hydra_overrides(run.path)
    except ConfigError:
        saved = None
    overrides = saved if saved is not None else [str(o) for o in run.summary.get("overrides", [])]
    last = {override.split("=", 1)[0].lstrip("+~"): i for i, override in enumerate(overrides)}
    return [overrides[i] for i in sorted(last.values())]


def final_metrics(run: Run) -> dict[str, str]:
    """summary.json's final numbers for one run, as text."""
    s = run.summary
    best = _pct(s.get("best_val_acc"))
    if s.get("best_epoch") is not None and best != ABSENT:
        best += f" (epoch {s['best_epoch']})"
    return {
        "status": str(run.status),
        "epochs": str(s.get("epochs_completed", ABSENT)),
        "best val acc": best,
        "test acc": _pct(s.get("test_acc")),
        "test loss": _num(s.get("test_loss"), ".4f"),
        "test macro F1": _num(s.get("test_macro_f1"), ".4f"),
        "parameters": _num(s.get("num_params"), ",.0f"),
        "train time (s)": _num(s.get("train_seconds"), ".1f"),
        "device": str(s.get("device", ABSENT)),
    }


def short_labels(paths: list[Path]) -> list[str]:
    """The part of each path the others do not share: job numbers for a sweep's jobs, TIME for
    runs of one day (outputs/DATE/TIME), DATE/TIME across days."""
    parts = [Path(p).resolve().parts for p in paths]
    common = 0
    while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    return [str(Path(*p[common:])) for p in parts]


def _shown(value: Any) -> str:
    return ABSENT if value is ABSENT else "null" if value is None else str(value)


def _pct(value: Any) -> str:
    return f"{value:.2%}" if isinstance(value, (int, float)) else ABSENT


def _num(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else ABSENT


def _csv(path: Path, column: str) -> pd.DataFrame | None:
    """A CSV table with ``column``, or None when it is missing or unreadable."""
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError):
        return None
    return table if column in table and len(table) else None


def runs_named(specs: list[str], roots: list[str] | tuple[str, ...] = RUN_ROOTS) -> list[Run]:
    """Runs from folders (a run folder, or a sweep folder: every run under it, in job order),
    ``latest`` or ``best``. Two or more, none twice, else one sentence saying what to give."""
    runs: list[Run] = []
    for spec in specs:
        path = Path(spec)
        if spec in ("latest", "best"):
            runs.append(choose(spec, roots).run)
        elif (path / SUMMARY).is_file():
            runs.append(Run.read(path))
        elif path.is_dir() and (found := find_runs([path])):
            runs += sorted(found, key=lambda run: _job_order(run.path.relative_to(path)))
        else:
            raise ConfigError(
                f"{spec} is not a run folder (no summary.json) and holds none; give run folders "
                "or a sweep folder (`python inference.py --list` shows the runs)."
            )
    folders = [run.path.resolve() for run in runs]
    twice = next((f for i, f in enumerate(folders) if f in folders[:i]), None)
    if twice is not None:
        raise ConfigError(f"{twice} is named twice; give each run once.")
    if len(runs) < 2:
        raise ConfigError(
            f"{' '.join(specs)} names {len(runs)} run; give two or more run folders, or a sweep "
            "folder with two or more jobs."
        )
    return runs


def _job_order(relative: Path) -> list[tuple[int, int, str]]:
    """Job 2 before job 10: numeric parts compare as numbers."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in relative.parts]


def write_figures(comparison: Comparison, out: Path) -> list[Path]:
    """compare_curves.png and compare_per_class.png in ``out``, for the runs that have the
    files they need (a figure with nothing to draw is not written)."""
    out.mkdir(parents=True, exist_ok=True)
    legend = comparison.legend()
    written = []
    figures = (
        ("compare_curves.png", plot_compared_curves, comparison.curves()),
        ("compare_per_class.png", plot_per_class_change, comparison.per_class()),
    )
    for name, plot, data in figures:
        if len(data) == 0 or (isinstance(data, pd.DataFrame) and data.shape[1] < 2):
            continue
        write_png(plot(data, legend), out / name)
        written.append(out / name)
    return written


def report(comparison: Comparison) -> str:
    """What the command prints: the runs, the settings that differ, the overrides, the final
    metrics side by side."""
    c = comparison
    lines = [f"Comparing {len(c.runs)} runs:"]
    lines += [f"  {label}: {run.path}" for label, run in zip(c.labels, c.runs)]
    diff = c.config_diff()
    compared = sum(bool(config) for config in c.configs)
    lines += [
        "",
        f"Settings that differ ({len(diff)}, from .hydra/config.yaml of {compared} runs):",
    ]
    lines.append(diff.rename_axis(None).to_string() if len(diff) else "  none: the same settings")
    own, shared = c.own_overrides()
    lines += ["", "Overrides:"]
    lines += [f"  {label}: {' '.join(o) or '(none of its own)'}" for label, o in zip(c.labels, own)]
    if shared:
        lines.append(f"  all: {' '.join(shared)}")
    lines += ["", "Final metrics:", c.metrics().rename_axis(None).to_string()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "runs", nargs="+", help="run folders, a sweep folder, 'latest' or 'best' (two or more)"
    )
    parser.add_argument(
        "--out", default="comparisons", help="folder for the two figures (default comparisons/)"
    )
    parser.add_argument("--roots", nargs="+", default=list(RUN_ROOTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise ConfigError(
                f"--out {args.out} is a file; give a folder (it is made when missing)."
            )
        comparison = Comparison.of(runs_named(args.runs, args.roots))
        print(report(comparison))
        written = write_figures(comparison, Path(args.out))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for note in comparison.notes:
        print(f"note: {note}", file=sys.stderr)
    print("\n".join(["", "wrote:", *(f"  {path}" for path in written)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
