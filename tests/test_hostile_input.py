"""Hostile input to the page's Train tab and to train.py: every setting of the page's allowlist
tried with a hostile value of each kind, the leaks and escapes a review found, and numbers too
long to read. A refusal is one sentence that names the setting, quotes at most 80 characters of
the value and never the server's environment; nothing is composed, started or created."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from src.errors import ConfigError
from src.report.compare import flat_config
from src.runs.catalogue import find_runs
from src.training.checks import check_config
from src.training.ranges import LIMITS
from src.web.allowlist import allowlist
from src.web.train_control import TrainingControl
from src.web.train_form import TrainForm, refuse_for_the_page
from tests.conftest import ROOT, TINY_RUN, compose_config

SECRET = "s3cr3t-value-of-the-server"
ALLOWED = ROOT / "outputs"  # one of the folders a page's paths may point into

# Refused for every setting, whatever its kind.
FOR_EVERY_KIND = {
    "an interpolation": "${oc.env:SECRET_TOKEN}",
    "a nested interpolation": "'${oc.${dataset.name}:SECRET_TOKEN}'",
    "a value hidden in text": "'abc${oc.env:SECRET_TOKEN}'",
    "200,000 characters": "x" * 200_000,
    "a 5,000-digit number": "9" * 5000,
    "a 900-digit number": "9" * 900,
    "a sweep": "1,2",
    "a sweep function": "choice(1,2)",
    "a shell command": "$(touch pwned)",
    "a file outside": "/etc/passwd",
    "a path up and out": "../../../../tmp/evil",
}
# Refused for the settings of one kind.
FOR_KIND = {
    "choice": ["nope", "../configs/model/vit_tiny", "''"],
    "bool": ["yes", "1", "null"],
    "int": ["1.5", "nan", "-inf", "abc", "true", "[1]", "99999999999999999999"],
    "float": ["nan", "inf", "-inf", "abc", "[0.1]", "true"],
    "numbers": ["[nan,0.9]", "[0.9]", "abc", "[0.9,inf]"],
    "word": ["'a b'", "a/b", "'x;y'", "[a]", "true"],
    "path": [
        "/tmp/evil",
        "dataset_path/../../evil",
        "'~/evil'",
        "outputs/../../evil",
        "''",
    ],
    "uri": ["http://127.0.0.1:9", "sqlite:////tmp/evil.db", "file:///tmp/evil", "/tmp/evil"],
    "subpath": ["../up", "/abs/folder", "a/../../b", "'a b'"],
    "handle": ["../../x", "owner", "/owner/name", "owner/../x"],
}


def good_value(key: str) -> str:
    """A value of ``key``'s kind, in range, that the page accepts."""
    setting = allowlist()[key]
    limit = LIMITS.get(key)
    return {
        "choice": next((c for c in setting.choices if not c.startswith("_")), ""),
        "bool": "true",
        "int": "auto" if setting.choices else str(int(limit.low) if limit else 1),
        "float": str(limit.low if limit and limit.low > 0 else 0.5),
        "numbers": "[0.9,0.999]",
        "word": "cpu",
        "path": "dataset_path/photos",
        "uri": "sqlite:///outputs/mlflow.db",
        "subpath": "train/images",
        "handle": "owner/dataset-name",
    }[setting.kind]


def hostile_cases() -> list[tuple[str, str, str]]:
    cases = []
    for key, setting in sorted(allowlist().items()):
        cases += [(key, what, value) for what, value in FOR_EVERY_KIND.items()]
        cases += [(key, f"bad {setting.kind}", value) for value in FOR_KIND[setting.kind]]
    return cases


@pytest.mark.parametrize("key", sorted(allowlist()))
def test_every_setting_of_the_allowlist_takes_a_good_value(key):
    refuse_for_the_page(f"{key}={good_value(key)}", (ALLOWED, ROOT / "dataset_path"))


def test_every_setting_of_the_allowlist_refuses_every_hostile_value(monkeypatch):
    """The walk: each key x each hostile value; the refusal is checked sentence by sentence."""
    monkeypatch.setenv("SECRET_TOKEN", SECRET)
    cases = hostile_cases()
    for key, what, value in cases:
        with pytest.raises(ConfigError) as refused:
            refuse_for_the_page(f"{key}={value}", (ALLOWED,))
        sentence = str(refused.value)
        where = f"{key} with {what} ({value[:40]!r}): {sentence[:200]}"
        assert key.lstrip("+") in sentence, where
        assert "\n" not in sentence and SECRET not in sentence, where
        assert len(value) <= 80 or value[:81] not in sentence, where
        assert len(sentence) < 500, where
    assert len(cases) > 1000  # about 80 settings x 15 values: the count the docs quote


def test_the_page_does_not_echo_the_servers_environment(monkeypatch, tmp_path):
    """A review's leak: a nested resolver name got past the page's check, and the sentence showed
    the server's environment variable."""
    monkeypatch.setenv("SECRET_TOKEN", SECRET)
    control = TrainingControl(tmp_path / "outputs")
    for other in (
        "dataset.name=env trainer.device='${oc.${dataset.name}:SECRET_TOKEN}'",
        "trainer.device='${oc.${dataset.name}:SECRET_TOKEN}'",
        "trainer.device=${oc.env:SECRET_TOKEN}",
    ):
        with pytest.raises(ConfigError) as refused:
            control.start(TrainForm(other=other))
        assert SECRET not in str(refused.value)
    assert control.job is None and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "other, outside",
    [
        ("logger=mlflow logger.mlflow.tracking_uri=sqlite:///{outside}/evil_ml.db", "mlflow"),
        ("dataset=mnist dataset.root={outside}/evilroot", "root"),
        ("model.pretrained={outside}/weights.safetensors", "weights"),
    ],
)
def test_paths_outside_the_allowed_folders_are_refused_and_nothing_is_made(
    tmp_path, other, outside
):
    """Review: a tracker's store and a dataset's root outside the project were accepted, and the
    run made folders and files there."""
    elsewhere = tmp_path / outside
    control = TrainingControl(tmp_path / "outputs")
    with pytest.raises(ConfigError, match="is outside the folders the page may use"):
        control.start(TrainForm(other=other.format(outside=elsewhere)))
    assert control.job is None and not elsewhere.exists()


def test_a_folder_the_server_allows_is_accepted_and_a_symlink_out_of_it_is_not(tmp_path):
    allowed, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    allowed.mkdir(), elsewhere.mkdir()
    (allowed / "link").symlink_to(elsewhere)
    control = TrainingControl(tmp_path / "outputs", [allowed])
    form = TrainForm(dataset="folder", other=f"dataset.root={allowed}/pets")
    assert form.overrides(control.folders)[-1] == f"dataset.root={allowed}/pets"
    with pytest.raises(ConfigError, match="outside the folders"):
        TrainForm(other=f"dataset.root={allowed}/link/pets").overrides(control.folders)


@pytest.mark.parametrize(
    "form",
    [
        TrainForm(other="x" * 200_000),
        TrainForm(epochs="9" * 5000),
        TrainForm(seed="9" * 5000),
        TrainForm(seed="9" * 900),
        TrainForm(seed="99999999999999999999"),
    ],
    ids=["200k-token", "5000-digit-epochs", "5000-digit-seed", "900-digit-seed", "seed-past-2**32"],
)
def test_huge_values_get_a_short_sentence_not_a_traceback(tmp_path, form):
    """Review: a 200,000-character token was refused with all of it repeated, and epochs or seed
    of 5,000 digits raised Python's ValueError out of the page's check."""
    control = TrainingControl(tmp_path / "outputs")
    with pytest.raises(ConfigError) as refused:
        control.start(form)
    assert len(str(refused.value)) < 300 and control.job is None


def test_train_py_names_an_interpolated_setting_without_its_value(monkeypatch):
    """The command line may use interpolations; its sentences name them, not what they gave."""
    monkeypatch.setenv("SECRET_TOKEN", SECRET)
    cfg = compose_config(
        [*TINY_RUN, "dataset.name=env", "trainer.device='${oc.${dataset.name}:SECRET_TOKEN}'"]
    )
    with pytest.raises(ConfigError) as refused:
        check_config(cfg)
    assert str(refused.value).startswith("trainer.device=${oc.${dataset.name}:SECRET_TOKEN} is")
    assert SECRET not in str(refused.value)


def test_train_py_refuses_a_number_too_long_to_read_and_hides_the_environment(tmp_path):
    """Two real processes: a 5,000-digit seed (Hydra's parser raised ValueError) and a device
    from the environment (its value was echoed)."""
    env = {**os.environ, "SECRET_TOKEN": SECRET}
    runs = [
        subprocess.run(
            [sys.executable, "train.py", override, f"hydra.run.dir={tmp_path / 'run'}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        for override in ("seed=" + "9" * 5000, "trainer.device=${oc.env:SECRET_TOKEN}")
    ]
    for run in runs:
        assert run.returncode == 1 and "Traceback" not in run.stderr
        assert len(run.stderr.strip().splitlines()) == 1 and SECRET not in run.stderr
    assert "a number of more than 20 digits is out of range for seed" in runs[0].stderr
    assert runs[1].stderr.startswith("trainer.device=${oc.env:SECRET_TOKEN} is not known")


def test_a_path_typed_on_the_page_resolves_where_train_py_runs(tmp_path, monkeypatch):
    """Relative paths are read from where the server (and so train.py) runs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    control = TrainingControl(Path("outputs"))
    assert TrainForm(other="dataset.root=outputs/x").overrides(control.folders)
    with pytest.raises(ConfigError, match="outside the folders"):
        TrainForm(other="dataset.root=dataset_path/x").overrides(control.folders)


def test_the_reliability_page_counts_what_these_tests_try():
    """docs/guide/reliability.md quotes these counts; they must follow the tests."""
    from tests.test_recipes import test_bad_recipe_settings_are_named as recipes
    from tests.test_resume import BAD_SETTINGS

    page = (ROOT / "docs" / "guide" / "reliability.md").read_text()
    walk = hostile_cases()
    assert f"each of the {len(allowlist())} settings" in page
    assert f"the {len(FOR_EVERY_KIND)} values refused for every kind" in page
    assert f"({len(walk):,} together)" in page
    recipe_cases = len(recipes.pytestmark[0].args[1])
    assert f"{len(BAD_SETTINGS)} bad settings and {recipe_cases} bad recipe settings" in page


def test_a_saved_run_that_calls_a_resolver_is_listed_and_compared_without_reading_the_environment(
    tmp_path, monkeypatch
):
    """A run started with trainer.device=${oc.env:SECRET_TOKEN} (refused, so it failed) and an
    MLflow run, whose config reads MLFLOW_TRACKING_URI: listing the runs read its overrides by
    resolving them (a traceback when the variable was unset, its value when it was set), and the
    Compare tab resolved its config. Both now show what the run typed; plain ${key} references
    are still resolved."""
    monkeypatch.setenv("SECRET_TOKEN", SECRET)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"https://user:{SECRET}@mlflow.example")
    run_dir = tmp_path / "outputs" / "2026-12-06" / "12-00-00"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "summary.json").write_text('{"status": "failed"}')
    typed = "trainer.device=${oc.env:SECRET_TOKEN}"
    (run_dir / ".hydra" / "overrides.yaml").write_text(f"- {typed}\n")
    (run_dir / ".hydra" / "config.yaml").write_text(
        "trainer: {device: '${oc.env:SECRET_TOKEN}',\n"
        "          hidden: ['${oc.${dataset.name}:SECRET_TOKEN}']}\n"
        "logger: {tracking_uri: '${oc.env:MLFLOW_TRACKING_URI,sqlite:///mlflow.db}'}\n"
        "dataset: {name: env, image_size: 28}\n"
        "model: {image_size: '${dataset.image_size}'}\n"
    )
    for unset in (False, True):
        if unset:
            monkeypatch.delenv("SECRET_TOKEN")
        (run,) = find_runs([tmp_path / "outputs"])
        assert run.overrides == [typed]
        settings = flat_config(run, notes := [])
        assert SECRET not in str(settings) and not notes
        assert settings["trainer.device"] == "${oc.env:SECRET_TOKEN}"
        assert settings["logger.tracking_uri"].startswith("${oc.env:MLFLOW_TRACKING_URI")
        assert settings["model.image_size"] == 28
