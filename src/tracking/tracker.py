"""The loggers chosen in ``cfg.logger``, behind one object that ``RunFolder`` calls.

``from_config`` checks the choice before any training work (a missing package is one sentence
naming the pip command); ``Tracker`` sends each copy to every backend, and a backend that fails
is reported in one line and left out for the rest of the run, which goes on.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from src.contract import Status
from src.errors import ConfigError

log = logging.getLogger(__name__)

INSTALL = "pip install -r requirements-tracking.txt"
# logger option -> (the packages it imports, the module and class that copy a run to it)
BACKENDS = {
    "wandb": (("wandb",), "src.tracking.wandb_logger", "WandbLogger"),
    "mlflow": (("mlflow", "sqlalchemy", "alembic"), "src.tracking.mlflow_logger", "MlflowLogger"),
}
OPTIONS = ("tensorboard", *BACKENDS)


class Backend(Protocol):
    """What a logger module provides; ``Tracker`` catches anything these raise."""

    name: str

    def start(
        self, run_dir: Path, name: str, group: str | None, config: dict, previous: dict
    ) -> dict: ...  # returns the ids to keep in summary.json
    def log_metrics(self, metrics: dict[str, float], step: int | None) -> None: ...
    def log_summary(self, values: dict[str, float], step: int | None) -> None: ...
    def log_figure(self, name: str, path: Path, step: int | None) -> None: ...
    def log_table(self, name: str, table: pd.DataFrame, path: Path, step: int | None) -> None: ...
    def log_model(self, paths: list[Path]) -> None: ...
    def finish(self, status: str) -> None: ...


class Tracker:
    """Fans each call out to the backends; with none it does nothing (what ranks above 0 get)."""

    def __init__(
        self,
        backends: list[Backend] | tuple = (),
        tensorboard: bool = True,
        config: dict | None = None,
        name: str = "",
        group: str | None = None,
    ):
        self.backends = list(backends)
        self.tensorboard = tensorboard  # RunFolder keeps writing tensorboard/ itself when true
        self.config = config or {}
        self.name, self.group = name, group
        self.records: dict[
            str, dict
        ] = {}  # per backend: its run's ids, or the error that stopped it
        self.step: int | None = None  # the last epoch logged: figures and tables go beside it

    def start(self, run_dir: Path, previous: dict[str, dict]) -> None:
        """Opens each backend's run, or reopens the one ``previous`` (summary.json) names."""
        for backend in self.backends:
            before = {k: v for k, v in (previous.get(backend.name) or {}).items() if k != "error"}
            self.records[backend.name] = before  # kept if it fails now: the next resume tries again
            record = self._call(
                backend, "start", run_dir, self.name, self.group, self.config, before
            )
            if record is not None:
                self.records[backend.name] = record

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.step = step
        self._all("log_metrics", metrics, step)

    def log_summary(self, values: dict[str, float]) -> None:
        self._all("log_summary", values, self.step)

    def log_figure(self, name: str, path: Path) -> None:
        self._all("log_figure", name, path, self.step)

    def log_table(self, name: str, table: pd.DataFrame, path: Path) -> None:
        self._all("log_table", name, table, path, self.step)

    def log_model(self, paths: list[Path]) -> None:
        self._all("log_model", paths)

    def finish(self, status: str) -> None:
        self._all("finish", status)

    def summary(self, previous: dict | None = None) -> dict:
        """summary.json's "tracking": the ids a resumed run reattaches to (earlier ones kept)."""
        return {**(previous or {}), **self.records}

    def _all(self, method: str, *args: Any) -> None:
        for backend in self.backends:
            self._call(backend, method, *args)

    def _call(self, backend: Backend, method: str, *args: Any) -> Any:
        if "error" in self.records.get(backend.name, {}):
            return None
        try:
            return getattr(backend, method)(*args)
        except (
            Exception
        ) as err:  # a copy must never cost the run: say so once, then go on without it
            lines = str(err).strip().splitlines()
            reason = f"{type(err).__name__}: {lines[0][:200]}" if lines else type(err).__name__
            log.warning(
                "%s logging failed (%s); the run goes on without it; the run folder has everything",
                backend.name,
                reason,
            )
            self.records[backend.name] = {**self.records.get(backend.name, {}), "error": reason}
            if method != "finish":
                # release what it holds (W&B's run), if it can; its failure was reported above
                with contextlib.suppress(Exception):
                    backend.finish(Status.FAILED)
            return None


def from_config(cfg: DictConfig, run_dir: str | Path) -> Tracker:
    """The tracker ``cfg.logger`` asks for, checked now: a missing package stops the run here."""
    logger = cfg.get("logger")  # ~logger (the group deleted) leaves no key: no logger, like none
    chosen = OmegaConf.to_container(logger, resolve=True) if logger is not None else {}
    backends = []
    for option, settings in chosen.items():
        if option not in OPTIONS:
            raise ConfigError(
                f"logger.{option} is not a logger; choose from {', '.join(OPTIONS)} or none, "
                "or a list such as logger=[tensorboard,wandb]."
            )
        if option == "tensorboard":
            continue
        packages, module, cls = BACKENDS[option]
        for package in packages:
            if importlib.util.find_spec(package) is None:
                raise ConfigError(f"logger={option} needs the {package} package: {INSTALL}")
        backends.append(getattr(importlib.import_module(module), cls)(settings or {}))
    return Tracker(
        backends,
        tensorboard="tensorboard" in chosen,
        config=OmegaConf.to_container(cfg, resolve=True),
        name=shown_path(run_dir),
        group=sweep_folder(),
    )


def shown_path(path: str | Path) -> str:
    """A folder as the user sees it: relative to where they run, when it is under there."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def sweep_folder() -> str | None:
    """The sweep folder of a --multirun job (its jobs are grouped by it), else None."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return shown_path(HydraConfig.get().sweep.dir)
    return None
