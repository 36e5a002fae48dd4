"""Weights & Biases: one W&B run per run folder, its files in the run folder's wandb/.

Without an API key it runs offline (no account, no network); upload later with
``wandb sync outputs/DATE/TIME/wandb/offline-run-*``. A resumed run reopens the same W&B run id.

Each epoch's row is committed as it is logged: W&B otherwise keeps a step's row open until a later
step arrives, and a run killed (``kill -9``) after an epoch lost that epoch's row, which its resume
(from that epoch's checkpoint) never logs again. A committed step takes nothing more, so the
end-of-run figures and tables go to the run's summary, not to the last epoch's row.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from src.contract import Status


class WandbLogger:
    name = "wandb"

    def __init__(self, settings: dict):
        self.settings = settings
        self.run = None

    def start(
        self, run_dir: Path, name: str, group: str | None, config: dict, previous: dict
    ) -> dict:
        import wandb

        mode = choose_mode(self.settings.get("mode"))
        self.run = wandb.init(
            project=self.settings.get("project"),
            entity=self.settings.get("entity"),
            name=name,
            group=group,
            tags=list(self.settings.get("tags") or []),
            job_type="train",
            config=config,
            allow_val_change=True,  # a resumed run may train for more epochs
            dir=str(run_dir),
            mode=mode,
            id=previous.get("id"),
            resume="allow" if previous.get("id") else None,
            reinit="create_new",  # the jobs of a sweep run one after another in one process
        )
        record = {"id": self.run.id, "project": self.run.project, "mode": mode}
        if mode == "online":
            record["url"] = self.run.url
        return record

    def log_metrics(self, metrics: dict[str, float], step: int | None) -> None:
        self.run.log(dict(metrics), step=step, commit=True)

    def log_summary(self, values: dict[str, float], step: int | None) -> None:
        self.run.summary.update(values)

    def log_figure(self, name: str, path: Path, step: int | None) -> None:
        import wandb

        self.run.summary[f"plots/{name}"] = wandb.Image(str(path))

    def log_table(self, name: str, table: pd.DataFrame, path: Path, step: int | None) -> None:
        import wandb

        self.run.summary[Path(name).stem] = wandb.Table(dataframe=table)

    def log_model(self, paths: list[Path]) -> None:
        if not self.settings.get("log_weights"):
            return
        import wandb

        artifact = wandb.Artifact(f"model-{self.run.id}", type="model")
        for path in paths:
            artifact.add_file(str(path))
        self.run.log_artifact(artifact, aliases=["best"])

    def finish(self, status: str) -> None:
        if self.run is not None:
            run, self.run = self.run, None
            run.finish(exit_code=0 if status == Status.COMPLETED else 1)


def choose_mode(setting: str | None) -> str:
    """logger.wandb.mode if set, else WANDB_MODE, else online only when an API key is found."""
    if setting:
        return setting
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if has_api_key() else "offline"


def has_api_key() -> bool:
    """WANDB_API_KEY, or a key that `wandb login` saved in ~/.netrc (or $NETRC)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False
