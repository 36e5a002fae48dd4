"""What the model learned: per-class test metrics and ViT figures, written into a run folder.

Called at the end of training, and by ``inference.py --report`` for any saved run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import confusion_matrix

from src.data import AnySplit, Dataset, FileSplit, make_batches, resize
from src.data.files import ImageFiles, decode_all
from src.model.vit import VisionTransformer
from src.report.metrics import (
    Predictions,
    class_token_attention,
    per_class_metrics,
    position_similarity,
)
from src.report.plots import (
    plot_attention_layers,
    plot_confusion_matrix,
    plot_patches,
    plot_position_norms,
    plot_position_similarity,
    plot_prediction_grid,
)
from src.runs.folder import RunFolder

GRID_IMAGES = 16  # test images in the prediction and mistake grids
ATTENTION_IMAGES = 4


def write_report(
    run: RunFolder,
    model: VisionTransformer,
    data: Dataset,
    predictions: Predictions,
    device: torch.device,
    visualize: bool = True,
) -> dict:
    """Writes metrics_per_class.csv and the figures from the test split's ``predictions`` (the
    whole split, in its order); returns the fields for summary.json."""
    image_size = model.patch_embed.image_size
    labels, predicted, confidence = (
        predictions.labels,
        predictions.predicted,
        predictions.confidence,
    )
    names = data.class_names

    table = per_class_metrics(labels.numpy(), predicted.numpy(), names)
    run.write_table("metrics_per_class.csv", table)
    averages = table.set_index("class").loc[["macro avg", "weighted avg"]]
    for _, row in table.iloc[: len(names)].iterrows():
        run.tensorboard.add_scalar(f"test_f1/{row['class']}", row["f1"], 0)
    summary = {
        f"test_{avg.split()[0]}_{metric}": float(averages.loc[avg, metric])
        for avg in averages.index
        for metric in ("precision", "recall", "f1")
    }
    for key, value in summary.items():
        run.tensorboard.add_scalar(f"test/{key.removeprefix('test_')}", value, 0)

    matrix = confusion_matrix(labels.numpy(), predicted.numpy(), labels=list(range(len(names))))
    run.write_table(
        "confusion_matrix.csv",
        pd.DataFrame(matrix, index=names, columns=names)
        .rename_axis("true \\ predicted")
        .reset_index(),
    )
    run.save_figure("confusion_matrix", plot_confusion_matrix(matrix, names))
    if not visualize:
        return summary

    shown = image_lookup(data.test, image_size)
    first = list(range(min(GRID_IMAGES, len(labels))))
    run.save_figure(
        "predictions",
        plot_prediction_grid(
            shown(first),
            [names[i] for i in labels[first]],
            [names[i] for i in predicted[first]],
            confidence[first].tolist(),
            f"Test images: true and predicted classes ({len(first)} shown)",
        ),
    )
    wrong = torch.nonzero(predicted != labels).flatten()
    worst = wrong[confidence[wrong].argsort(descending=True)][:GRID_IMAGES].tolist()
    run.save_figure(
        "mistakes",
        plot_prediction_grid(
            shown(worst),
            [names[i] for i in labels[worst]],
            [names[i] for i in predicted[worst]],
            confidence[worst].tolist(),
            f"The most confident mistakes ({len(wrong)} of {len(labels)} test images wrong)",
        ),
    )

    picked = first[:ATTENTION_IMAGES]
    with torch.no_grad():
        x = next(
            iter(
                make_batches(
                    data.test.subset(np.array(picked)),
                    len(picked),
                    image_size=image_size,
                    mean=data.mean,
                    std=data.std,
                    device=device,
                    sharded=False,
                )
            )
        )[0]
        layers, rollout = class_token_attention(model, x)
    titles = [f"true {names[labels[i]]}, pred {names[predicted[i]]}" for i in picked]
    run.save_figure("attention", plot_attention_layers(shown(picked), layers, rollout, titles))

    grid = model.patch_embed.grid_size
    pos_embed = model.pos_embed.detach().cpu()
    kind = "learned" if model.pos_embed.requires_grad else "fixed 2-D sin-cos"
    similarity = position_similarity(pos_embed)
    norms = pos_embed[0, 1:].float().norm(dim=-1)
    run.save_figure("position_similarity", plot_position_similarity(similarity, grid, kind))
    run.save_figure("position_norms", plot_position_norms(norms, grid, kind))
    run.save_figure(
        "patches",
        plot_patches(
            shown(first[:1])[0],
            model.patch_embed.patch_size,
            f"How a ViT reads an image: {names[labels[0]]}",
        ),
    )
    return summary


def image_lookup(split: AnySplit, image_size: int):
    """A function from positions in ``split`` to those images as the model sees them, in [0, 1]."""

    def images(indices: list[int]) -> torch.Tensor:
        if not indices:
            return torch.empty(0)
        if isinstance(split, FileSplit):
            files = ImageFiles.of(split.subset(np.array(indices)))
            decoded = decode_all(files, num_workers=0, desc="")
            return resize(decoded.images, image_size)
        return resize(split.images[torch.tensor(indices)], image_size)

    return images
