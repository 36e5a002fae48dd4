"""Kaggle datasets: fetched with kagglehub (into its cache), then read as an image folder."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from src.data.core import Dataset
from src.data.folder import read_image_folder
from src.errors import ConfigError, last_line

log = logging.getLogger(__name__)


def load_kaggle_dataset(cfg: DictConfig, listing_only: bool = False) -> Dataset:
    if not cfg.handle:
        raise ConfigError(
            "dataset.handle is not set; give the Kaggle dataset as owner/name, "
            "e.g. dataset.handle=balabaskar/tom-and-jerry-image-classification."
        )
    folder = download(cfg) / (cfg.subdir or "")
    if not folder.is_dir():
        raise ConfigError(
            f"dataset.subdir={cfg.subdir} is not a folder in the download of {cfg.handle} "
            f"({folder.parent}); set it to the folder that holds the class folders."
        )
    return read_image_folder(folder, cfg, listing_only)


def download(cfg: DictConfig) -> Path:
    """The dataset's folder in kagglehub's cache (downloaded only when it is not there yet)."""
    import kagglehub

    try:
        path = kagglehub.dataset_download(cfg.handle)
    except Exception as err:  # no network, no credentials, no such dataset: all end the same way
        reason = last_line(err)
        raise ConfigError(
            f"dataset={cfg.name}: could not fetch {cfg.handle} from Kaggle ({reason}); check the "
            "network and your Kaggle credentials (~/.kaggle/kaggle.json or KAGGLE_USERNAME and "
            "KAGGLE_KEY), or, with a copy already downloaded, run with dataset=folder "
            f"dataset.root=<the copy>/{cfg.subdir or ''}."
        ) from None
    log.info("kaggle dataset %s is in %s", cfg.handle, path)
    return Path(path)
