"""What a test pass says about the model: each image's prediction, the per-class metrics, and the
attention and position-embedding numbers behind the ViT figures."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from src.model.vit import VisionTransformer, attention_rollout


@dataclass
class Predictions:
    """Per test image, in the split's order: its label, the predicted class and its probability."""

    labels: torch.Tensor  # int64 (N,)
    predicted: torch.Tensor  # int64 (N,)
    confidence: torch.Tensor  # float (N,)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) counts: row = the true class, column = the predicted one."""
    pairs = np.asarray(labels, dtype=np.int64) * classes + np.asarray(predicted, dtype=np.int64)
    return np.bincount(pairs, minlength=classes * classes).reshape(classes, classes)


def per_class_metrics(
    labels: np.ndarray, predicted: np.ndarray, class_names: list[str]
) -> pd.DataFrame:
    """Precision, recall, F1 and support per class, then the macro and weighted averages: the
    numbers of scikit-learn's ``precision_recall_fscore_support(zero_division=0)``, worked out
    from the confusion matrix here, because importing scikit-learn costs every run about 1.3 s
    (tests/test_report.py checks that the two agree)."""
    matrix = confusion_matrix(labels, predicted, len(class_names))
    hits, support, times_predicted = np.diag(matrix), matrix.sum(axis=1), matrix.sum(axis=0)

    def ratio(part: np.ndarray, whole: np.ndarray) -> np.ndarray:  # 0 where whole is 0
        return np.divide(part, whole, out=np.zeros(len(part)), where=whole > 0)

    scores = {
        "precision": ratio(hits, times_predicted),
        "recall": ratio(hits, support),
        "f1": ratio(2 * hits, support + times_predicted),
    }
    table = pd.DataFrame({"class": class_names, **scores, "support": support})
    for average, weights in (("macro", None), ("weighted", support)):
        means = [np.average(values, weights=weights) for values in scores.values()]
        table.loc[len(table)] = [f"{average} avg", *means, len(labels)]
    table["support"] = table["support"].astype(int)
    return table


def position_similarity(pos_embed: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between the patch positions' embeddings: (N, N), 1 on the diagonal."""
    patches = F.normalize(pos_embed[0, 1:].float(), dim=-1)  # (N, D), without the class token's
    return patches @ patches.T


def class_token_attention(
    model: VisionTransformer, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per layer, the class token's attention to each patch (heads averaged): (B, depth, grid,
    grid); and the attention rollout from the class token: (B, grid, grid). With average pooling,
    the patch tokens' mean attention stands in for the class token's (what the head reads)."""
    maps = model.attention_maps(x)
    grid = model.patch_embed.grid_size
    layers = torch.stack([model.readout_attention(a.mean(dim=1)) for a in maps], dim=1)
    rollout = model.readout_attention(attention_rollout(maps))
    return layers.reshape(len(x), -1, grid, grid).cpu(), rollout.reshape(len(x), grid, grid).cpu()
