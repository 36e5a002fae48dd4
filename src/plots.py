"""Figures written into a run's plots/ folder."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, and safe on a headless machine

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def plot_curves(metrics: pd.DataFrame, title: str = "") -> Figure:
    """Loss, accuracy and learning rate per epoch, side by side."""
    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(15, 4.2))
    epochs = metrics["epoch"]

    ax_loss.plot(epochs, metrics["train_loss"], label="train")
    ax_loss.plot(epochs, metrics["val_loss"], label="validation")
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")

    ax_acc.plot(epochs, metrics["train_acc"] * 100, label="train")
    ax_acc.plot(epochs, metrics["val_acc"] * 100, label="validation")
    best = metrics["val_acc"].idxmax()
    ax_acc.scatter(
        [epochs[best]],
        [metrics["val_acc"][best] * 100],
        color="C1",
        zorder=3,
        label=f"best val {metrics['val_acc'][best]:.2%} (epoch {epochs[best]})",
    )
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy (%)")

    ax_lr.plot(epochs, metrics["lr"], color="C2")
    ax_lr.set(title="Learning rate (end of epoch)", xlabel="epoch", ylabel="lr")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))

    for ax in (ax_loss, ax_acc):
        ax.legend()
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_attention_overlay(
    image, heatmap, classes: list[str], probabilities: list[float], title: str = ""
) -> Figure:
    """The image, the image under its attention map, and the top-k probabilities as bars.

    ``image`` is (H, W) or (H, W, 3) in [0, 1]; ``heatmap`` is (h, w), any scale.
    """
    fig, (ax_image, ax_overlay, ax_bars) = plt.subplots(
        1, 3, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1, 1, 1.3]}
    )
    cmap = "gray" if image.ndim == 2 else None
    # Stretch the patch grid over the image's own extent (pixel centres sit at 0 .. size-1).
    extent = (-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5)
    ax_image.imshow(image, cmap=cmap, vmin=0, vmax=1)
    ax_image.set_title("input")
    ax_overlay.imshow(image, cmap=cmap, vmin=0, vmax=1)
    ax_overlay.imshow(heatmap, cmap="inferno", alpha=0.6, extent=extent, interpolation="bilinear")
    ax_overlay.set_title("attention rollout (class token)")
    for ax in (ax_image, ax_overlay):
        ax.axis("off")
    positions = range(len(classes))[::-1]
    ax_bars.barh(positions, [p * 100 for p in probabilities], color="C0")
    ax_bars.set_yticks(list(positions), classes)
    ax_bars.set(xlim=(0, 100), xlabel="probability (%)", title="top predictions")
    for y, p in zip(positions, probabilities):
        inside = p > 0.8  # a long bar carries its label inside, in white
        ax_bars.text(p * 100 + (-1 if inside else 1), y, f"{p:.1%}", va="center",
                     ha="right" if inside else "left", color="white" if inside else "black")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
