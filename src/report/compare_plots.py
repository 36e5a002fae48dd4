"""The figures of a comparison of runs (src/report/compare.py): their curves overlaid, and their
per-class scores with each run's change against the first."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, and safe on a headless machine

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from src.report.plots import validated  # noqa: E402

MOST_CLASSES = 30  # beyond this, the classes whose scores differ most


def _color(i: int) -> str:
    return f"C{i % 10}"


def plot_compared_curves(curves: dict[str, pd.DataFrame], legend: dict[str, str]) -> Figure:
    """Loss and accuracy per epoch of each run (one colour each): validation solid, training
    dashed, each run's best validation accuracy a dot; the runs' legend under the panels."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(13, 4.6))
    for i, metrics in enumerate(curves.values()):
        epochs, color = metrics["epoch"], _color(i)
        dots = {"marker": "o", "markersize": 3.5} if len(metrics) <= 12 else {}
        for ax, name, scale in ((ax_loss, "loss", 1), (ax_acc, "acc", 100)):
            if f"val_{name}" in metrics:
                val = validated(metrics)  # not the epochs that trainer.val_every skipped
                ax.plot(val["epoch"], val[f"val_{name}"] * scale, color=color, **dots)
            if f"train_{name}" in metrics:
                train = metrics[f"train_{name}"] * scale
                ax.plot(epochs, train, color=color, ls="--", alpha=0.6, **dots, mfc="none")
        if "val_acc" in metrics and metrics["val_acc"].notna().any():
            best = metrics["val_acc"].idxmax()
            ax_acc.scatter(
                epochs[best], metrics["val_acc"][best] * 100, color=color, s=45, zorder=3
            )
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    ax_acc.set(title="Accuracy (dot: best validation)", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, however few
    styles = [
        Line2D([], [], color="0.3", label="validation"),
        Line2D([], [], color="0.3", ls="--", alpha=0.6, label="train"),
    ]
    ax_loss.legend(handles=styles, loc="upper right", fontsize=9)
    runs = [
        Line2D([], [], color=_color(i), lw=2.5, label=legend.get(label, label)[:90])
        for i, label in enumerate(curves)
    ]
    columns = 1 if max(len(h.get_label()) for h in runs) > 45 else min(len(runs), 3)
    fig.legend(handles=runs, loc="lower center", ncol=columns, fontsize=9, frameon=False)
    fig.suptitle(f"{len(curves)} runs compared")
    rows = -(-len(runs) // columns)
    fig.tight_layout(rect=(0, min(0.5, 0.035 + 0.055 * rows), 1, 1))
    return fig


def plot_per_class_change(per_class: pd.DataFrame, legend: dict[str, str]) -> Figure:
    """Per-class F1 of each run (left) and each run's change against the first (right), one
    colour per run as in the curves; with many classes, those whose scores differ most."""
    table, title = per_class, "Per-class F1 on the test split"
    if len(table) > MOST_CLASSES:
        spread = table.max(axis=1) - table.min(axis=1)
        table = table.loc[spread.sort_values(ascending=False).index[:MOST_CLASSES]]
        title += f": the {MOST_CLASSES} of {len(per_class)} classes that differ most"
    labels, first = list(table.columns), table.columns[0]
    rows = np.arange(len(table))
    fig, (ax_f1, ax_change) = plt.subplots(
        1, 2, figsize=(13, 1.6 + 0.32 * len(table) * max(1, len(labels) / 2)), sharey=True
    )
    height = 0.8 / len(labels)
    for i, label in enumerate(labels):
        ax_f1.barh(
            rows + (i - (len(labels) - 1) / 2) * height, table[label], height, color=_color(i)
        )
    others = labels[1:]
    change_height = 0.8 / len(others)
    for j, label in enumerate(others, start=1):
        change = table[label] - table[first]
        offset = (j - 1 - (len(others) - 1) / 2) * change_height
        bars = ax_change.barh(rows + offset, change, change_height, color=_color(j))
        if len(others) <= 2:
            shown = [f"{c:+.2f}" if abs(c) >= 0.005 else "" for c in change]  # no "+0.00"s
            ax_change.bar_label(bars, labels=shown, fontsize=8, padding=2)
    ax_f1.set_yticks(rows, table.index)
    ax_f1.invert_yaxis()  # the first class on top
    ax_f1.set(xlim=(0, 1.0), xlabel="F1", ylabel="class", title="F1 per class")
    ax_change.axvline(0, color="0.3", lw=1)
    limit = max(0.05, float(np.nanmax(np.abs(table[others].sub(table[first], axis=0)).values)))
    ax_change.set(xlim=(-limit * 1.3, limit * 1.3), xlabel=f"F1 minus {first}'s")
    ax_change.set_title(f"Change against {first}")
    for ax in (ax_f1, ax_change):
        ax.grid(axis="x", alpha=0.3)
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=_color(i), label=legend.get(label, label)[:90])
        for i, label in enumerate(labels)
    ]
    columns = 1 if max(len(h.get_label()) for h in handles) > 45 else min(len(handles), 3)
    fig.legend(handles=handles, loc="lower center", ncol=columns, fontsize=9, frameon=False)
    fig.suptitle(title)
    legend_rows = -(-len(handles) // columns)
    fig.tight_layout(rect=(0, min(0.4, (0.3 + 0.25 * legend_rows) / fig.get_figheight()), 1, 1))
    return fig
