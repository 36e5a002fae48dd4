"""The web page (app.py, src/web/workbench.py, src/web/page.py): the functions behind it, the
server's address and errors, and one end-to-end test in a real headless browser (Debian's chromium,
driven by Playwright)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import app
from inference import runs_table
from src.data import load_dataset
from src.errors import ConfigError
from src.predict.predictor import Predictor
from src.runs.catalogue import Run, find_runs
from src.training.run import train
from src.web.page import build_page, serve
from src.web.workbench import (
    PAGE_COLUMNS,
    Workbench,
    attention_overlay,
    curves,
    default_run,
    enlarged,
    figures,
    per_class,
    run_choices,
    run_roots,
    run_summary,
    runs_for_page,
)
from tests.conftest import ROOT, TINY_RUN, WITH_FIGURES, compose_config, free_port

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """outputs/ with a trained run (and the .hydra/config.yaml Hydra would write), a newer run
    without weights, and images to upload: a test-split digit, a colour photo, a text file."""
    home = tmp_path_factory.mktemp("web")
    run_dir = home / "outputs" / "2026-01-02" / "10-00-00"
    cfg = compose_config([*TINY_RUN, WITH_FIGURES])
    train(cfg, run_dir)
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))

    broken = home / "outputs" / "2026-01-03" / "09-00-00"
    broken.mkdir(parents=True)
    newer = (datetime.now() + timedelta(minutes=5)).isoformat(timespec="seconds")
    (broken / "summary.json").write_text(json.dumps({"status": "failed", "started_at": newer}))

    data = load_dataset(cfg.dataset)
    uploads = home / "uploads"
    uploads.mkdir()
    Image.fromarray(data.test.images[0, 0].numpy()).save(uploads / "digit.png")
    photo = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)  # H 24, W 40
    Image.fromarray(photo).save(uploads / "photo.png")
    (uploads / "notes.txt").write_text("not an image\n")
    return home, run_dir, broken, data, uploads


@pytest.fixture
def bench(workspace):
    return Workbench([workspace[0] / "outputs"], max_upload_mb=1)


# The runs and one run's folder


def test_the_runs_table_is_inference_lists_table_with_sortable_numbers(workspace):
    home, run_dir, broken, _, _ = workspace
    runs = find_runs([home / "outputs"])
    table = runs_for_page(runs)
    assert list(table.columns) == [
        "#",
        "when",
        "dataset",
        "model",
        "overrides",
        "epochs",
        "best val %",
        "test %",
        "status",
        "folder",
    ]
    assert list(PAGE_COLUMNS) == list(table.columns)  # a width for every column, in order
    assert sum(float(width.rstrip("%")) for width in PAGE_COLUMNS.values()) == 100
    assert table["folder"].tolist() == [str(broken), str(run_dir)]  # newest first
    assert table["#"].tolist() == [1, 2]
    summary = Run.read(run_dir).summary
    assert table.loc[1, "best val %"] == round(summary["best_val_acc"] * 100, 2)
    assert table.loc[1, "test %"] == round(summary["test_acc"] * 100, 2)
    assert table.loc[1, "status"] == "completed" and table.loc[1, "model"] == "vit_digits"
    assert table.loc[0, "status"] == "failed, no model.json" and pd.isna(table.loc[0, "best val %"])
    # inference.py --list prints the same rows from the same function
    printed = runs_table(runs).splitlines()
    assert f"{summary['best_val_acc']:.2%}" in printed[2] and str(run_dir) in printed[2]
    assert "failed, no model.json" in printed[1]


def test_only_usable_runs_can_be_picked_and_the_newest_completed_comes_first(workspace):
    home, run_dir, _, _, _ = workspace
    runs = find_runs([home / "outputs"])
    assert [folder for _, folder in run_choices(runs)] == [str(run_dir)]
    assert run_choices(runs)[0][0].startswith("#2 ")  # numbered as in the table
    assert default_run(runs).path == run_dir
    assert default_run([r for r in runs if not r.usable]) is None


def test_a_runs_curves_metrics_and_figures_come_from_its_folder(workspace):
    _, run_dir, broken, _, _ = workspace
    run = Run.read(run_dir)
    metrics = pd.read_csv(run_dir / "metrics.csv")
    loss, accuracy = curves(run)
    assert len(loss) == len(accuracy) == 2 * len(metrics)
    assert set(loss["split"]) == {"train", "validation"}
    validation = accuracy[accuracy["split"] == "validation"]["value"].to_numpy()
    np.testing.assert_allclose(validation, metrics["val_acc"].to_numpy() * 100)
    table = per_class(run)
    assert table["class"].tolist() == [str(i) for i in range(10)] + ["macro avg", "weighted avg"]
    shown = figures(run)
    assert [Path(p).name for p, _ in shown] == sorted(
        p.name for p in (run_dir / "plots").glob("*.png")
    )
    assert "confusion matrix" in [caption for _, caption in shown]
    text = run_summary(run)
    assert f"{run.summary['test_acc']:.2%}" in text and "vit_digits on digits, completed" in text
    # a run with nothing but a summary still gets a page, with empty parts
    bare = Run.read(broken)
    assert curves(bare)[0].empty and per_class(bare).empty and figures(bare) == []
    assert "cannot predict (no model.json)" in run_summary(bare)


# Predicting


def test_uploaded_image_top_k_matches_predictor_and_overlay_has_its_size(workspace, bench):
    _, run_dir, _, _, uploads = workspace
    predictor = Predictor(Run.read(run_dir))
    for name, size in (("digit.png", (8, 8)), ("photo.png", (24, 40))):
        shown = bench.predict_file(str(run_dir), str(uploads / name), 3)
        expected = predictor.predict(uploads / name, topk=3)
        assert list(shown.top) == expected.classes
        np.testing.assert_allclose(list(shown.top.values()), expected.probabilities, rtol=1e-6)
        assert sum(shown.top.values()) < 1
        assert shown.overlay.shape == (*size, 3) and shown.overlay.dtype == np.uint8
        assert shown.image.shape[:2] == size
        assert shown.message.startswith(f"{name}: **{expected.classes[0]}** (")
    every = bench.predict_file(str(run_dir), str(uploads / "digit.png"), 10).top
    assert len(every) == 10 and sum(every.values()) == pytest.approx(1.0, abs=1e-5)


def test_a_test_image_can_be_picked_instead(workspace, bench):
    _, run_dir, _, data, _ = workspace
    images = bench.examples(str(run_dir))
    assert len(images) == 12
    assert torch.equal(torch.stack([image for image, _ in images]), data.test.images[:12])
    assert [label for _, label in images] == [data.class_names[i] for i in data.test.labels[:12]]
    shown = bench.predict_example(str(run_dir), 4, 2)
    expected = Predictor(Run.read(run_dir)).predict_image(data.test.images[4], Path("x"), 2)
    assert list(shown.top) == expected.classes
    assert shown.message.startswith(f"test image 5 (true class {images[4][1]}): ")


def test_attention_overlay_is_the_image_under_its_stretched_heatmap():
    image = torch.full((1, 6, 4), 128, dtype=torch.uint8)  # grey, H 6, W 4
    heat = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 1.0]])  # hottest at the bottom right
    overlay = attention_overlay(image, heat)
    assert overlay.shape == (6, 4, 3) and overlay.dtype == np.uint8
    brightness = overlay.astype(float).sum(axis=-1)
    assert brightness[-1, -1] == brightness.max() and brightness[0, 0] == brightness.min()
    colour = attention_overlay(torch.zeros(3, 5, 7, dtype=torch.uint8), heat)
    assert colour.shape == (5, 7, 3)
    # small images are enlarged pixel by pixel for the page; large ones are left alone
    big = enlarged(overlay, 24)
    assert big.shape == (24, 16, 3) and (big[:4, :4] == overlay[0, 0]).all()
    assert enlarged(np.zeros((300, 200)), 24).shape == (300, 200)


def test_bad_uploads_get_one_sentence_and_nothing_else(workspace, bench):
    home, run_dir, broken, _, uploads = workspace
    shown = bench.predict_file(str(run_dir), str(uploads / "notes.txt"), 3)
    assert shown.message == "notes.txt: not an image PIL can read (or a corrupt one)."
    assert shown.top is None and shown.overlay is None
    big = home / "big.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (800, 800, 3), dtype=np.uint8)).save(
        big
    )
    shown = bench.predict_file(str(run_dir), str(big), 3)  # about 1.8 MB, over the 1 MB limit
    assert shown.message.startswith(
        "big.png is 1.8 MB, over the 1 MB limit; upload a smaller image"
    )
    assert shown.top is None
    assert bench.predict_file(str(run_dir), None, 3).message == "Upload an image first."
    no_run = bench.predict_file(None, str(uploads / "digit.png"), 3)
    assert no_run.message.startswith("There is no run to predict with under ")
    unusable = bench.predict_file(str(broken), str(uploads / "digit.png"), 3)
    assert "cannot be used (no model.json)" in unusable.message


# The server: address, port, errors


def test_defaults_bind_localhost_and_the_options_reach_the_server(workspace, monkeypatch):
    home = workspace[0]
    monkeypatch.chdir(home)  # the page's new runs go to outputs/ here, one of the --runs folders
    args = app.parse_args([])
    assert (args.host, args.port, args.max_upload_mb, args.runs) == ("127.0.0.1", 7860, 10, None)
    started = {}
    monkeypatch.setattr(
        app,
        "serve",
        lambda page, bench, host, port, auth: started.update(host=host, port=port, bench=bench),
    )
    assert (
        app.main(["--runs", str(home / "outputs"), "--port", "8123", "--max-upload-mb", "3"]) == 0
    )
    assert (started["host"], started["port"]) == ("127.0.0.1", 8123)
    assert started["bench"].max_upload_mb == 3 and started["bench"].roots == [home / "outputs"]


def test_the_server_answers_on_localhost_at_the_given_port(workspace):
    bench = Workbench([workspace[0] / "outputs"])
    port = free_port()
    page = build_page(bench)
    try:
        url = serve(page, bench, port=port, block=False)
        assert url == f"http://127.0.0.1:{port}" and page.server_name == "127.0.0.1"
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200 and "ViT workbench" in response.read().decode()
    finally:
        page.close()


def test_ctrl_c_stops_app_py_within_5_seconds_with_a_page_open(tmp_path):
    """A real `python app.py`, with a browser tab's heartbeat stream open (the connection that
    kept the server waiting), stopped as Ctrl-C in its terminal stops it: SIGINT to its group."""
    (tmp_path / "outputs").mkdir()
    port = free_port()
    server = subprocess.Popen(
        # faulthandler: SIGABRT makes it print every thread's stack, should it ever hang here
        [sys.executable, "-X", "faulthandler", str(ROOT / "app.py"), "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        # whose Ctrl-C is not ignored: were these tests started in the background (`nohup`, `&`),
        # it would be, and the server would inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url, server)
        tab = urllib.request.urlopen(f"{url}/gradio_api/heartbeat/tab1", timeout=30)
        assert tab.readline().startswith(b"data: ALIVE")
        os.killpg(server.pid, signal.SIGINT)
        start = time.monotonic()
        try:
            output, _ = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.send_signal(signal.SIGABRT)
            pytest.fail(f"app.py still ran 60 s after Ctrl-C:\n{server.communicate()[0]}")
        took = time.monotonic() - start
        tab.close()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0 and took < 5, f"exit {server.returncode} after {took:.1f} s"
    assert "Ctrl-C: closing the server." in output and "Traceback" not in output


def test_runs_folders_default_to_outputs_and_multirun_where_they_exist(workspace, monkeypatch):
    home, _, _, _, uploads = workspace
    monkeypatch.chdir(home)
    assert run_roots(None) == [Path("outputs")]  # there is no multirun/ here
    monkeypatch.chdir(uploads)
    with pytest.raises(ConfigError, match="there is no outputs/ or multirun/ folder here"):
        run_roots(None)


def test_bad_runs_folder_or_busy_port_is_one_sentence_and_exit_1(workspace, capsys):
    home = workspace[0]
    assert app.main(["--runs", str(home / "nope")]) == 1
    assert capsys.readouterr().err == (
        f"error: --runs {home / 'nope'}: no such folder; give the folder that holds your runs "
        "(by default outputs and multirun).\n"
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert app.main(["--runs", str(home / "outputs"), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --port {port}: cannot listen on 127.0.0.1:{port} (")
    assert err.count("\n") == 1


# In a real browser


def browser_missing() -> str | None:
    if not CHROMIUM.is_file():
        return f"no {CHROMIUM}: install it with `apt-get install chromium` to run the browser test"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: `pip install -r requirements-test.txt`"
    return None


@pytest.mark.slow
@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_in_a_browser_upload_an_image_and_read_the_prediction(workspace, tmp_path):
    from playwright.sync_api import sync_playwright

    home, run_dir, _, _, uploads = workspace
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "app.py"),
            "--runs",
            str(home / "outputs"),
            "--port",
            str(port),
            "--max-upload-mb",
            "1",
        ],
        cwd=home,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url, server)
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                tempfile.mkdtemp(dir=tmp_path),
                executable_path=str(CHROMIUM),
                headless=True,
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
                viewport={"width": 1400, "height": 1000},
            )
            elsewhere = []  # the page must work offline: anything not from our server is refused
            browser.route(
                "**/*",
                lambda route: (
                    route.continue_()
                    if route.request.url.startswith(url)
                    else (elsewhere.append(route.request.url), route.abort())
                ),
            )
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector("#summary strong", timeout=30_000)
            assert str(run_dir) in page.locator("#run input").input_value()
            assert "failed, no model.json" in page.inner_text("#runs")
            assert every_column_shows(page) == list(PAGE_COLUMNS)  # at 1,400 pixels

            page.set_input_files("#upload input[type=file]", str(uploads / "digit.png"))
            page.wait_for_function(
                "document.querySelector('#message').innerText.startsWith('digit.png')",
                timeout=30_000,
            )
            expected = Predictor(Run.read(run_dir)).predict(uploads / "digit.png", topk=3)
            label = page.inner_text("#prediction").split()
            assert label[:3] == [
                "Top",
                "classes",
                expected.classes[0],
            ]  # the heading: the top class
            assert f"{expected.probabilities[0]:.0%}" in label
            assert page.locator("#overlay img").count() == 1
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

            page.locator("#examples img").nth(1).click()  # a test image of the run, instead
            page.wait_for_function(
                "document.querySelector('#message').innerText"
                ".startsWith('test image 2 (true class')",
                timeout=30_000,
            )

            page.locator("#upload button[aria-label='Clear']").click()
            page.set_input_files("#upload input[type=file]", str(uploads / "notes.txt"))
            page.wait_for_function(
                "document.querySelector('#message').innerText.includes('not an image')",
                timeout=30_000,
            )
            big = tmp_path / "big.png"
            Image.fromarray(
                np.random.default_rng(1).integers(0, 256, (800, 800, 3), dtype=np.uint8)
            ).save(big)
            page.reload()
            page.wait_for_selector("#summary strong", timeout=30_000)
            page.set_input_files("#upload input[type=file]", str(big))
            page.get_by_text("exceed the maximum allowed size").wait_for(timeout=30_000)
            assert elsewhere == []
            browser.close()
        assert server.poll() is None  # still serving after the bad uploads
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200
    finally:
        server.terminate()
        server.wait(timeout=30)


def every_column_shows(page) -> list[str]:
    """The runs table's column headings, after checking that each lies within the table's
    visible width (none cut off at the right, none needing a scroll)."""
    table = page.locator("#runs").bounding_box()
    headings = page.locator("#runs thead th")
    names = []
    for i in range(headings.count()):
        box = headings.nth(i).bounding_box()
        name = " ".join(headings.nth(i).inner_text().split())
        assert (
            box["x"] >= table["x"] and box["x"] + box["width"] <= table["x"] + table["width"] + 1
        ), f"column {name!r} is cut off: {box} outside {table}"
        names.append(name)
    return names


def wait_for(url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"app.py exited with {server.returncode}: {server.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"app.py did not answer at {url} within {seconds:.0f} s")
