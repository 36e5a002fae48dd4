"""Experiment tracking: copies of the run folder in Weights & Biases and MLflow.

    python train.py logger=wandb  # or mlflow, none, or a list: 'logger=[tensorboard,wandb]'

The run folder stays the source of truth. ``RunFolder`` (src/runs/folder.py) calls one ``Tracker``
from its own methods, so what it writes (the resolved config, each metrics.csv row, the
summary's numbers, the figures and tables, optionally the best weights) is copied to every backend
chosen in ``cfg.logger``; the training code never calls a logger. TensorBoard stays RunFolder's
own; ``Tracker.tensorboard`` says whether it is wanted. One small module per backend:
``wandb_logger.py`` and ``mlflow_logger.py``.
"""

from src.tracking.tracker import Tracker, from_config

__all__ = ["Tracker", "from_config"]
