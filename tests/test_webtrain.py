"""Training from the web page (src/web/train_control.py, src/web/train_tab.py): the form turned into
train.py's arguments, bad settings refused with train.py's own sentence, no shell anywhere, who may
train, and in a real browser: a run started, watched, stopped, resumed and finished."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

import app
from src.errors import ConfigError
from src.web.page import build_page, serve
from src.web.train_control import (
    PASSWORD_VARIABLE,
    TrainingControl,
    find_live_run,
    training_off_reason,
)
from src.web.train_form import (
    TrainForm,
    check_overrides,
    refuse_files_and_code_outside_configs,
    shown_command,
)
from src.web.train_tab import training_part
from src.web.workbench import Workbench
from tests.conftest import ROOT, TINY_RUN, WITH_FIGURES, free_port
from tests.test_app import CHROMIUM, browser_missing, wait_for

SHELL_TRICKS = [
    "; touch pwned",
    "$(touch pwned)",
    "`touch pwned`",
    "&& touch pwned",
    "| touch pwned",
    "trainer.epochs=1;touch pwned",
    "seed=$(touch pwned)",
]
# What the page says of a shell trick: not an override, or not one of the settings it accepts.
REFUSED_AS_UNKNOWN = "is not an override Hydra can read|is not key=value|is not a setting the page"


def wait_until(condition, seconds: float = 240, what: str = "the run"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"{what} did not happen within {seconds:.0f} s")


# The form, the command and the checks


def test_the_form_becomes_train_py_overrides_in_the_order_typed():
    assert TrainForm().overrides() == []  # empty fields keep the config's (or the preset's) values
    form = TrainForm(
        dataset="mnist",
        model="vit_tiny",
        experiment="smoke",
        epochs=" 3 ",
        lr="5e-4",
        batch_size="32",
        seed="7",
        other="model.depth=2  dataset.root='dataset_path/my photos' trainer.ema=true",
    )
    overrides = form.overrides()
    assert overrides == [
        "+experiment=smoke",
        "dataset=mnist",
        "model=vit_tiny",
        "trainer.epochs=3",
        "optimizer.lr=5e-4",
        "trainer.batch_size=32",
        "seed=7",
        "model.depth=2",
        "dataset.root='dataset_path/my photos'",
        "trainer.ema=true",
    ]
    # shown as typed in a shell, and Hydra reads the quoted value as one string
    command = shown_command([sys.executable, str(ROOT / "train.py"), *overrides])
    assert command.startswith("python ") and "\"dataset.root='dataset_path/my photos'\"" in command
    assert check_overrides(overrides).dataset.root == "dataset_path/my photos"


def test_the_command_shown_follows_the_whole_form_through_one_listener(tmp_path):
    """Every field's change calls one listener, whose calls run in turn, the last with the latest
    values. With a listener per field, the answer to an earlier field could land after a later
    one's, and the command shown missed what was typed last (seen in the browser test below)."""
    bench = Workbench([tmp_path])
    page = build_page(bench, training_part(bench, "127.0.0.1", None))
    previews = [fn for fn in page.fns.values() if getattr(fn.fn, "__name__", "") == "preview"]
    assert len(previews) == 1
    (preview,) = previews
    fields = sorted(block._id for block in preview.inputs)
    assert len(fields) == 8 and sorted(block for block, _ in preview.targets) == fields
    assert {event for _, event in preview.targets} == {"change"}
    assert preview.trigger_mode == "always_last"


@pytest.mark.parametrize(
    "form, sentence",
    [
        (
            TrainForm(other="hydra.run.dir=/tmp/elsewhere"),
            "is Hydra's, and the page sets what it needs",
        ),
        (TrainForm(other="hydra/launcher=submitit_local"), "is Hydra's"),
        (TrainForm(other="optimizer._target_=os.system"), "names code for Hydra to run"),
        (TrainForm(other="dataset.root=${oc.env:HOME}"), "not interpolations"),
        (
            TrainForm(other="optimizer=../../../tmp/evil"),
            "a choice of configs/optimizer/ is a name, not a",
        ),
        (TrainForm(dataset="../../tmp/evil"), "a choice of configs/dataset/ is a name, not a path"),
        (TrainForm(other="resume=outputs/2026-01-01/10-00-00"), "is what the Resume button does"),
        (TrainForm(other="--multirun"), "is an option of train.py, not an override"),
        (TrainForm(other="dataset.root='open"), "a quote is not closed"),
    ],
)
def test_overrides_the_page_sets_itself_or_that_reach_code_or_files_are_refused(form, sentence):
    """A password lets people train, not run code on the server: optimizer=../../tmp/evil would
    load any YAML file (one uploaded for a prediction, say) and call its _target_."""
    with pytest.raises(ConfigError, match=re.escape(sentence)):
        form.overrides()
    assert TrainForm(
        other="dataset.root=dataset_path/../outputs/data model.image_size=32"
    ).overrides()


def test_no_yaml_file_outside_configs_is_loaded_nor_its_target_called(tmp_path, monkeypatch):
    """The attack a review found: upload two YAML files (the Predict tab keeps uploads on the
    server), then +optimizer@a.b=PATH loads the first, whose defaults list puts the second in
    place of the optimizer, whose _target_ train.py calls (here: creating a file)."""
    monkeypatch.chdir(tmp_path)
    touched = tmp_path / "touched"
    (tmp_path / "evil.yaml").write_text(
        f"_target_: torch.optim.AdamW\n_partial_: true\nlr: 0.001\nweight_decay: 0.05\n"
        f"x:\n  _target_: pathlib.Path.touch\n  _args_: ['{touched}']\n"
    )
    up = Path(os.path.relpath(tmp_path, ROOT / "configs" / "optimizer"))
    (tmp_path / "chain.yaml").write_text(
        f"defaults:\n  - override /optimizer@_global_.optimizer: {up / 'evil'}\n"
    )
    chain = f"+optimizer@a.b={up / 'chain'}"
    with pytest.raises(
        ConfigError, match=re.escape("moves a config to another place (KEY@PACKAGE)")
    ):
        TrainForm(other=chain).overrides()
    with pytest.raises(ConfigError, match=re.escape("optimizer=")):  # a path: refused by name
        TrainForm(other=f"optimizer={up / 'evil'}").overrides()
    # Had the overrides got through, the composed config is refused before anything runs.
    with pytest.raises(
        ConfigError, match=re.escape("is not one of the files in configs/optimizer/")
    ):
        check_overrides([chain])
    cfg = check_overrides([])
    cfg.optimizer._target_ = "pathlib.Path.touch"
    with pytest.raises(
        ConfigError, match=re.escape("_target_: pathlib.Path.touch is not code that configs/")
    ):
        refuse_files_and_code_outside_configs(cfg)
    control = TrainingControl(Path("outputs"))
    with pytest.raises(ConfigError):
        control.start(TrainForm(epochs="1", other=chain))
    assert control.job is None and not touched.exists() and not Path("outputs").exists()


def test_a_bad_setting_gets_train_py_s_own_sentence_and_nothing_starts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    control = TrainingControl(Path("outputs"))
    # model=_common: the sentence names the choice, from Hydra's runtime choices as in train.py
    (tmp_path / "cli").mkdir()
    cli = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "model=_common"],
        cwd=tmp_path / "cli",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    cli_sentence = cli.stderr.strip()  # the sentence alone
    assert cli.returncode == 1 and cli_sentence.startswith("model=_common is a base file")
    with pytest.raises(ConfigError) as refused:
        control.start(TrainForm(model="_common"))
    assert str(refused.value) == cli_sentence
    for form, sentence in [
        (TrainForm(epochs="0"), "trainer.epochs=0 must be a whole number from 1 to 100,000."),
        (TrainForm(lr="abc"), "optimizer.lr=abc "),
        (TrainForm(other="model.patch_size=3"), "model.image_size=16 is not divisible by "),
        # Refused by the page's allowlist before anything is composed
        (TrainForm(dataset="nope"), "dataset=nope is not one of caltech101, cifar10,"),
        (
            TrainForm(other="trainer.epoch=3"),
            "trainer.epoch=3 is not a setting the page accepts (did you mean trainer.epochs?",
        ),
    ]:
        with pytest.raises(ConfigError) as refused:
            control.start(form)
        assert str(refused.value).startswith(sentence) and "\n" not in str(refused.value)
    assert control.job is None and not Path("outputs").exists()


def test_no_override_can_run_a_shell_command(tmp_path, monkeypatch):
    """Shell syntax in the free field is refused as an unreadable override; a value that Hydra
    reads (quoted) reaches train.py as one argument, untouched, and the run trains. Either way, no
    file named pwned appears: train.py gets an argument list, never a shell."""
    monkeypatch.chdir(tmp_path)
    control = TrainingControl(Path("outputs"))
    for trick in SHELL_TRICKS:
        with pytest.raises(ConfigError, match=REFUSED_AS_UNKNOWN):
            control.start(TrainForm(other=trick))
    assert control.job is None
    # Values Hydra reads as strings, which a shell would run: $(...) and `...` in double quotes,
    # and a ; and && that a shell would reach if the words were joined into one line.
    quoted = 'dataset.root="outputs/$(touch pwned) `touch pwned`; touch pwned && touch pwned"'
    job = control.start(
        TrainForm(epochs="1", other=" ".join([quoted, "trainer.visualize=false", *TINY_RUN[1:]]))
    )
    assert isinstance(job.process.args, list) and job.process.args[2:4] == [
        "trainer.epochs=1",
        quoted,
    ]
    code = job.process.wait(timeout=300)
    everywhere = [tmp_path, ROOT, job.folder, Path(tempfile.gettempdir()), Path.home()]
    assert [p for p in everywhere if (p / "pwned").exists()] == []
    assert code == 0, job.last_words()
    saved = (job.folder / ".hydra" / "config.yaml").read_text()
    assert "root: outputs/$(touch pwned) `touch pwned`; touch pwned && touch pwned" in saved
    assert json.loads((job.folder / "summary.json").read_text())["status"] == "completed"


# Who may train


def test_training_needs_this_machine_or_a_password(tmp_path, monkeypatch):
    assert training_off_reason("127.0.0.1", None) is None
    assert (
        training_off_reason("localhost", None) is None and training_off_reason("::1", None) is None
    )
    assert training_off_reason("0.0.0.0", "secret") is None
    reason = training_off_reason("0.0.0.0", None)
    assert reason.startswith("Training from the page is off: the page listens on 0.0.0.0")
    assert PASSWORD_VARIABLE in reason
    (tmp_path / "outputs").mkdir()
    monkeypatch.chdir(tmp_path)
    served = []
    monkeypatch.setattr(
        app, "serve", lambda page, bench, host, port, auth: served.append((page, auth))
    )
    monkeypatch.delenv(PASSWORD_VARIABLE, raising=False)

    def handlers(argv):
        assert app.main(argv) == 0
        page, auth = served.pop()
        return {getattr(fn.fn, "__name__", "") for fn in page.fns.values()}, auth

    local, auth = handlers([])  # 127.0.0.1 by default: training, no login
    assert {"on_start", "on_stop", "on_resume", "on_tick"} <= local and auth is None
    network, auth = handlers(["--host", "0.0.0.0"])  # no password: no training handler at all
    assert not network & {"on_start", "on_stop", "on_resume", "on_tick"} and auth is None
    assert not handlers(["--no-training"])[0] & {"on_start"}
    monkeypatch.setenv(PASSWORD_VARIABLE, "s3cret")
    network, auth = handlers(["--host", "0.0.0.0"])  # with one: training, behind the login
    assert "on_start" in network and auth == ("workbench", "s3cret")


def test_behind_a_password_the_training_api_answers_only_after_the_login(tmp_path):
    """Gradio serves every handler as an API too: without the login it is refused (401)."""
    bench = Workbench([tmp_path])
    page = build_page(bench, training_part(bench, "0.0.0.0", "s3cret"))
    try:
        url = serve(page, bench, port=free_port(), block=False, auth=("workbench", "s3cret"))
        cookies = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        call = urllib.request.Request(
            f"{url}/gradio_api/call/on_start",
            method="POST",
            data=json.dumps({"data": [""] * 3 + ["0"] + [""] * 4}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError, match="401"):
            cookies.open(call, timeout=30)
        for password, answer in (("guess", "400"), ("s3cret", None)):
            login = urllib.parse.urlencode({"username": "workbench", "password": password}).encode()
            if answer:
                with pytest.raises(urllib.error.HTTPError, match=answer):
                    cookies.open(f"{url}/login", data=login, timeout=30)
            else:
                cookies.open(f"{url}/login", data=login, timeout=30)
        with cookies.open(call, timeout=30) as response:
            event = json.loads(response.read())["event_id"]
        with cookies.open(f"{url}/gradio_api/call/on_start/{event}", timeout=60) as response:
            assert (
                "trainer.epochs=0 must be a whole number from 1 to 100,000."
                in response.read().decode()
            )
    finally:
        page.close()


# In a real browser: one server and one browser for the tests below


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    if browser_missing():
        pytest.skip(browser_missing())
    from playwright.sync_api import sync_playwright

    home = tmp_path_factory.mktemp("webtrain")
    (home / "outputs").mkdir()
    port = free_port()
    server = subprocess.Popen(  # started in home, so that its runs land in home/outputs
        [sys.executable, str(ROOT / "app.py"), "--runs", "outputs", "--port", str(port)],
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
                str(home / "chromium"),
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
                viewport={"width": 1280, "height": 1000},
            )
            browser.route(
                "**/*",
                lambda route: (
                    route.continue_() if route.request.url.startswith(url) else route.abort()
                ),
            )
            page = browser.new_page()
            page.goto(url)
            open_train_tab(page)
            wait_text(page, "train-progress", "No run yet")  # the page has heard from the server
            yield page, home
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        for _ in range(3):  # runs that a failed test left training
            left = find_live_run(home / "outputs")
            if left is None:
                break
            os.kill(left.pid, signal.SIGKILL)
            time.sleep(1)


def open_train_tab(page) -> None:
    page.get_by_role("tab", name="Train").click()
    page.wait_for_selector("#train-start")


def fill_form(page, epochs: str, other: str) -> None:
    page.fill("#train-epochs textarea", epochs)
    page.fill("#train-other textarea", other)
    wait_text(page, "train-command", other.split()[-1])  # the command shown follows the form


def wait_text(page, element: str, needle: str, seconds: float = 30) -> None:
    """Until the element's text holds ``needle`` (the page refreshes once a second)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            "([e, n]) => document.querySelector('#' + e).innerText.includes(n)",
            arg=[element, needle],
            timeout=seconds * 1000,
        )
    except PlaywrightTimeout:
        pytest.fail(
            f"#{element} did not say {needle!r} within {seconds:.0f} s: it says "
            f"{text(page, element)!r}"
        )


def text(page, element: str) -> str:
    return page.inner_text(f"#{element}")


def epochs_shown(page) -> int:
    """Rows of the epochs table (the grid counts its heading as a row)."""
    return int(page.locator("#train-rows [role=grid]").get_attribute("aria-rowcount")) - 1


def line_points(page, plot: str) -> list[int]:
    """How many points each line of a plot has (Vega draws a line as M x,y L x,y ...)."""
    paths = page.locator(f"#{plot} g.mark-line path").evaluate_all(
        "ps => ps.map(p => p.getAttribute('d'))"
    )
    return [d.count("L") + 1 for d in paths if d]


@pytest.mark.slow
def test_in_a_browser_a_bad_setting_is_one_sentence_and_starts_nothing(browser_page):
    page, home = browser_page
    fill_form(page, "3", "model.patch_size=3")
    page.click("#train-start")
    wait_text(page, "train-message", "Not started", 30)
    assert text(page, "train-message").strip() == (
        "Not started: model.image_size=16 is not divisible by model.patch_size=3; choose a patch "
        "size that divides the image size (e.g. 2, 4, 8)."
    )
    assert list((home / "outputs").iterdir()) == []
    time.sleep(1.5)  # a refresh later, still nothing
    assert "No run yet" in text(page, "train-progress")


@pytest.mark.slow
def test_in_a_browser_train_a_run_watch_it_and_see_its_figures(browser_page, tmp_path):
    page, home = browser_page
    fill_form(page, "3", " ".join([*TINY_RUN[1:], WITH_FIGURES]))
    page.click("#train-start")
    wait_text(page, "train-message", "Started python ")
    assert "trainer.epochs=3 trainer.progress=false model.depth=1" in text(page, "train-message")
    wait_text(page, "train-progress", "Completed", 240)
    (folder,) = [p for day in (home / "outputs").iterdir() for p in day.iterdir()]
    assert f"Completed outputs/{folder.parent.name}/{folder.name}: 3 epochs" in text(
        page, "train-progress"
    )
    page.wait_for_function(
        "document.querySelectorAll('#train-figures img').length >= 5", timeout=30_000
    )
    assert epochs_shown(page) == 3 and line_points(page, "train-loss") == [3, 3]
    assert line_points(page, "train-lr-plot") == [3]
    figures = sorted(p.stem.replace("_", " ") for p in (folder / "plots").glob("*.png"))
    assert page.locator("#train-figures img").count() == len(figures) >= 5
    assert "weighted avg" in text(page, "train-per-class")
    # the finished run is now the page's run: picked above, its summary and figures shown
    page.wait_for_function(
        "f => document.querySelector('#run input').value.includes(f)",
        arg=str(folder.relative_to(home)),
        timeout=30_000,
    )
    wait_text(page, "summary", "completed after 3 epochs")
    page.screenshot(path=str(tmp_path / "training.png"), full_page=True)


@pytest.mark.slow
def test_in_a_browser_stop_a_run_then_resume_it_to_the_end(browser_page):
    page, home = browser_page
    epochs = 20  # 8 images a batch: about 0.3 s an epoch on an idle 2-core machine
    fill_form(
        page,
        str(epochs),
        " ".join([*TINY_RUN[1:], "trainer.batch_size=8", "trainer.visualize=false"]),
    )
    page.click("#train-start")
    wait_text(page, "train-message", f"trainer.epochs={epochs} ")
    name = re.search(r"hydra\.run\.dir=(\S+)", text(page, "train-message")).group(1)
    folder = home / name
    # One run at a time: a second start is refused with a sentence
    page.click("#train-start")
    wait_text(page, "train-message", "already training")
    assert text(page, "train-message").startswith(
        f"Not started: A run is already training in {name}"
    )
    assert len(list((home / "outputs").rglob("summary.json"))) <= 2  # test B's and this one
    # A reloaded page still follows the run: what the page knows of it is kept by the server
    page.reload()
    open_train_tab(page)
    seen = []  # epochs in the table, and points on the loss curves, as the page refreshes

    def grown():  # until the table and the curves have each shown two different numbers of epochs
        if f"Training {name}" in text(page, "train-progress"):
            seen.append((epochs_shown(page), max(line_points(page, "train-loss"), default=0)))
        return all(len({n for n in shown if n}) >= 2 for shown in zip(*seen)) if seen else False

    wait_until(grown, what="the curves growing on the page")
    for shown in zip(*seen):  # (table rows, loss-curve points) at each look: they only grow
        assert list(shown) == sorted(shown), seen

    # A server started again finds it too, by its lock and its summary
    found = find_live_run(home / "outputs")
    assert found is not None and found.folder == folder

    page.click("#train-stop")
    wait_text(page, "train-progress", "Interrupted", 120)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 2 <= summary["epochs_completed"] < epochs
    assert "stopped by SIGINT in epoch" in text(page, "train-progress")
    assert (folder / "checkpoints" / "last.pt").is_file()
    page.wait_for_function(
        "f => document.querySelector('#run input').value.includes(f)",
        arg=str(folder.relative_to(home)),
        timeout=30_000,
    )

    page.click("#train-resume")  # the stopped run is the picked one
    wait_text(page, "train-message", "Resumed", 30)
    assert f"resume=outputs/{folder.parent.name}/{folder.name}" in text(page, "train-message")
    wait_text(page, "train-progress", "Completed", 240)
    rows = pd.read_csv(folder / "metrics.csv")
    assert rows["epoch"].tolist() == list(range(1, epochs + 1))
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "completed" and len(summary["resumes"]) == 1
    assert epochs_shown(page) == epochs
