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
