"""A saved run's report written again (``inference.py --report``): its test split evaluated with
its best weights, and its per-class metrics and figures from that pass."""

from __future__ import annotations

from dataclasses import replace

import torch
from omegaconf import OmegaConf

from src.contract import RunPaths
from src.data import load_dataset, make_batches
from src.errors import ConfigError
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
    loss and accuracy, computed in fp32 as training's final test was (summary.json's)."""
    paths = RunPaths(run.path)
    config_path = paths.hydra_config
    if not config_path.is_file():
        raise ConfigError(
            f"{run.path}: there is no .hydra/config.yaml to say which data the run used."
        )
    cfg = OmegaConf.load(config_path)
    # Normalised as the run was trained (model.json: the pretrained weights' mean/std, if any).
    data = replace(load_dataset(cfg.dataset), mean=run.card["mean"], std=run.card["std"])
    model = load_model(run, device)
    folder = RunFolder.reopen(run.path)
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
        stats = evaluate(model, batches, device, keep_predictions=True)
    try:
        fields = write_report(folder, model, data, stats.predictions, device)
        folder.save_figure(
            "curves", plot_curves(folder.frame(), title=f"{cfg.model.name} on {data.name}")
        )
        folder.update_summary(**fields)
    finally:
        folder.close()
    return sorted(str(p) for p in paths.plots.glob("*.png")), stats
