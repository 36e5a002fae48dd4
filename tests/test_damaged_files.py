"""Damaged run files (issue 31, item 3): every file that resume, `inference.py --report`, `--list`,
predicting, the web page or `python -m deploy` reads from a run folder, damaged three ways (empty,
cut to its first half, 256 random bytes), gives one sentence naming the file and what to do, a
non-zero exit (a listing lists the run as damaged instead), and leaves the folder as it was.

The cells call the functions the commands call (fast); one real process per command proves the
exit status and that the sentence is all it prints. The table on docs/guide/reliability.md is
``docs_rows()`` of these parameters, checked below.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import inference
from src.errors import DamagedFile
from src.runs.catalogue import Run, find_runs
from src.runs.resume import check_resumable, merge_overrides, saved_overrides
from src.training.run import train
from src.web.train_control import TrainingControl
from src.web.workbench import Workbench, run_summary, runs_for_page
from tests.conftest import ROOT, compose_config

FIXTURE = (
    ROOT / "tests" / "fixtures" / "run_before_rooms"
)  # a whole run (tests/test_old_run_folders)
IMAGE = ROOT / "examples" / "digits" / "3_004.png"
RELIABILITY_PAGE = ROOT / "docs" / "guide" / "reliability.md"


DAMAGES = ["empty", "truncated", "garbage"]


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(
        {
            "empty": b"",
            "truncated": data[: len(data) // 2],
            "garbage": random.Random(0).randbytes(256),
            # the issue's cases: text that its parser refuses
            "text garbage": b"{not json, not yaml: [",
            "no header": b"\n".join(data.splitlines()[1:]) + b"\n",
        }[how]
    )


def snapshot(folder: Path) -> dict[str, str]:
    """Every file's sha256 and every folder, by path in ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "folder"
        for p in sorted(folder.rglob("*"))
    }


# What each file's sentence says is wrong with it, for each kind of damage.
JSON = {"empty": "empty", "truncated": "cut short", "garbage": "not text"}
WEIGHTS = {
    "empty": "not a whole safetensors file: header too small",
    "truncated": "not a whole safetensors file: incomplete metadata, file not fully covered",
    "garbage": "not a whole safetensors file: header too large",
}
WHAT = {
    "summary.json": {
        **JSON,
        "text garbage": "not JSON: Expecting property name enclosed in double quotes",
    },  # fmt: skip
    "model.json": JSON,
    "metrics.csv": {
        "empty": "empty",
        "truncated": "cut short: row 1 has 6 values, the header 9",
        "garbage": "not text",
        "no header": "not a CSV table with a header naming its epoch column",
    },
    "metrics_per_class.csv": {
        "empty": "empty",
        "truncated": "cut short: row 8 has 1 value, the header 5",
        "garbage": "not text",
    },
    ".hydra/config.yaml": {
        "empty": "empty",
        "truncated": "not YAML: could not find expected ':' at line 40",
        "garbage": "not text",
        "text garbage": "not YAML: expected the node content, but found '<stream end>' at line 1",
    },
    ".hydra/overrides.yaml": {
        "empty": "empty",
        "truncated": "line 3, 'trai', is not a key=value override",
        "garbage": "not text",
    },
    "weights/best.safetensors": WEIGHTS,
    "checkpoints/last.pt": dict.fromkeys(JSON, "not the zip archive torch.save writes"),
}
RESTORE = "restore it from a copy of the run folder"
FIX = {
    "summary.json": f"{RESTORE}, or start a new run",
    "metrics.csv": f"{RESTORE}, or start a new run",
    ".hydra/overrides.yaml": f"{RESTORE}, or start a new run",
    "checkpoints/last.pt": f"{RESTORE}, or start a new run",
    "model.json": f"{RESTORE}, or pick another run",
    "weights/best.safetensors": f"{RESTORE}, or pick another run",
    ".hydra/config.yaml": f"{RESTORE} (it says which data the run used)",
    "metrics_per_class.csv": "write it again with: python inference.py --run RUN --report",
}
# Where a command says another thing of a file than WHAT and FIX do.
DEPLOY = "python -m deploy"
RESUME = "train.py resume="
OTHER_WHAT = {
    (DEPLOY, "weights/best.safetensors"): dict.fromkeys(DAMAGES, "not a whole safetensors file"),
    (DEPLOY, "model.onnx"): dict.fromkeys(DAMAGES, "not a model onnxruntime can load: …"),
}
OTHER_FIX = {
    (RESUME, "weights/best.safetensors"): f"{RESTORE}, or start a new run",  # tested at its end
    (DEPLOY, "model.json"): "copy the run's model.json beside its model.onnx again",
    (DEPLOY, "weights/best.safetensors"): (
        f"{RESTORE}, or predict from a folder holding only model.onnx and model.json"
    ),
    (DEPLOY, "model.onnx"): "export it again with `python inference.py --run RUN --export-onnx`",
}


def what_and_fix(command: str, name: str) -> tuple[dict[str, str], str]:
    what = OTHER_WHAT.get((command, name), WHAT.get(name))
    return what, OTHER_FIX.get((command, name), FIX.get(name))


def pattern(run: Path, name: str, how: str, command: str = "") -> str:
    """The sentence, as a regular expression (onnxruntime's own reason is any text)."""
    what, fix = what_and_fix(command, name)
    text = f"{run / name} is damaged ({what[how]}); {fix.replace('RUN', str(run))}."
    return re.escape(text).replace("…", ".+")


def says(text: str, run: Path, name: str, how: str, command: str = "") -> bool:
    return re.fullmatch(pattern(run, name, how, command), text) is not None


# --- the commands, as the cells call them ---------------------------------------------------


def resume(run: Path) -> None:
    """`python train.py resume=RUN trainer.epochs=3`, as src/training/job.py composes it."""
    saved = saved_overrides(run)
    cfg = compose_config(merge_overrides(saved, [f"resume={run}", "trainer.epochs=3"]))
    check_resumable(compose_config(saved), cfg, run)
    train(cfg, run)


def said(command: list[str], capsys) -> str:
    """inference.py's error sentence, after checking its exit status and that it printed only
    that."""
    assert inference.main(command) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1, (out, err)
    return err.removeprefix("error: ").rstrip("\n")


RESUME_FILES = [
    "summary.json",
    "metrics.csv",
    ".hydra/overrides.yaml",
    "checkpoints/last.pt",
    "weights/best.safetensors",  # tested at the resumed run's end
]
REPORT_FILES = [
    "summary.json",
    "metrics.csv",
    ".hydra/config.yaml",
    "model.json",
    "weights/best.safetensors",
]
LIST_FILES = ["summary.json", "model.json", ".hydra/overrides.yaml"]
PREDICT_FILES = ["model.json", "weights/best.safetensors"]
ISSUE_CASES = {  # the tracebacks issue 31 found, as they were reported
    "resume": [("summary.json", "text garbage"), ("metrics.csv", "no header")],
    "report": [(".hydra/config.yaml", "text garbage")],
}


def cells(files: list[str], command: str = "") -> list:
    extra = ISSUE_CASES.get(command, [])
    return [(name, how) for name in files for how in DAMAGES] + extra


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A copy of the healthy fixture run where runs are kept: outputs/DATE/TIME."""
    folder = tmp_path / "outputs" / "2026-12-06" / "04-26-35"
    shutil.copytree(FIXTURE, folder)
    return folder


def damaged(run: Path, name: str, how: str) -> dict[str, str]:
    damage(run / name, how)
    return snapshot(run)


@pytest.mark.parametrize("name, how", cells(RESUME_FILES, "resume"))
def test_resume(run, name, how):
    before = damaged(run, name, how)
    with pytest.raises(DamagedFile) as refused:
        resume(run)
    assert says(str(refused.value), run, name, how, RESUME)
    assert snapshot(run) == before


@pytest.mark.parametrize("name, how", cells(REPORT_FILES, "report"))
def test_report(run, name, how, capsys):
    before = damaged(run, name, how)
    assert says(said(["--run", str(run), "--report", "--device", "cpu"], capsys), run, name, how)
    assert snapshot(run) == before


@pytest.mark.parametrize("name, how", cells(PREDICT_FILES))
def test_predict(run, name, how, capsys):
    before = damaged(run, name, how)
    assert says(said(["--run", str(run), "--images", str(IMAGE)], capsys), run, name, how)
    assert snapshot(run) == before


def stopped_at_a_bad_setting(run: Path) -> None:
    """Its summary says only that it failed: the overrides are in .hydra/overrides.yaml alone."""
    (run / "summary.json").write_text(json.dumps({"status": "failed", "error": "a bad setting"}))


@pytest.mark.parametrize("name, how", cells(LIST_FILES))
def test_list(run, name, how, capsys):
    """The listing goes on: the run is listed as damaged, and its sentence follows the table."""
    if name == ".hydra/overrides.yaml":
        stopped_at_a_bad_setting(run)
    before = damaged(run, name, how)
    assert inference.main(["--list", "--roots", str(run.parents[1])]) == 0
    out, err = capsys.readouterr()
    assert re.search(rf"\bdamaged: {re.escape(name)} +{re.escape(str(run))}$", out, re.M), out
    assert err.endswith("\n") and says(err[:-1], run, name, how)
    assert snapshot(run) == before


# --- the web page ---------------------------------------------------------------------------

PAGE_TABLE_FILES = LIST_FILES
PAGE_SUMMARY_FILES = ["summary.json", "model.json", "metrics.csv", "metrics_per_class.csv"]
PAGE_TEST_IMAGE_FILES = [".hydra/config.yaml"]
PAGE_RESUME_FILES = [".hydra/overrides.yaml"]


@pytest.mark.parametrize("name, how", cells(PAGE_TABLE_FILES))
def test_page_runs_table(run, name, how):
    if name == ".hydra/overrides.yaml":
        stopped_at_a_bad_setting(run)
    before = damaged(run, name, how)
    table = runs_for_page(find_runs([run.parents[1]]))
    assert table.loc[0, "status"].endswith(f"damaged: {name}")
    assert snapshot(run) == before


@pytest.mark.parametrize("name, how", cells(PAGE_SUMMARY_FILES))
def test_page_run_summary(run, name, how):
    """The picked run's paragraph ends with the sentence (its curves or per-class table are
    empty)."""
    before = damaged(run, name, how)
    paragraph = run_summary(Run.read(run))
    assert says(paragraph[paragraph.index(f" {run / name} is damaged") + 1 :], run, name, how)
    assert snapshot(run) == before


@pytest.mark.parametrize("name, how", cells(PREDICT_FILES))
def test_page_predicting(run, name, how):
    before = damaged(run, name, how)
    shown = Workbench([run.parents[1]]).predict_file(str(run), str(IMAGE), topk=1)
    assert says(shown.message, run, name, how) and shown.top is None
    assert snapshot(run) == before


@pytest.mark.parametrize("name, how", cells(PAGE_TEST_IMAGE_FILES))
def test_page_test_images(run, name, how):
    before = damaged(run, name, how)
    shown = Workbench([run.parents[1]]).predict_example(str(run), 0, topk=1)
    assert says(shown.message, run, name, how) and shown.top is None
    assert snapshot(run) == before


@pytest.mark.parametrize("name, how", cells(PAGE_RESUME_FILES))
def test_page_resume(run, name, how, tmp_path):
    """The Train tab's Resume: refused before train.py starts (the other files a resume reads are
    train.py's to refuse, in the sentence the tab then shows)."""
    before = damaged(run, name, how)
    with pytest.raises(DamagedFile) as refused:
        TrainingControl(tmp_path / "page-outputs").resume(run)
    assert says(str(refused.value), run, name, how)
    assert snapshot(run) == before


# --- python -m deploy ------------------------------------------------------------------------

DEPLOY_FILES = ["model.json", "model.onnx", "weights/best.safetensors"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """The fixture run with its model.onnx (`inference.py --export-onnx`)."""
    pytest.importorskip("onnxscript", reason="the export needs requirements-export.txt")
    pytest.importorskip("onnxruntime", reason="the predictor needs requirements-deploy.txt")
    from src.predict.onnx_export import export_onnx

    folder = tmp_path_factory.mktemp("exported") / "run"
    shutil.copytree(FIXTURE, folder)
    export_onnx(Run.read(folder), log=lambda line: None)
    return folder


@pytest.mark.parametrize("name, how", cells(DEPLOY_FILES))
def test_deploy(exported, tmp_path, name, how, capsys):
    from deploy.__main__ import main as deploy_main

    run = Path(shutil.copytree(exported, tmp_path / "run"))
    before = damaged(run, name, how)
    assert deploy_main(["--run", str(run), "--images", str(IMAGE)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.endswith("\n")
    assert says(err[len("error: ") : -1], run, name, how, DEPLOY)
    assert snapshot(run) == before


# --- one real process per command -------------------------------------------------------------


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_the_commands_print_the_sentence_alone_and_exit_1(run, exported, tmp_path):
    """train.py resume=, inference.py --report and --list, python -m deploy, as a user runs them
    (--list lists the run and exits 0), side by side."""
    damage(run / "summary.json", "garbage")
    other = Path(shutil.copytree(FIXTURE, tmp_path / "other" / "run"))
    damage(other / ".hydra/config.yaml", "text garbage")
    onnx = Path(shutil.copytree(exported, tmp_path / "exported"))
    damage(onnx / "model.onnx", "truncated")
    before = {folder: snapshot(folder) for folder in (run, other, onnx)}
    started = {
        "resume": start("train.py", f"resume={run}", "trainer.epochs=3"),
        "list": start("inference.py", "--list", "--roots", str(run.parents[1])),
        "report": start("inference.py", "--run", str(other), "--report", "--device", "cpu"),
        "deploy": start("-m", "deploy", "--run", str(onnx), "--images", str(IMAGE)),
    }
    ended = {name: (p.wait(timeout=300), *p.communicate()) for name, p in started.items()}

    code, out, err = ended["resume"]
    assert code == 1 and err.endswith("\n") and says(err[:-1], run, "summary.json", "garbage"), err
    code, out, err = ended["list"]
    assert code == 0 and f"damaged: summary.json {run}" in out
    assert says(err[:-1], run, "summary.json", "garbage")
    for name, folder, file, how, by in (
        ("report", other, ".hydra/config.yaml", "text garbage", ""),
        ("deploy", onnx, "model.onnx", "truncated", DEPLOY),
    ):
        code, out, err = ended[name]
        assert code == 1 and out == "" and err.startswith("error: "), err[-2000:]
        assert says(err[len("error: ") : -1], folder, file, how, by), err
    assert {folder: snapshot(folder) for folder in before} == before


# --- the table on the docs page ---------------------------------------------------------------

COMMANDS = {  # each command (as the docs name it) -> the files its cells damage, and its cells
    RESUME: (RESUME_FILES, cells(RESUME_FILES, "resume")),
    "inference.py --report": (REPORT_FILES, cells(REPORT_FILES, "report")),
    "inference.py --list": (LIST_FILES, cells(LIST_FILES)),
    "inference.py --images": (PREDICT_FILES, cells(PREDICT_FILES)),
    "the page": (
        sorted({*PAGE_TABLE_FILES, *PAGE_SUMMARY_FILES, *PREDICT_FILES, *PAGE_TEST_IMAGE_FILES}),
        cells(PAGE_TABLE_FILES)
        + cells(PAGE_SUMMARY_FILES)
        + cells(PREDICT_FILES)
        + cells(PAGE_TEST_IMAGE_FILES)
        + cells(PAGE_RESUME_FILES),
    ),
    DEPLOY: (DEPLOY_FILES, cells(DEPLOY_FILES)),
}
REAL_PROCESSES = {RESUME: 1, "inference.py --report": 1, "inference.py --list": 1, DEPLOY: 1}


def docs_rows() -> list[str]:
    """The damaged-files table of docs/guide/reliability.md: a row per file and what to do."""
    rows: dict[tuple[str, str], list[str]] = {}
    for command, (files, _) in COMMANDS.items():
        for name in files:
            what, fix = what_and_fix(command, name)
            key = (name, " | ".join(what[how] for how in DAMAGES) + f" | {fix}")
            rows.setdefault(key, []).append(command if command == "the page" else f"`{command}`")
    return [f"| `{name}` | {', '.join(by)} | {said} |" for (name, said), by in rows.items()]


def test_the_reliability_page_shows_the_table_and_the_counts_the_tests_try():
    page = RELIABILITY_PAGE.read_text()
    missing = [row for row in docs_rows() if row not in page]
    assert not missing, "rows missing from the page:\n" + "\n".join(missing)
    for command, (_, tried) in COMMANDS.items():
        row = f"| {command} | {len(tried)} | {REAL_PROCESSES.get(command, 0)} |"
        assert row in page.replace("`", ""), row
