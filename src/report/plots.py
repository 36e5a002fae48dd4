"""Figures written into a run's plots/ folder."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, and safe on a headless machine

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from src.contract import FIGURE_DPI  # noqa: E402
from src.fileio import atomic_write  # noqa: E402


def close_figure(fig: Figure) -> None:
    plt.close(fig)


def write_png(fig: Figure, target: Path, dpi: int = FIGURE_DPI) -> None:
    """``fig`` as a PNG at ``target``, written whole or not at all, then closed."""
    atomic_write(target, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    close_figure(fig)


def validated(metrics: pd.DataFrame) -> pd.DataFrame:
    """The epochs that were validated: with trainer.val_every above 1, the others have empty
    val_* cells, which a line would show as gaps."""
    if "val_acc" not in metrics:
        return metrics
    return metrics[metrics["val_acc"].notna()]


def plot_curves(metrics: pd.DataFrame, title: str = "") -> Figure:
    """Loss, accuracy and learning rate per epoch, side by side; then validation accuracy against
    the run's time, where metrics.csv has it (``run_seconds``: runs before it have three)."""
    timed = "run_seconds" in metrics and metrics["run_seconds"].notna().any()
    fig, axes = plt.subplots(1, 4 if timed else 3, figsize=(20 if timed else 15, 4.2))
    ax_loss, ax_acc, ax_lr = axes[:3]
    epochs = metrics["epoch"]
    dots = {"marker": "o", "markersize": 4} if len(metrics) <= 5 else {}  # a short run's points

    _plot_train_and_validation(ax_loss, metrics, "loss", 1)
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    _plot_train_and_validation(ax_acc, metrics, "acc", 100)
    best = metrics["val_acc"].idxmax()
    ax_acc.scatter(
        [epochs[best]],
        [metrics["val_acc"][best] * 100],
        color="C1",
        zorder=3,
        label=f"best val {metrics['val_acc'][best]:.2%} (epoch {epochs[best]})",
    )
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy (%)")
    _mark_image_sizes(ax_acc, metrics)

    ax_lr.plot(epochs, metrics["lr"], color="C2", **dots)
    ax_lr.set(title="Learning rate (end of epoch)", xlabel="epoch", ylabel="lr")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))

    for ax in (ax_loss, ax_acc):
        ax.legend()
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, however few
        if len(metrics) == 1:
            ax.set_xticks(list(epochs))
    if timed:
        _plot_accuracy_against_time(axes[3], metrics)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _mark_image_sizes(ax, metrics: pd.DataFrame) -> None:
    """Progressive resizing (``train_image_size``): a dotted line where the training size changes,
    labelled with the size, so a jump in the curves can be read against it."""
    if "train_image_size" not in metrics:
        return
    sizes = metrics["train_image_size"]
    for i in metrics.index[sizes.ne(sizes.shift())]:
        start = metrics["epoch"][i] - 0.5
        ax.axvline(start, color="0.6", linestyle=":", linewidth=1)
        label = f"{int(sizes[i])} px"
        ax.text(
            start + 0.2,
            0.98,
            label,
            transform=ax.get_xaxis_transform(),
            fontsize=7,
            va="top",
            color="0.35",
        )


def _plot_train_and_validation(ax, metrics: pd.DataFrame, name: str, scale: float) -> None:
    """train_<name> on every epoch; val_<name> (and the EMA's) on the validated ones, with dots
    when they are few or trainer.val_every skipped some."""
    val = validated(metrics)
    dots = {"marker": "o", "markersize": 4}
    ax.plot(
        metrics["epoch"],
        metrics[f"train_{name}"] * scale,
        label="train",
        **(dots if len(metrics) <= 5 else {}),
    )
    val_dots = dots if len(val) <= 5 or len(val) < len(metrics) else {}
    ax.plot(val["epoch"], val[f"val_{name}"] * scale, label="validation", **val_dots)
    if f"ema_val_{name}" in metrics:
        ema = val[f"ema_val_{name}"] * scale
        ax.plot(val["epoch"], ema, label="validation, EMA weights", color="C3", **val_dots)


def _plot_accuracy_against_time(ax, metrics: pd.DataFrame) -> None:
    """Validation accuracy at the end of each epoch, against the run's time then: from its
    start, data preparation included (minutes once the run is longer than ten)."""
    rows = validated(metrics[metrics["run_seconds"].notna()])
    minutes = rows["run_seconds"].max() > 600
    time = rows["run_seconds"] / (60 if minutes else 1)
    dots = {"marker": "o", "markersize": 4} if len(rows) <= 5 else {}
    ax.plot(time, rows["val_acc"] * 100, label="validation", **dots)
    if "ema_val_acc" in rows:
        ax.plot(
            time, rows["ema_val_acc"] * 100, label="validation, EMA weights", color="C3", **dots
        )
    ax.set(
        title="Accuracy against time",
        xlabel=f"time since the run started ({'min' if minutes else 's'})",
        ylabel="accuracy (%)",
        xlim=(0, None),
    )
    ax.legend()
    ax.grid(alpha=0.3)


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
        ax_bars.text(
            p * 100 + (-1 if inside else 1),
            y,
            f"{p:.1%}",
            va="center",
            ha="right" if inside else "left",
            color="white" if inside else "black",
        )
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _show(ax, image) -> None:
    """An image given as (C, H, W) or (H, W) in [0, 1], without axes."""
    image = image.permute(1, 2, 0) if image.ndim == 3 else image
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    ax.imshow(image.numpy(), cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_confusion_matrix(matrix, class_names: list[str], title: str = "") -> Figure:
    """Rows are true classes, columns predictions; colour is the row's share, text the count."""
    n = len(class_names)
    size = min(max(5.0, 0.45 * n + 2.5), 24.0)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    shares = matrix / matrix.sum(axis=1, keepdims=True).clip(min=1)
    shown = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if n <= 50:
        ax.set_xticks(range(n), class_names, rotation=60, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(n), class_names)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(
                        j,
                        i,
                        int(matrix[i, j]),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if shares[i, j] > 0.5 else "black",
                    )
    ax.set(
        xlabel="predicted class",
        ylabel="true class",
        title=title or f"Confusion matrix ({int(matrix.sum())} test images)",
    )
    fig.tight_layout()
    return fig


def plot_prediction_grid(
    images, true: list[str], predicted: list[str], confidence: list[float], title: str
) -> Figure:
    """Images with their true and predicted classes; mistakes are titled in red."""
    columns = min(8, max(1, len(images)))
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(
        rows, columns, figsize=(1.9 * columns, 2.2 * rows + 0.6), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, t, p, c in zip(axes.flat, images, true, predicted, confidence):
        _show(ax, image)
        ax.axis("on")
        wrong = t != p
        ax.set_title(
            f"true: {t}\npred: {p} ({c:.0%})", fontsize=8, color="red" if wrong else "black"
        )
        if wrong:
            for spine in ax.spines.values():
                spine.set(color="red", linewidth=2)
    if not len(images):
        axes[0, 0].text(0.5, 0.5, "none", ha="center", va="center", fontsize=14)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_attention_layers(images, layer_maps, rollout, titles: list[str]) -> Figure:
    """Per image (rows): the input, the class token's attention to the patches in each layer
    (heads averaged), and the attention rollout, each overlaid on the image."""
    count, depth = layer_maps.shape[:2]
    columns = depth + 2
    fig, axes = plt.subplots(
        count, columns, figsize=(1.7 * columns, 1.9 * count + 0.6), squeeze=False
    )
    for row in range(count):
        image = images[row]
        extent = (-0.5, image.shape[-1] - 0.5, image.shape[-2] - 0.5, -0.5)
        _show(axes[row, 0], image)
        axes[row, 0].set_title(titles[row], fontsize=8)
        maps = [*layer_maps[row], rollout[row]]
        names = [f"layer {i + 1}" for i in range(depth)] + ["rollout"]
        for col, (heat, name) in enumerate(zip(maps, names), start=1):
            ax = axes[row, col]
            _show(ax, image)
            ax.imshow(
                heat.numpy(), cmap="inferno", alpha=0.6, extent=extent, interpolation="nearest"
            )
            if row == 0:
                ax.set_title(name, fontsize=9)
    fig.suptitle("Class-token attention to the patches, per layer (heads averaged), and rollout")
    fig.tight_layout()
    return fig


def plot_position_similarity(similarity, grid: int, kind: str) -> Figure:
    """The ViT paper's Figure 7: for each patch position (arranged as the patch grid), the cosine
    similarity of its position embedding with every other position's. The colours span the
    similarities shown, not all of -1 to 1 (sin-cos positions of a small grid all lie between
    about 0.8 and 1, one colour on the full scale), and the colour bar says so."""
    fig, axes = plt.subplots(
        grid, grid, figsize=(min(1.0 * grid + 1.5, 16), min(1.0 * grid + 1.0, 15)), squeeze=False
    )
    low, high = float(similarity.min()), float(similarity.max())
    for index, ax in enumerate(axes.flat):
        shown = ax.imshow(
            similarity[index].reshape(grid, grid).numpy(), cmap="viridis", vmin=low, vmax=high
        )
        ax.set_xticks([])
        ax.set_yticks([])
        if index % grid == 0:
            ax.set_ylabel(f"{index // grid + 1}", rotation=0, labelpad=8, fontsize=8)
        if index < grid:
            ax.set_title(f"{index + 1}", fontsize=8)
    fig.supxlabel("input patch column")
    fig.supylabel("input patch row")
    fig.colorbar(
        shown,
        ax=axes,
        shrink=0.6,
        label=f"cosine similarity\ncolours span {low:.2f} to {high:.2f} (of -1 to 1)",
    )
    fig.suptitle(f"Position embedding similarity ({kind})")
    return fig


def plot_position_norms(norms, grid: int, kind: str) -> Figure:
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    shown = ax.imshow(norms.reshape(grid, grid).numpy(), cmap="magma")
    fig.colorbar(shown, ax=ax, label="L2 norm")
    ticks = range(0, grid, max(1, grid // 8))
    ax.set_xticks(ticks, [t + 1 for t in ticks])
    ax.set_yticks(ticks, [t + 1 for t in ticks])
    title = f"Position embedding norm per patch ({kind})"
    if float(norms.max() - norms.min()) <= 1e-4 * float(norms.max()):  # sin-cos: one norm for all
        title += f"\nthe same at every position: {float(norms.max()):.2f}"
    ax.set(
        title=title,
        xlabel="patch column",
        ylabel="patch row",
    )
    fig.tight_layout()
    return fig


def plot_patches(image, patch_size: int, title: str) -> Figure:
    """One input as the model sees it, then cut into its patches (numbered in token order)."""
    channels, size, _ = image.shape
    grid = size // patch_size
    gap = max(1, patch_size // 8)
    canvas = torch.ones(channels, grid * (patch_size + gap) - gap, grid * (patch_size + gap) - gap)
    for r in range(grid):
        for c in range(grid):
            patch = image[
                :, r * patch_size : (r + 1) * patch_size, c * patch_size : (c + 1) * patch_size
            ]
            top, left = r * (patch_size + gap), c * (patch_size + gap)
            canvas[:, top : top + patch_size, left : left + patch_size] = patch
    fig, (ax_image, ax_patches) = plt.subplots(1, 2, figsize=(10, 5))
    _show(ax_image, image)
    ax_image.set_title(f"input, {size}x{size}")
    _show(ax_patches, canvas)
    ax_patches.set_title(
        f"{grid * grid} patches of {patch_size}x{patch_size} = {grid * grid} tokens"
    )
    if grid <= 16:
        for r in range(grid):
            for c in range(grid):
                ax_patches.text(
                    c * (patch_size + gap) + 1,
                    r * (patch_size + gap) + 1,
                    str(r * grid + c + 1),
                    fontsize=7 if grid <= 8 else 5,
                    color="yellow",
                    va="top",
                    bbox=dict(facecolor="black", alpha=0.5, pad=0.5, linewidth=0),
                )
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_validation_curves(curves: dict[str, pd.DataFrame], title: str) -> Figure:
    """Validation accuracy per epoch of several runs (a sweep's jobs), one line each."""
    fig, ax = plt.subplots(figsize=(10, 5))
    for label, metrics in curves.items():
        val = validated(metrics)
        ax.plot(val["epoch"], val["val_acc"] * 100, label=label[:70])
    ax.set(title=title, xlabel="epoch", ylabel="validation accuracy (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig
