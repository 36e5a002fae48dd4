"""A Hydra sweeper for Optuna studies that outlive a process and are shared by many processes.

See docs: guide/sweeps.md. Hydra finds it because it lives in the ``hydra_plugins`` package beside
train.py; it is chosen by configs/hydra/sweeper/optuna.yaml, which +hparams_search=optuna uses.
"""
