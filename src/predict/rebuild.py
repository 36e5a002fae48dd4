"""A saved run's report written again (``inference.py --report``): its test split evaluated with
its best weights, and its per-class metrics and figures from that pass."""

from __future__ import annotations

from dataclasses import replace

import torch
from omegaconf import DictConfig, OmegaConf

from src.contract import RESTORE, RunPaths
from src.data import load_dataset, make_batches
from src.errors import ConfigError, DamagedFile
from src.fileio import read_yaml
from src.model.views import card_test_views
from src.report.plots import plot_curves
from src.report.writer import write_report
from src.runs.catalogue import Run, load_model
from src.runs.folder import RunFolder
from src.training.device import exact_fp32
from src.training.loops import EpochStats, evaluate


def rebuild_report(run: Run, device: torch.device) -> tuple[list[str], EpochStats]:
    """Writes a saved run's per-class metrics and figures again, from its folder and its data.

    The run's own config (.hydra/config.yaml) says which data and split it used; the model comes
    from model.json and best.safetensors. Returns the paths of the figures written, and the test
    loss and accuracy, computed in fp32 as training's final test was (summary.json's).
    Every file it reads is read before it writes one: a damaged file leaves the folder as it was."""
    paths = RunPaths(run.path)
    cfg = run_config(run)
    model = load_model(run, device)
    folder = RunFolder.reopen(run.path)  # summary.json and metrics.csv, read first
    # Normalised as the run was trained (model.json: the pretrained weights' mean/std, if any).
    data = replace(load_dataset(cfg.dataset), mean=run.card["mean"], std=run.card["std"])
    batches = make_batches(
        data.test,
        cfg.trainer.eval_batch_size,
        image_size=model.patch_embed.image_size,
        mean=data.mean,
        std=data.std,
        device=device,
        sharded=False,
    )
    with exact_fp32():
        stats = evaluate(card_test_views(model, run.card), batches, device, keep_predictions=True)
    try:
        fields = write_report(folder, model, data, stats.predictions, device)
        folder.save_figure(
            "curves", plot_curves(folder.frame(), title=f"{cfg.model.name} on {data.name}")
        )
        folder.update_summary(**fields)
    finally:
        folder.close()
    return sorted(str(p) for p in paths.plots.glob("*.png")), stats


# What --report and the page's test images read of the run's config.
CONFIG_KEYS = ("dataset.name", "dataset.source", "model.name", "trainer.eval_batch_size")
_NONE = object()


def run_config(run: Run) -> DictConfig:
    """The run's .hydra/config.yaml, which says the data and split it used; DamagedFile when it
    is not a whole train.py config."""
    path = RunPaths(run.path).hydra_config
    if not path.is_file():
        raise ConfigError(
            f"{run.path}: there is no .hydra/config.yaml to say which data the run used."
        )
    fix = f"{RESTORE} (it says which data the run used)"
    cfg = read_yaml(path, fix)
    missing = [
        key
        for key in CONFIG_KEYS
        if not isinstance(cfg, DictConfig) or OmegaConf.select(cfg, key, default=_NONE) is _NONE
    ]
    if missing:
        raise DamagedFile(path, f"it has no {missing[0]}", fix)
    return cfg
