"""Train a Vision Transformer from scratch.

    python train.py                                   # embedded digits, about a minute on a CPU
    python train.py model=vit_tiny trainer.epochs=10 optimizer.lr=5e-4
    python train.py --multirun model.depth=2,4 optimizer.lr=1e-3,5e-4
    python train.py resume=outputs/2026-11-23/10-04-55 [trainer.epochs=120]

compose config -> check it -> build data, model, optimizer, schedule (or restore them from the
run's checkpoint) -> fit (best epoch chosen on validation) -> test the best weights -> write the
run folder. The steps live in src/training/ (run.py, setup.py, fit.py).
"""

import sys

import hydra
from omegaconf import DictConfig

from src.errors import ConfigError
from src.training.job import share_import_path
from src.training.ranges import refuse_long_numbers
from src.training.run import run_job


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> float:
    """One run into Hydra's run folder; returns its best validation accuracy (for sweeps)."""
    return run_job(cfg)


if __name__ == "__main__":
    share_import_path()  # for submitit's jobs when train.py is run from another folder
    try:
        refuse_long_numbers(sys.argv[1:])  # Hydra fails on a number of over 4,300 digits
    except ConfigError as err:
        sys.exit(str(err))
    main()
