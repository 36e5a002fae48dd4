"""The page's training view (the Train tab of src/web/page.py's page): the form, the command it
runs, Start, Stop and Resume, and the run's progress and live curves, refreshed every second from
its folder.

Only layout and wiring: the form's checks come from src/web/train_form.py, the child process and
what the page says of its run from src/web/train_control.py, the curves, per-class table and
figures from src/web/workbench.py.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from src.errors import ConfigError
from src.runs.catalogue import Run
from src.web.train_control import (
    Job,
    TrainingControl,
    metrics,
    progress_text,
    training_off_reason,
)
from src.web.train_form import TRAIN_PY, TrainForm, check_overrides, config_options, shown_command
from src.web.workbench import Workbench, curves, figures, per_class, run_choices, runs_for_page

REFRESH_SECONDS = 1.0
EPOCH_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_seconds"]


def training_part(
    bench: Workbench,
    host: str,
    password: str | None,
    enabled: bool = True,
    more_folders: Sequence[Path] = (),
) -> Callable[..., None]:
    """What build_page adds for training: the view, or a note saying why training is off. The
    view's runs land in outputs/ (as train.py's do), which the page then lists too; paths typed
    on the page must lie under dataset_path/, outputs/ or ``more_folders`` (--allow-folder)."""
    reason = (
        "Training from the page is off (app.py --no-training)."
        if not enabled
        else training_off_reason(host, password)
    )
    if reason:
        return lambda **parts: training_off(reason)
    outputs = next((r for r in bench.roots if r.resolve() == Path("outputs").resolve()), None)
    if outputs is None:
        outputs = Path("outputs")
        bench.roots.append(outputs)
    control = TrainingControl(outputs, more_folders)
    return lambda **parts: training_view(control, bench, **parts)


def training_off(reason: str) -> None:
    with gr.Tab("Train"):
        gr.Markdown(reason, elem_id="train-off")


def training_view(
    control: TrainingControl, bench: Workbench, chooser: gr.Dropdown, table: gr.Dataframe
) -> None:
    """The Train tab. ``chooser`` and ``table`` are the page's run picker and runs table: a run
    that ends becomes the picked one, and Resume continues the picked run."""
    with gr.Tab("Train"):
        gr.Markdown(
            "Train a new run with `train.py`. An empty field keeps the config's value, or "
            "the preset's; other settings go in *Other overrides*, as on the command line."
        )
        fields = form_fields()
        command = gr.Markdown(preview_text(control, *[""] * len(fields)), elem_id="train-command")
        with gr.Row():
            start = gr.Button("Start", variant="primary", elem_id="train-start")
            stop = gr.Button("Stop (as Ctrl-C)", variant="stop", elem_id="train-stop")
            resume = gr.Button("Resume the picked run", elem_id="train-resume")
        message = gr.Markdown(elem_id="train-message")
        status = status_area()
    events = TrainEvents(control, bench, status, chooser, table)
    # One listener for the whole form: its calls run one at a time, the last with the latest
    # values. A listener per field let an earlier field's answer land after a later one's, and
    # the command shown missed what was typed last.
    gr.on(
        [field.change for field in fields],
        events.preview,
        fields,
        command,
        show_progress="hidden",
        trigger_mode="always_last",
    )
    start.click(events.on_start, fields, message)
    stop.click(events.on_stop, None, message)
    resume.click(events.on_resume, chooser, message)
    status.timer.tick(events.on_tick, status.seen, events.tick_outputs(), show_progress="hidden")


def form_fields() -> list[gr.components.Component]:
    """The form, in TrainForm's order: dataset, model, preset, epochs, learning rate, batch size,
    seed and other overrides. An empty field shows the config's value."""
    default = check_overrides([])  # the config's values, shown in the empty fields
    with gr.Row():
        dataset = gr.Dropdown(
            [(f"default ({default.dataset.name})", "")] + config_options("dataset"),
            value="",
            label="Dataset",
            elem_id="train-dataset",
        )
        model = gr.Dropdown(
            [(f"default ({default.model.name})", "")] + config_options("model"),
            value="",
            label="Model",
            elem_id="train-model",
        )
        preset = gr.Dropdown(
            [("none", "")] + config_options("experiment"),
            value="",
            label="Preset (+experiment=)",
            elem_id="train-preset",
        )
    with gr.Row():
        epochs = gr.Textbox(
            label="Epochs", placeholder=str(default.trainer.epochs), elem_id="train-epochs"
        )
        lr = gr.Textbox(
            label="Learning rate", placeholder=str(default.optimizer.lr), elem_id="train-lr"
        )
        batch = gr.Textbox(
            label="Batch size",
            placeholder=str(default.trainer.batch_size),
            elem_id="train-batch",
        )
        seed = gr.Textbox(label="Seed", placeholder=str(default.seed), elem_id="train-seed")
    other = gr.Textbox(
        label="Other overrides",
        elem_id="train-other",
        placeholder="e.g. model.depth=6 trainer.label_smoothing=0.05",
    )
    return [dataset, model, preset, epochs, lr, batch, seed, other]


@dataclass
class StatusArea:
    """Under the buttons: what the run has done so far, refreshed by ``timer``."""

    progress: gr.Markdown
    loss_plot: gr.LinePlot
    acc_plot: gr.LinePlot
    lr_plot: gr.LinePlot
    rows: gr.Dataframe  # metrics.csv, newest epoch first
    gallery: gr.Gallery  # the run's figures
    scores: gr.Dataframe  # its per-class metrics
    seen: gr.State  # what this browser shows: (folder, training, epochs, status)
    timer: gr.Timer


def status_area() -> StatusArea:
    progress = gr.Markdown(elem_id="train-progress")
    with gr.Row():
        loss_plot = gr.LinePlot(
            x="epoch",
            y="value",
            color="split",
            title="Loss",
            y_title="cross-entropy",
            elem_id="train-loss",
        )
        acc_plot = gr.LinePlot(
            x="epoch",
            y="value",
            color="split",
            title="Accuracy",
            y_title="accuracy (%)",
            elem_id="train-acc",
        )
        lr_plot = gr.LinePlot(
            x="epoch", y="lr", title="Learning rate", y_title="lr", elem_id="train-lr-plot"
        )
    rows = gr.Dataframe(
        pd.DataFrame(columns=EPOCH_COLUMNS),
        interactive=False,
        max_height=240,
        label="Epochs (metrics.csv), newest first",
        elem_id="train-rows",
    )
    with gr.Row():
        gallery = gr.Gallery(
            columns=3, object_fit="contain", label="Figures", elem_id="train-figures"
        )
        scores = gr.Dataframe(
            per_class(Run(Path(), {}, None)),
            interactive=False,
            label="Per-class metrics (when the run has tested)",
            elem_id="train-per-class",
        )
    seen, timer = gr.State(None), gr.Timer(REFRESH_SECONDS)
    return StatusArea(progress, loss_plot, acc_plot, lr_plot, rows, gallery, scores, seen, timer)


def form(*values) -> TrainForm:
    return TrainForm(*(value or "" for value in values))


def preview_text(control: TrainingControl, *values) -> str:
    """The command that Start would run, or why it would not."""
    try:
        overrides = form(*values).overrides(control.folders)
    except ConfigError as err:
        return f"**Cannot run:** {err}"
    line = shown_command([sys.executable, str(TRAIN_PY), *overrides])
    return f"Runs `{line} hydra.run.dir={control.outputs}/DATE/TIME` (the time it starts)."


def epoch_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """metrics.csv as the table shows it: rounded, the newest epoch on top, where it is seen."""
    shown = frame[[c for c in EPOCH_COLUMNS if c in frame]].round(4)
    if "lr" in frame:  # small numbers: three significant digits rather than four decimals
        shown["lr"] = frame["lr"].map(lambda v: float(f"{v:.3g}"))
    return shown.iloc[::-1]


class TrainEvents:
    """What the Train tab's events do. ``on_tick`` returns ``{component: new value}``; a component
    it leaves out stays as it is."""

    def __init__(
        self,
        control: TrainingControl,
        bench: Workbench,
        status: StatusArea,
        chooser: gr.Dropdown,
        table: gr.Dataframe,
    ):
        self.control, self.bench, self.status = control, bench, status
        self.chooser, self.table = chooser, table

    def preview(self, *values) -> str:
        return preview_text(self.control, *values)

    def on_start(self, *values) -> str:
        try:
            job = self.control.start(form(*values))
        except ConfigError as err:
            return f"**Not started:** {err}"
        return f"Started `{job.command}`"

    def on_stop(self) -> str:
        try:
            return self.control.stop()
        except ConfigError as err:
            return str(err)

    def on_resume(self, folder: str | None) -> str:
        if not folder:
            return "Pick the run to resume in the Run picker above."
        try:
            job = self.control.resume(folder)
        except ConfigError as err:
            return f"**Not resumed:** {err}"
        return f"Resumed `{job.command}`"

    def tick_outputs(self) -> list:
        """Every component that ``on_tick`` may change."""
        s = self.status
        shown = [s.progress, s.loss_plot, s.acc_plot, s.lr_plot, s.rows, s.gallery, s.scores]
        return [*shown, self.chooser, self.table, s.seen]

    def on_tick(self, last: tuple | None) -> dict:
        """The followed run as its folder has it now; nothing changes while nothing is new, so
        the page does not flicker. ``last`` is what this browser shows: see ``StatusArea.seen``."""
        s = self.status
        job = self.control.follow()
        if job is None:
            if last == ("no run",):
                return {s.seen: last}
            return {
                s.progress: "No run yet: fill in the form and press Start.",
                s.seen: ("no run",),
            }
        run = Run.read(job.folder)
        frame, training = metrics(job.folder), job.running()
        now = (str(job.folder), training, len(frame), run.status)
        if now == last:
            return {s.seen: now}
        # No plot before the first epoch: an empty table would set the plots' colours as numbers.
        loss, acc = curves(run) if not frame.empty else (None, None)
        return {
            s.progress: progress_text(job, run.summary, frame),
            s.loss_plot: loss,
            s.acc_plot: acc,
            s.lr_plot: frame[["epoch", "lr"]] if not frame.empty else None,
            s.rows: epoch_rows(frame),
            s.gallery: figures(run),
            s.scores: per_class(run),
            **self.listed(job, run, last, now),
            s.seen: now,
        }

    def listed(self, job: Job, run: Run, last: tuple | None, now: tuple) -> dict:
        """The runs table again when the run is new or its status changed; when it has just
        ended, it becomes the picked run, so that it can predict and be resumed."""
        if last is not None and last[0] == now[0] and last[1] and not now[1]:
            runs = self.bench.runs()
            if not run.usable:
                return {self.table: runs_for_page(runs)}
            picked = gr.Dropdown(choices=run_choices(runs), value=str(job.folder))
            return {self.table: runs_for_page(runs), self.chooser: picked}
        if last is None or last[0] != now[0] or last[3] != now[3]:
            return {self.table: runs_for_page(self.bench.runs())}
        return {}
