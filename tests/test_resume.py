"""Never lose a run: exact resume, clean stops, kill -9, divergence, bad settings, unsafe
checkpoints."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from safetensors.torch import load_file

import src.training.loops
from src.errors import ConfigError, Diverged, OutOfDiskSpace
from src.runs.folder import RunFolder
from src.training.checks import check_config
from src.training.run import train
from src.training.stopping import TrainingStopped
from tests.conftest import CONFIGS, ROOT, TINY_RUN, compose_config, fill_the_disk_at_checkpoint

TIMING_COLUMNS = ["epoch_seconds", "images_per_second", "run_seconds"]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def stop_after_epoch(monkeypatch, epoch: int, sig=signal.SIGINT) -> None:
    """Send ourselves ``sig`` while epoch ``epoch`` is being logged, as a user's Ctrl-C would."""
    log_epoch = RunFolder.log_epoch

    def log_and_signal(self, row):
        log_epoch(self, row)
        if row["epoch"] == epoch:
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(RunFolder, "log_epoch", log_and_signal)


# Every technique that draws random numbers or keeps state across steps, for the resume test.
FULL_RECIPE = [
    "augment.randaugment_ops=2",
    "augment.random_erasing=0.25",
    "augment.mixup_alpha=0.8",
    "augment.cutmix_alpha=1.0",
    "augment.mix_prob=0.8",
    "augment.repeats=2",
    "trainer.ema=true",
    "trainer.ema_decay=0.9",
    "trainer.accumulate_steps=2",
]


@pytest.mark.parametrize("recipe", [[], FULL_RECIPE], ids=["plain", "full-recipe"])
def test_a_resumed_run_ends_bit_for_bit_like_an_uninterrupted_one(tmp_path, monkeypatch, recipe):
    run = TINY_RUN + [
        "trainer.epochs=4",
        "model.drop_path_rate=0.1",
        "model.drop_rate=0.1",
        *recipe,
    ]
    train(compose_config(run), tmp_path / "straight")

    stop_after_epoch(monkeypatch, 2)
    with pytest.raises(TrainingStopped, match=r"stopped by SIGINT in epoch 3; .* holds epoch 2"):
        train(compose_config(run), tmp_path / "stopped")
    monkeypatch.undo()
    stopped = tmp_path / "stopped"
    assert read_json(stopped / "summary.json")["status"] == "interrupted"
    assert torch.load(stopped / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2

    train(compose_config(run + [f"resume={stopped}"]), stopped)

    for name in ("weights/best.safetensors",):
        a, b = load_file(tmp_path / "straight" / name), load_file(stopped / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    last_a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    last_b = torch.load(stopped / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(last_a["model"][k], last_b["model"][k]) for k in last_a["model"])
    if recipe:
        assert last_a["ema"].keys() == last_b["ema"].keys()
        assert all(torch.equal(last_a["ema"][k], last_b["ema"][k]) for k in last_a["ema"])
    assert last_a["optimizer"]["state"][0]["exp_avg"].equal(
        last_b["optimizer"]["state"][0]["exp_avg"]
    )
    metrics_a = pd.read_csv(tmp_path / "straight" / "metrics.csv").drop(columns=TIMING_COLUMNS)
    metrics_b = pd.read_csv(stopped / "metrics.csv").drop(columns=TIMING_COLUMNS)
    pd.testing.assert_frame_equal(metrics_a, metrics_b, check_exact=True)
    summary_a, summary_b = (
        read_json(tmp_path / "straight" / "summary.json"),
        read_json(stopped / "summary.json"),
    )
    assert summary_b["status"] == "completed" and summary_b["resumes"][0]["from_epoch"] == 2
    assert (
        summary_a["test_acc"] == summary_b["test_acc"]
        and summary_a["best_epoch"] == summary_b["best_epoch"]
    )


def test_sigterm_stops_at_a_step_boundary_and_keeps_the_last_epoch(tmp_path, monkeypatch):
    stop_after_epoch(monkeypatch, 1, signal.SIGTERM)
    with pytest.raises(TrainingStopped, match="stopped by SIGTERM in epoch 2"):
        train(compose_config(TINY_RUN + ["trainer.epochs=3"]), tmp_path)
    assert read_json(tmp_path / "summary.json")["status"] == "interrupted"
    assert len(pd.read_csv(tmp_path / "metrics.csv")) == 1
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is put back


def test_a_run_stopped_while_testing_its_last_epoch_resumes_into_its_test(tmp_path, monkeypatch):
    """Its checkpoint holds the last epoch, but it has no test results: resuming it with the same
    trainer.epochs runs the test (a completed run is refused instead: the CLI test below)."""
    import src.training.run as train_module

    test_and_report = train_module.test_and_report

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "test_and_report", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(compose_config(TINY_RUN), tmp_path)
    assert read_json(tmp_path / "summary.json")["status"] == "interrupted"

    monkeypatch.setattr(train_module, "test_and_report", test_and_report)
    train(compose_config(TINY_RUN + [f"resume={tmp_path}"]), tmp_path)
    summary = read_json(tmp_path / "summary.json")
    assert summary["status"] == "completed" and "test_acc" in summary
    assert pd.read_csv(tmp_path / "metrics.csv")["epoch"].tolist() == [1, 2]


def test_a_run_that_diverges_fails_with_the_cause_and_keeps_its_best_weights(tmp_path, monkeypatch):
    real = src.training.loops.F.cross_entropy
    calls = {"n": 0}

    def nan_from_epoch_two(logits, labels, **kwargs):
        calls["n"] += 1
        loss = real(logits, labels, **kwargs)
        return loss * float("nan") if calls["n"] > 19 + 1 else loss  # 19 train steps, 1 val batch

    monkeypatch.setattr(src.training.loops.F, "cross_entropy", nan_from_epoch_two)
    with pytest.raises(
        Diverged, match=r"training diverged in epoch 2: .*optimizer.lr=0.001.*epoch 1"
    ):
        train(compose_config(TINY_RUN + ["trainer.epochs=3"]), tmp_path)
    summary = read_json(tmp_path / "summary.json")
    assert summary["status"] == "failed" and "diverged" in summary["error"]
    best = load_file(tmp_path / "weights" / "best.safetensors")
    assert all(torch.isfinite(t).all() for t in best.values())
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1


BAD_SETTINGS = [
    ("model.patch_size=3", "model.image_size=16 is not divisible by model.patch_size=3"),
    ("model.num_heads=3", "model.embed_dim=32 is not divisible by model.num_heads=3"),
    ("model.depth=0", "model.depth=0 must be a whole number from 1 to 1,000."),
    ("model.drop_path_rate=1.5", "model.drop_path_rate=1.5 must be in [0, 1)"),
    ("trainer.batch_size=0", "trainer.batch_size=0 must be a whole number from 1 to 1,048,576."),
    ("trainer.epochs=2.5", "trainer.epochs=2.5 must be a whole number from 1 to 100,000."),
    (
        "trainer.eval_batch_size=-8",
        "trainer.eval_batch_size=-8 must be a whole number from 1 to 1,048,576.",
    ),
    ("trainer.label_smoothing=1.0", "trainer.label_smoothing=1.0 must be in [0, 1)"),
    ("trainer.test_time_shift=9", "trainer.test_time_shift=9 must be a whole number from 0 to 8"),
    ("trainer.grad_clip=-1", "trainer.grad_clip=-1 must be a number from 0 to 1,000,000 (0 turns"),
    ("optimizer.lr=5", "optimizer.lr=5 is out of range; use a value in (0, 1), e.g. 1e-3."),
    ("optimizer.lr=0", "optimizer.lr=0 is out of range"),
    ("optimizer.weight_decay=-0.1", "optimizer.weight_decay=-0.1 must be a number from 0 to 10"),
    ("scheduler.warmup_epochs=-1", "scheduler.warmup_epochs=-1 must be a number from 0 to"),
    ("trainer.num_workers=-1", "trainer.num_workers=-1 must be a whole number from 0 to 1,024."),
    ("trainer.compile_mode=fastest", "trainer.compile_mode='fastest' is not known"),
    ("trainer.device=tpu", "trainer.device='tpu' is not known; use auto, cpu or cuda."),
    ("trainer.precision=fp16", "trainer.precision='fp16' is not known; use auto, fp32 or bf16."),
    # issue 21: a TypeError traceback from VisionTransformer(**kwargs), then attribute errors
    ("+model.dropout=0.1", "model.dropout is not a model setting (check its spelling, or drop it)"),
    ("dataset=_torchvision", "the dataset chosen is a base file that the dataset options share"),
    # A misspelled key added with + (Hydra's own hint) was ignored, or raised in AdamW/the schedule
    (
        "+trainer.epoch=3",
        "trainer.epoch is not among the trainer settings (did you mean trainer.epochs?)",
    ),
    ("+seeed=1", "seeed is not among the top-level settings (did you mean seed?)"),
    (
        "+dataset.roots=x",
        "dataset.roots is not among the settings of dataset=digits (did you mean dataset.root?)",
    ),
    (
        "+optimizer.momentum=0.9",
        "optimizer.momentum is not among the arguments of optimizer's torch.optim.AdamW",
    ),
    (
        "+scheduler.min_lrr=0",
        "scheduler.min_lrr is not among the arguments of scheduler's "
        "src.training.optim.warmup_cosine (did you mean scheduler.min_lr?)",
    ),
    # Text where a number or true/false goes: tracebacks, or taken as true
    ("seed=abc", "seed=abc must be a number, like its default 0."),
    ("seed=-1", "seed=-1 must be a whole number from 0 to 4,294,967,295."),
    ("model.embed_dim=abc", "model.embed_dim=abc must be a number, like its default 64."),
    (
        "optimizer.weight_decay=abc",
        "optimizer.weight_decay=abc must be a number, like its default 0.05.",
    ),
    (
        "optimizer.betas=abc",
        "optimizer.betas=abc must be a list of 2 numbers, like its default [0.9, 0.999]",
    ),
    ("trainer.compile=abc", "trainer.compile=abc must be true or false."),
    ("finetune.freeze_backbone=no", "finetune.freeze_backbone=no must be true or false."),
    ("augment.horizontal_flip=abc", "augment.horizontal_flip=abc must be true or false."),
    ("scheduler.min_lr=-1", "scheduler.min_lr=-1 must be a number from 0 to 1"),
    # issue 31: numbers out of range passed the checks, then failed after the run had started
    ("seed=99999999999999999999", "seed=99999999999999999999 must be a whole number from 0 to"),
    ("trainer.epochs=1000000", "trainer.epochs=1000000 must be a whole number from 1 to 100,000."),
    ("optimizer.weight_decay=nan", "optimizer.weight_decay=nan is not a finite number"),
    ("trainer.grad_clip=inf", "trainer.grad_clip=inf is not a finite number"),
]


@pytest.mark.parametrize("override, sentence", BAD_SETTINGS)
def test_bad_settings_stop_before_any_work_with_one_sentence(tmp_path, override, sentence):
    with pytest.raises(ConfigError) as err:
        train(compose_config(TINY_RUN + [override]), tmp_path)
    assert sentence in str(err.value) and "\n" not in str(err.value)
    assert read_json(tmp_path / "summary.json") == {"status": "failed", "error": str(err.value)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]  # nothing half-written


def test_a_base_model_file_is_not_a_model(tmp_path):
    with pytest.raises(
        ConfigError,
        match=(
            "the model chosen is a base file that the model options share, not a model by itself; "
            "choose one of vit_base, vit_c28, vit_c32, vit_digits, vit_small, vit_tiny."
        ),
    ):
        train(compose_config(["model=_common"]), tmp_path)
    assert read_json(tmp_path / "summary.json")["status"] == "failed"


@pytest.mark.parametrize(
    "override, sentence",
    [
        ("+model.num_classes=5", "model.num_classes=5 does not match the dataset, which has 10"),
        ("+model.in_chans=3", "model.in_chans=3 does not match the dataset, which has 1"),
    ],
)
def test_channels_and_classes_must_match_the_dataset(tmp_path, override, sentence):
    with pytest.raises(ConfigError, match=sentence):
        train(compose_config(TINY_RUN + [override]), tmp_path)
    assert read_json(tmp_path / "summary.json")["status"] == "failed"


def test_what_a_resume_may_change_includes_the_end_of_run_figures(tmp_path):
    """Issue 21: trainer.visualize (figures only) was refused on resume like a model setting."""
    from src.runs.resume import check_resumable

    saved = compose_config(TINY_RUN)
    check_resumable(saved, compose_config(TINY_RUN + ["trainer.visualize=false"]), tmp_path)
    with pytest.raises(ConfigError, match="model.depth was 1 in that run and would be 2 now"):
        check_resumable(saved, compose_config(TINY_RUN + ["model.depth=2"]), tmp_path)
    # another dataset is named as such (augment.horizontal_flip, its first changed key, was)
    with pytest.raises(
        ConfigError, match="dataset.name was digits in that run and would be folder now"
    ):
        check_resumable(saved, compose_config(TINY_RUN + ["dataset=folder"]), tmp_path)


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_carrying_code_is_refused_unread(tmp_path):
    train(compose_config(TINY_RUN + ["trainer.epochs=1"]), tmp_path)
    summary_before = (tmp_path / "summary.json").read_text()
    marker = tmp_path / "code-ran"
    payload = _RunsCode()
    payload.marker = marker
    last = tmp_path / "checkpoints" / "last.pt"
    torch.save({"model": payload, "epoch": 1}, last)  # torch.save's own archive, carrying code
    with pytest.raises(ConfigError, match="refused unread .*weights_only=True") as refused:
        train(compose_config(TINY_RUN + ["trainer.epochs=3", f"resume={tmp_path}"]), tmp_path)
    assert "weights_only=False" not in str(refused.value)  # not torch's advice to run the code
    with open(last, "wb") as f:  # a bare pickle, as an older torch.save wrote: not train.py's
        pickle.dump({"model": payload, "epoch": 1}, f, protocol=2)
    with pytest.raises(ConfigError, match=r"last.pt is damaged \(not the zip archive"):
        train(compose_config(TINY_RUN + ["trainer.epochs=3", f"resume={tmp_path}"]), tmp_path)
    last.write_text("hello")  # a KeyError traceback
    with pytest.raises(ConfigError, match=r"last.pt is damaged \(.*\); restore it"):
        train(compose_config(TINY_RUN + ["trainer.epochs=3", f"resume={tmp_path}"]), tmp_path)
    assert not marker.exists()
    assert (tmp_path / "summary.json").read_text() == summary_before  # nothing lost


# --- the command line, in a subprocess, as a user runs it ---------------------------------------


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_cli_resume_continues_in_place_and_refuses_changes_it_cannot_make(tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli(f"hydra.run.dir={run_dir}", *TINY_RUN).returncode == 0
    config_before = (run_dir / ".hydra" / "config.yaml").read_text()
    kept = {
        name: (run_dir / name).read_bytes()
        for name in (
            "weights/best.safetensors",
            "summary.json",
            "train.log",
            ".hydra/overrides.yaml",
        )
    }

    again = run_cli(f"hydra.run.dir={run_dir}", *TINY_RUN, "seed=5")  # the folder named twice
    assert again.returncode == 1 and "Traceback" not in again.stderr, again.stderr
    assert again.stderr.strip() == (
        f"{run_dir} already holds a run (status completed), and a new one would overwrite its "
        f"weights, checkpoint and metrics; choose another folder with hydra.run.dir=, or continue "
        f"that run with: python train.py resume={run_dir}"
    )
    assert {name: (run_dir / name).read_bytes() for name in kept} == kept

    missing = run_cli(f"resume={run_dir}-typo", "trainer.epochs=4")
    assert missing.returncode == 1 and missing.stderr.startswith(
        f"resume={run_dir}-typo: no such folder"
    )
    assert not Path(f"{run_dir}-typo").exists()  # not made by the lock on the way

    refused = run_cli(f"resume={run_dir}", "trainer.epochs=4", "model.depth=2")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert f"resume={run_dir}: model.depth was 1 in that run and would be 2 now" in refused.stderr
    with pytest.raises(ConfigError, match="has already trained 2 epochs; pass trainer.epochs=N"):
        train(
            compose_config(TINY_RUN + [f"resume={run_dir}"]), run_dir
        )  # the CLI's sentence, faster

    longer = run_cli(f"resume={run_dir}", "trainer.epochs=4")
    assert longer.returncode == 0, longer.stderr
    assert pd.read_csv(run_dir / "metrics.csv")["epoch"].tolist() == [1, 2, 3, 4]
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "completed" and summary["epochs_completed"] == 4
    assert summary["resumes"][0]["overrides"] == [f"resume={run_dir}", "trainer.epochs=4"]
    assert (run_dir / ".hydra" / "config.yaml").read_text() == config_before
    assert "resuming after epoch 2" in (run_dir / "train.log").read_text()


def check_run_folder_is_whole(run_dir: Path) -> int:
    """Every file a kill can reach parses; returns the epoch last.pt holds (0 if none yet)."""
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "running"
    epoch = 0
    if (run_dir / "checkpoints" / "last.pt").exists():
        epoch = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"]
        load_file(run_dir / "weights" / "best.safetensors")
        epochs = pd.read_csv(run_dir / "metrics.csv")["epoch"].tolist()
        assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) in (epoch, epoch + 1)
    return epoch


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_stop_the_user_asked_for_says_only_its_sentence(tmp_path, sig):
    """Issue 32: a SIGTERM'd `python train.py` printed Hydra's "Error executing job with
    overrides" and HYDRA_FULL_ERROR lines around the resume sentence."""
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "train.py", *TINY_RUN, "trainer.epochs=1000", f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics, deadline = run_dir / "metrics.csv", time.monotonic() + 120
    while time.monotonic() < deadline and not (
        metrics.exists() and len(metrics.read_text().splitlines()) > 1
    ):
        time.sleep(0.05)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr  # not 0: the run did not end
    name = signal.Signals(sig).name
    assert re.fullmatch(
        rf"stopped by {name} in epoch \d+; checkpoints/last.pt holds epoch \d+, so resume "
        rf"with: python train.py resume={re.escape(str(run_dir))}\n",
        stderr,
    ), stderr
    assert read_json(run_dir / "summary.json")["status"] == "interrupted"
    assert not (run_dir / ".lock").exists()  # given back before the exit


@pytest.mark.slow
def test_kill_9_at_any_moment_leaves_a_loadable_run_that_resumes(tmp_path):
    run_dir = tmp_path / "run"
    args = [*TINY_RUN, "trainer.epochs=1000", f"hydra.run.dir={run_dir}"]
    reached = 0
    for attempt, extra_delay in enumerate((0.0, 0.07, 0.15, 0.23)):
        command = args if attempt == 0 else [f"resume={run_dir}", "trainer.progress=false"]
        process = subprocess.Popen(
            [sys.executable, "train.py", *command],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        # Wait until this process has logged two new epochs, so it has checkpointed one.
        while time.monotonic() < deadline:
            time.sleep(0.05)
            metrics = run_dir / "metrics.csv"
            if metrics.exists() and len(metrics.read_text().splitlines()) - 1 >= reached + 3:
                break
        time.sleep(extra_delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        epoch = check_run_folder_is_whole(run_dir)
        assert epoch >= reached + 1  # the resumed process carried on from the checkpoint
        reached = epoch


# --- a full disk (issue 21) ----------------------------------------------------------------------


def test_a_full_disk_gets_one_sentence_with_the_folder_and_the_resume_command(
    tmp_path, monkeypatch
):
    run_dir = tmp_path / "run"
    fill_the_disk_at_checkpoint(monkeypatch, 2)
    with pytest.raises(OutOfDiskSpace) as err:
        train(compose_config(TINY_RUN + ["trainer.visualize=false"]), run_dir)
    assert not isinstance(err.value, ConfigError)  # not a setting: its own kind of failure
    assert str(err.value) == (
        f"the disk holding {run_dir} is full, so the run stopped; free some space, then resume it "
        f"(its checkpoint holds epoch 1) with: python train.py resume={run_dir}"
    )
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chain of tracebacks
    assert read_json(run_dir / "summary.json")["error"] == str(err.value)
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    assert not list(run_dir.rglob("*.tmp"))  # the unfinished file is gone
    monkeypatch.undo()
    train(compose_config(TINY_RUN + ["trainer.visualize=false", f"resume={run_dir}"]), run_dir)
    assert read_json(run_dir / "summary.json")["status"] == "completed"


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 550 KB tmpfs (root only, where mounting is allowed; skipped elsewhere)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=550k", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and mount rights)")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.slow
def test_a_real_full_disk_ends_the_command_with_one_sentence(small_tmpfs):
    """On a 550 KB tmpfs this model (87 KB of weights, a 294 KB checkpoint) fills the disk at its
    second checkpoint, whose new copy is written beside the first; before, the user saw a chain
    of three tracebacks."""
    run_dir = small_tmpfs / "run"
    shown = run_cli(
        f"hydra.run.dir={run_dir}",
        *TINY_RUN,
        "trainer.epochs=5",
        "model.embed_dim=48",
        "model.num_heads=3",
    )
    assert shown.returncode == 1 and "Traceback" not in shown.stderr, shown.stderr
    assert f"the disk holding {run_dir} is full, so the run stopped" in shown.stderr
    assert f"python train.py resume={run_dir}" in shown.stderr
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] >= 1


def test_a_resumed_run_is_checked_against_its_own_options_not_the_resume_commands():
    """Resuming a dataset=folder run was refused: the checks took the dataset's option from the
    command (resume=RUN, so digits) and found dataset.bad_images unknown to digits."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        command = compose("config", overrides=["resume=outputs/x"], return_hydra_config=True)
        run = compose("config", overrides=["dataset=folder", "dataset.root=dataset_path"])
    before, HydraConfig.instance().cfg = HydraConfig.instance().cfg, None
    try:
        HydraConfig.instance().set_config(command)
        check_config(run)  # raised "dataset.bad_images is not among the settings of dataset=digits"
    finally:
        HydraConfig.instance().cfg = before
