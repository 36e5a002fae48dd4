"""The page's Compare tab: pick two or more runs and read the settings that differ, their final
metrics side by side, their curves overlaid and their per-class differences.

``compare_view`` computes what the tab shows, without Gradio (the tests call it); the tables and
figures are those of ``python -m src.report.compare`` (src/report/compare.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import numpy as np
import pandas as pd

from src.errors import ConfigError
from src.report.compare import Comparison, runs_named
from src.report.compare_plots import plot_compared_curves, plot_per_class_change
from src.report.plots import close_figure
from src.runs.catalogue import Run

PICK = "Pick two or more runs to compare."


@dataclass
class CompareView:
    """What the tab shows: a sentence (the runs, or why there is nothing to compare), the two
    tables, and the two figures as RGB pixels (None when there is nothing to draw)."""

    message: str
    diff: pd.DataFrame
    metrics: pd.DataFrame
    curves: np.ndarray | None = None
    per_class: np.ndarray | None = None


def compare_choices(runs: list[Run]) -> list[tuple[str, str]]:
    """(label, folder) of every run that has finished an epoch or more: those have something to
    compare, weights or not."""
    return [
        (f"{run.path} ({run.summary.get('model', '?')}, {run.status})", str(run.path))
        for run in runs
        if run.summary.get("epochs_completed")
    ]


def compare_view(folders: list[str] | None) -> CompareView:
    """The comparison of the runs in ``folders``: the settings that differ (with the overrides
    as the last row), the final metrics, the curves and the per-class F1 change."""
    empty = pd.DataFrame()
    if not folders or len(folders) < 2:
        return CompareView(PICK, empty, empty)
    try:
        comparison = Comparison.of(runs_named(list(folders)))
    except ConfigError as err:
        return CompareView(str(err), empty, empty)
    diff = comparison.config_diff()
    own, _ = comparison.own_overrides()
    diff.loc["(overrides of its own)"] = [" ".join(o) or "-" for o in own]
    legend = comparison.legend()
    curves, per_class = comparison.curves(), comparison.per_class()
    lines = [f"**{len(comparison.runs)} runs**, {len(diff) - 1} settings differ."]
    lines += [
        f"- **{label}**: `{run.path}`" for label, run in zip(comparison.labels, comparison.runs)
    ]
    lines += [f"- note: {note}" for note in comparison.notes]
    return CompareView(
        "\n".join(lines),
        diff.reset_index(),
        comparison.metrics().reset_index(),
        pixels(plot_compared_curves(curves, legend)) if curves else None,
        pixels(plot_per_class_change(per_class, legend)) if per_class.shape[1] > 1 else None,
    )


def pixels(fig) -> np.ndarray:
    """A figure as (H, W, 3) uint8, and the figure closed (the page draws many)."""
    fig.set_dpi(100)
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    close_figure(fig)
    return image


def compare_tab(page: gr.Blocks, list_runs, refresh: gr.Button) -> None:
    """The tab's layout and events: its run picker is filled when the page loads and when
    ``refresh`` is clicked, from ``list_runs()``."""
    with gr.Tab("Compare"):
        picker = gr.Dropdown(
            label="Runs to compare (two or more)", multiselect=True, elem_id="compare-runs"
        )
        message = gr.Markdown(PICK, elem_id="compare-message")
        diff = gr.Dataframe(label="Settings that differ", interactive=False, wrap=True)
        metrics = gr.Dataframe(label="Final metrics", interactive=False)
        curves = gr.Image(label="Curves", format="png", interactive=False, elem_id="compare-curves")
        per_class = gr.Image(label="Per-class F1", format="png", interactive=False)

    def fill() -> dict:
        return {picker: gr.Dropdown(choices=compare_choices(list_runs()))}

    def show(folders: list[str] | None) -> dict:
        view = compare_view(folders)
        return {
            message: view.message,
            diff: view.diff,
            metrics: view.metrics,
            curves: view.curves,
            per_class: view.per_class,
        }

    page.load(fill, outputs=[picker])
    refresh.click(fill, outputs=[picker])
    picker.change(show, picker, [message, diff, metrics, curves, per_class])
