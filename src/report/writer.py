"""What the model learned: per-class test metrics and ViT figures, written into a run folder.

Called at the end of training, and by ``inference.py --report`` for any saved run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from src.data import AnySplit, Dataset, FileSplit, make_batches, resize
from src.data.files import ImageFiles, decode_all
from src.model.vit import VisionTransformer
from src.report.metrics import (
    Predictions,
    class_token_attention,
    confusion_matrix,
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
POSITION_KINDS = {"learned": "learned", "sincos": "fixed 2-D sin-cos"}  # as the figures say it

ImageLookup = Callable[[list[int]], torch.Tensor]


def write_report(
    run: RunFolder,
    model: VisionTransformer,
    data: Dataset,
    predictions: Predictions,
    device: torch.device,
    visualize: bool = True,
) -> dict:
    """Writes metrics_per_class.csv, confusion_matrix.csv and the figures from the test split's
    ``predictions`` (the whole split, in its order); returns the fields for summary.json."""
    summary = _write_metrics(run, predictions, data.class_names)
    if visualize:
        shown = image_lookup(data.test, model.patch_embed.image_size)
        _prediction_figures(run, predictions, data.class_names, shown)
        _attention_figure(run, model, data, predictions, device, shown)
        _position_figures(run, model)
        first = predictions.labels[0]
        run.save_figure(
            "patches",
            plot_patches(
                shown([0])[0],
                model.patch_embed.patch_size,
                f"How a ViT reads an image: {data.class_names[first]}",
            ),
        )
    return summary


def _write_metrics(run: RunFolder, predictions: Predictions, names: list[str]) -> dict:
    """The per-class table and the confusion matrix (tables, figure, TensorBoard scalars);
    returns the macro and weighted averages for summary.json."""
    labels, predicted = predictions.labels.numpy(), predictions.predicted.numpy()
    table = per_class_metrics(labels, predicted, names)
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

    matrix = confusion_matrix(labels, predicted, len(names))
    table = pd.DataFrame(matrix, index=names, columns=names).rename_axis("true \\ predicted")
    run.write_table("confusion_matrix.csv", table.reset_index())
    run.save_figure("confusion_matrix", plot_confusion_matrix(matrix, names))
    return summary


def _prediction_figures(
    run: RunFolder, predictions: Predictions, names: list[str], shown: ImageLookup
) -> None:
    """The first test images with their predictions, and the most confident mistakes."""
    labels, predicted, confidence = (
        predictions.labels,
        predictions.predicted,
        predictions.confidence,
    )
    first = list(range(min(GRID_IMAGES, len(labels))))
    wrong = torch.nonzero(predicted != labels).flatten()
    worst = wrong[confidence[wrong].argsort(descending=True)][:GRID_IMAGES].tolist()
    grids = [
        ("predictions", first, f"Test images: true and predicted classes ({len(first)} shown)"),
        (
            "mistakes",
            worst,
            f"The most confident mistakes ({len(wrong)} of {len(labels)} test images wrong)",
        ),
    ]
    for name, picked, title in grids:
        figure = plot_prediction_grid(
            shown(picked),
            [names[i] for i in labels[picked]],
            [names[i] for i in predicted[picked]],
            confidence[picked].tolist(),
            title,
        )
        run.save_figure(name, figure)


def _attention_figure(
    run: RunFolder,
    model: VisionTransformer,
    data: Dataset,
    predictions: Predictions,
    device: torch.device,
    shown: ImageLookup,
) -> None:
    """Where the class token looks, layer by layer and rolled out, in the first test images."""
    picked = list(range(min(ATTENTION_IMAGES, len(predictions.labels))))
    batches = make_batches(
        data.test.subset(np.array(picked)),
        len(picked),
        image_size=model.patch_embed.image_size,
        mean=data.mean,
        std=data.std,
        device=device,
        sharded=False,
    )
    with torch.no_grad():
        layers, rollout = class_token_attention(model, next(iter(batches))[0])
    names, labels, predicted = data.class_names, predictions.labels, predictions.predicted
    titles = [f"true {names[labels[i]]}, pred {names[predicted[i]]}" for i in picked]
    run.save_figure("attention", plot_attention_layers(shown(picked), layers, rollout, titles))


def _position_figures(run: RunFolder, model: VisionTransformer) -> None:
    """How alike the patch positions' embeddings are, and their norms, on the patch grid; titled
    with the kind of embedding the model was built with (a frozen backbone's learned positions
    are still learned ones)."""
    grid = model.patch_embed.grid_size
    pos_embed = model.pos_embed.detach().cpu()
    kind = POSITION_KINDS[model.pos_embed_kind]
    similarity = position_similarity(pos_embed)
    norms = pos_embed[0, 1:].float().norm(dim=-1)
    run.save_figure("position_similarity", plot_position_similarity(similarity, grid, kind))
    run.save_figure("position_norms", plot_position_norms(norms, grid, kind))


def image_lookup(split: AnySplit, image_size: int) -> ImageLookup:
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
