"""One training run, from its settings to its report.

    run.py         the entry point: train(cfg, run_dir), and run_job(cfg) inside a Hydra job
    checks.py      every setting checked before any data is read
    ranges.py      the range of every number, for train.py's checks and the web page's allowlist
    job.py         the Hydra job around a run: resolvers, overrides, resuming, continuing
    setup.py       device, data, model, optimizer and schedule, built from the config
    fit.py         epoch after epoch, then one test of the best weights
    loops.py       the training and evaluation loops
    device.py      device, precision and random state
    optim.py       parameter groups and learning-rate schedules
    ema.py         the weights' moving average
    checkpoint.py  what checkpoints/last.pt holds, saved and restored by one object
    stopping.py    stopping cleanly on Ctrl-C, SIGTERM or SIGUSR2
    trials.py      a trial of an Optuna study, reporting to it
    gpu_check.py   what this machine will do (python -m src.training.gpu_check)

Where files go is the runs room's business (src/runs/).
"""
