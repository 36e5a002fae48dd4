"""hydra-submitit-launcher's SLURM and local launchers with this project's checks (docs:
guide/clusters.md). Hydra finds them because they live in the ``hydra_plugins`` package beside
train.py; configs/hydra/launcher/submitit_*.yaml name them.
"""
