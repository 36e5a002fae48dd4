"""The ViT workbench's library: everything train.py, inference.py and app.py need.

Rooms, one concern each; imports point down this list, never up:

    errors.py, fileio.py, distributed.py   the ground floor: one-sentence errors, atomic writes,
                                           the processes of a torchrun job
    model/      the Vision Transformer, built from a config, and pretrained weights
    data/       datasets (embedded, torchvision, folder, Kaggle), splits, caches, batches
    tracking/   copies of a run folder's records in W&B and MLflow
    runs/       the run folder: its layout, writer, catalogue, lock, resume and requeue
    report/     test metrics, figures, and summaries of sweeps
    training/   one run: settings checks, setup, the fit and its loops, checkpoints, stopping
    predict/    a saved run put to use: predictions, its report again, ONNX and timm exports
    web/        the page (app.py): runs, figures, predictions, and the Train tab
"""
