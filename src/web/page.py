"""The web page's Gradio layout (`python app.py`): the runs table and run picker, the "Try the
model" tab, the run's tabs (curves, per-class metrics, figures), the Compare tab
(src/web/compare_tab.py) and the tab that training adds,
the events that tie them to src/web/workbench.py (which computes everything they show), and the
server (``check_port``, ``serve``). Gradio ships its page's code and fonts in the package, so the
page works offline; analytics and share links stay off.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from src.errors import ConfigError
from src.runs.catalogue import Run
from src.web.compare_tab import compare_tab
from src.web.workbench import (
    MB,
    PAGE_COLUMNS,
    Shown,
    Workbench,
    curves,
    default_run,
    enlarged,
    figures,
    per_class,
    pixels,
    run_choices,
    run_summary,
    runs_for_page,
)

ASK = "Upload an image, or click a test image."  # the "Try the model" tab's first sentence


def build_page(bench: Workbench, training: Callable[..., None] | None = None) -> gr.Blocks:
    """Runs table and run picker on top; under them, tabs to try the model and to read the run,
    and the tab that ``training`` lays out (src/web/train_tab.py), given the picker and table."""
    with gr.Blocks(
        title="ViT workbench", analytics_enabled=False, delete_cache=(3600, 3600), fill_width=True
    ) as page:  # uploads are deleted after an hour; the page as wide as the window
        runs = runs_part(bench)
        tried = try_tab(bench)
        read = run_tabs()
        compare_tab(page, bench.runs, runs.refresh)
        if training is not None:
            training(chooser=runs.chooser, table=runs.table)
        PageEvents(bench, runs, tried, read).wire(page)
    return page


@dataclass
class RunsPart:
    """The top of the page: the runs table, the run picker and the picked run's summary."""

    table: gr.Dataframe
    chooser: gr.Dropdown
    refresh: gr.Button
    summary: gr.Markdown


@dataclass
class TryTab:
    """The "Try the model" tab: the image to predict, and the prediction."""

    upload: gr.File
    topk: gr.Slider
    examples: gr.Gallery  # the run's first test images
    message: gr.Markdown
    label: gr.Label  # the top-k classes
    input: gr.Image  # the input as the model read it
    overlay: gr.Image  # the input under its attention rollout
    source: gr.State  # what was predicted last: ("file", path) or ("example", index)


@dataclass
class RunTabs:
    """The picked run's tabs: its curves, per-class metrics and figures."""

    loss_plot: gr.LinePlot
    acc_plot: gr.LinePlot
    metrics: gr.Dataframe
    gallery: gr.Gallery


def runs_part(bench: Workbench) -> RunsPart:
    gr.Markdown(
        "# ViT workbench\n"
        f"The saved runs under {', '.join(f'`{r}/`' for r in bench.roots)}, newest first "
        "(sort or filter from a column's ⋮ menu; click a row to pick its run)."
    )
    table = gr.Dataframe(
        interactive=False,
        max_height=360,  # about five runs of two lines each, then it scrolls
        elem_id="runs",
        show_label=False,
        wrap=True,
        column_widths=list(PAGE_COLUMNS.values()),
    )
    with gr.Row():
        chooser = gr.Dropdown(label="Run", scale=4, elem_id="run")
        refresh = gr.Button("Look for new runs", scale=1)
    return RunsPart(table, chooser, refresh, gr.Markdown(elem_id="summary"))


def try_tab(bench: Workbench) -> TryTab:
    with gr.Tab("Try the model"), gr.Row():
        with gr.Column(scale=2):
            upload = gr.File(
                label=f"Upload an image (up to {bench.max_upload_mb:g} MB)",
                type="filepath",
                elem_id="upload",
                height=120,
            )
            topk = gr.Slider(1, 10, value=3, step=1, label="Classes shown (top-k)")
            gr.Markdown("... or click a test image of this run:")
            examples = gr.Gallery(
                columns=4,
                height="auto",  # its three rows, however wide the window
                object_fit="contain",
                show_label=False,
                allow_preview=False,
                elem_id="examples",
            )
        with gr.Column(scale=3):
            message = gr.Markdown(ASK, elem_id="message")
            label = gr.Label(label="Top classes", elem_id="prediction")
            with gr.Row():
                shown_input = gr.Image(
                    label="Input", format="png", interactive=False, elem_id="input", height=260
                )
                shown_overlay = gr.Image(
                    label="Attention rollout over the input",
                    format="png",
                    interactive=False,
                    elem_id="overlay",
                    height=260,
                )
    source = gr.State(None)
    return TryTab(upload, topk, examples, message, label, shown_input, shown_overlay, source)


def run_tabs() -> RunTabs:
    with gr.Tab("Curves"), gr.Row():
        loss_plot = gr.LinePlot(
            x="epoch", y="value", color="split", title="Loss", y_title="cross-entropy"
        )
        acc_plot = gr.LinePlot(
            x="epoch", y="value", color="split", title="Accuracy", y_title="accuracy (%)"
        )
    with gr.Tab("Per-class metrics"):
        metrics = gr.Dataframe(interactive=False, show_label=False, elem_id="per-class")
    with gr.Tab("Figures"):
        gallery = gr.Gallery(columns=2, object_fit="contain", elem_id="figures", show_label=False)
    return RunTabs(loss_plot, acc_plot, metrics, gallery)


class PageEvents:
    """What the page's events do. Each handler returns ``{component: new value}``; a component
    it leaves out stays as it is."""

    def __init__(self, bench: Workbench, runs: RunsPart, tried: TryTab, read: RunTabs):
        self.bench, self.runs, self.tried, self.read = bench, runs, tried, read

    def wire(self, page: gr.Blocks) -> None:
        runs, tried, read = self.runs, self.tried, self.read
        shown = [tried.message, tried.label, tried.input, tried.overlay, tried.source]
        page.load(self.list_runs, outputs=[runs.table, runs.chooser])
        runs.refresh.click(self.list_runs, outputs=[runs.table, runs.chooser])
        read_tabs = [read.loss_plot, read.acc_plot, read.metrics, read.gallery]
        picked = [runs.summary, *read_tabs, tried.examples, *shown]
        runs.chooser.change(self.show_run, runs.chooser, picked)
        runs.table.select(self.pick_row, None, [runs.chooser, runs.summary])
        tried.upload.upload(self.on_upload, [runs.chooser, tried.upload, tried.topk], shown)
        tried.examples.select(self.on_example, [runs.chooser, tried.topk], shown)
        tried.topk.change(self.on_topk, [runs.chooser, tried.source, tried.topk], shown)

    def list_runs(self) -> dict:
        runs = self.bench.runs()
        first = default_run(runs)
        picker = gr.Dropdown(choices=run_choices(runs), value=str(first.path) if first else None)
        return {self.runs.table: runs_for_page(runs), self.runs.chooser: picker}

    def show_run(self, folder: str | None) -> dict:
        """The picked run's summary, tabs and test images; the last prediction is cleared."""
        tried, read = self.tried, self.read
        cleared = self.shown(Shown(ASK), None)
        if not folder:
            note = (
                f"No run with weights under {' or '.join(map(str, self.bench.roots))} yet; "
                "train one with `python train.py`."
            )
            return {
                self.runs.summary: note,
                read.loss_plot: None,
                read.acc_plot: None,
                read.metrics: None,
                read.gallery: [],
                tried.examples: [],
                **cleared,
            }
        run = Run.read(folder)
        loss, acc = curves(run)
        try:
            examples = [
                (enlarged(pixels(image), 64), f"true {c}")
                for image, c in self.bench.examples(folder)
            ]
        except ConfigError as err:
            examples, cleared[tried.message] = [], f"Test images are not available: {err}"
        return {
            self.runs.summary: run_summary(run),
            read.loss_plot: loss,
            read.acc_plot: acc,
            read.metrics: per_class(run),
            read.gallery: figures(run),
            tried.examples: examples,
            **cleared,
        }

    def pick_row(self, evt: gr.SelectData) -> dict:
        folder = evt.row_value[-1]
        run = Run.read(folder)
        if not run.usable:
            note = f"{folder} cannot predict ({run.problem}); pick another run."
            return {self.runs.summary: note}
        return {self.runs.chooser: folder, self.runs.summary: run_summary(run)}

    def shown(self, shown: Shown, source) -> dict:
        """A prediction (or the sentence that says why there is none), enlarged to be seen."""
        tried = self.tried
        return {
            tried.message: shown.message,
            tried.label: shown.top,
            tried.input: enlarged(shown.image) if shown.image is not None else None,
            tried.overlay: enlarged(shown.overlay) if shown.overlay is not None else None,
            tried.source: source,
        }

    def on_upload(self, folder, path, k) -> dict:
        return self.shown(self.bench.predict_file(folder, path, int(k)), ("file", path))

    def on_example(self, folder, k, evt: gr.SelectData) -> dict:
        shown = self.bench.predict_example(folder, evt.index, int(k))
        return self.shown(shown, ("example", evt.index))

    def on_topk(self, folder, last, k) -> dict:
        """The same image again, with more or fewer classes."""
        if last is None:
            return {self.tried.source: None}
        kind, what = last
        predict = self.bench.predict_file if kind == "file" else self.bench.predict_example
        return self.shown(predict(folder, what, int(k)), last)


def check_port(host: str, port: int) -> None:
    """One sentence, before Gradio starts, when the address cannot be listened on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server itself does
        try:
            probe.bind((host, port))
        except OSError as err:
            raise ConfigError(
                f"--port {port}: cannot listen on {host}:{port} ({err.strerror or err}); the port "
                "is in use or the address is not this machine's, so pick another --port or --host."
            ) from None


def serve(
    page: gr.Blocks,
    bench: Workbench,
    host: str = "127.0.0.1",
    port: int = 7860,
    block: bool = True,
    auth: tuple[str, str] | None = None,
) -> str:
    """Starts the page's server on host:port and returns its address; with ``block``, serves until
    Ctrl-C; with ``auth`` (user, password), behind Gradio's login. Nothing leaves the machine: no
    share link, no analytics, no server-side rendering."""
    check_port(host, port)
    try:
        page.launch(
            server_name=host,
            server_port=port,
            share=False,
            ssr_mode=False,
            mcp_server=False,
            auth=auth,
            max_file_size=int(bench.max_upload_mb * MB),
            quiet=True,
            show_error=True,
            allowed_paths=[str(Path(root).resolve()) for root in bench.roots],  # the runs' figures
            footer_links=["api", "gradio", "settings"],
            prevent_thread_lock=True,
        )
    except OSError as err:
        raise ConfigError(
            f"--port {port}: the server could not start on {host}:{port} ({err})."
        ) from None
    except KeyboardInterrupt:  # Ctrl-C while the server was starting up
        if not block:
            raise
        close_on_ctrl_c(page)
    url = f"http://{host}:{port}"
    if block and page.is_running:
        serve_until_ctrl_c(page, f"The web page is at {url} (Ctrl-C stops it).")
    return url


def serve_until_ctrl_c(page: gr.Blocks, greeting: str) -> None:
    """Serves until Ctrl-C, then closes the page and its server within about 2 s. Gradio's own
    ``block_thread`` closes the server alone: the event streams of an open browser tab go on, the
    server waits for them, and Gradio gives up on it only after 5 s. ``close`` ends the streams and
    the queue too; a request still running after 2 s is cancelled."""
    try:
        print(greeting, flush=True)
        while page.is_running:
            time.sleep(0.1)
    except KeyboardInterrupt:
        close_on_ctrl_c(page)


def close_on_ctrl_c(page: gr.Blocks) -> None:
    print("Ctrl-C: closing the server.", flush=True)
    if page.server is not None:
        page.server.config.timeout_graceful_shutdown = 2  # seconds
    page.close(verbose=False)
