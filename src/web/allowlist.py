"""What the page's Train tab accepts: the settings it knows, each value checked against its kind
and range before Hydra composes anything.

A password lets people train, not read the server's files or environment. So the page takes only
the settings listed here (derived from configs/: the groups' options and every key their files
and config.yaml hold, less the ones that name code or describe a dataset's files), no
interpolation of any form (``${oc.env:TOKEN}`` would put the server's environment in a
sentence), and paths only under the folders the server was started to allow. Anything it does not
recognise is refused; the command line can do all of it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import unquote

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

from src.errors import ConfigError
from src.runs.resume import dotted_keys
from src.training.checks import COMPILE_MODES, CONFIGS, config_options, option_settings
from src.training.ranges import LIMITS, check_range, refuse_long_numbers, shown

PROJECT = CONFIGS.parent
DEFAULT_FOLDERS = (PROJECT / "dataset_path", PROJECT / "outputs")
GROUPS = ("dataset", "model", "optimizer", "scheduler", "logger")
MAX_LENGTH = 1000  # characters of one override: a long path fits, a 200,000-character one not
WORD = re.compile(r"[\w.:-]{1,80}")  # a device, a precision, a project's name: no / nor spaces
# Keys that name code, or describe where a dataset's files are and how they are split: the
# option chosen says those, and the command line can change them.
LEFT_OUT = re.compile(
    r"(^|\.)(_\w+_|name|source|class_name|class_names|folder|files|splits(\..*)?|tags)$"
)
PATHS = {"dataset.root", "dataset.cache_dir", "model.pretrained", "logger.mlflow.artifact_location"}
# Keys whose values are words from a known list, and those that are a number or "auto".
CHOICES = {
    "trainer.compile_mode": COMPILE_MODES,
    "model.pos_embed": ("learned", "sincos"),
    "model.global_pool": ("token", "avg"),
}
NUMBER_OR_AUTO = {
    "trainer.num_workers",
    "dataset.num_workers",
    "augment.crop_padding",
    "dataset.channels",
}


@dataclass(frozen=True)
class Setting:
    """One setting the page accepts. kind: choice, bool, int, float, numbers (a list of them,
    like optimizer.betas), word, path (under the allowed folders), subpath (a relative path
    inside dataset.root), handle (a Kaggle dataset's owner/name) or uri (an MLflow store)."""

    key: str
    kind: str
    choices: tuple[str, ...] = ()
    nullable: bool = False  # null (None) is a value it may take: its default is null somewhere
    length: int = 0  # numbers: how many


@cache
def allowlist() -> dict[str, Setting]:
    """Every setting the page accepts, by the key typed (``+experiment`` for the preset)."""
    settings = {
        group: Setting(group, "choice", _options(group)) for group in (*GROUPS, "+experiment")
    }
    for key, defaults in _settings_and_defaults().items():
        if not LEFT_OUT.search(key):
            settings[key] = _setting(key, defaults)
    return settings


def _options(group: str) -> tuple[str, ...]:
    """Every file of configs/GROUP/: base files (_*.yaml) too, whose own sentence train.py's
    checks give (they list the options)."""
    return tuple(config_options(group.lstrip("+"), bases=True))


def _settings_and_defaults() -> dict[str, list]:
    """Each dotted key of config.yaml and of the groups' options, with its defaults (one per
    file that sets it; an interpolation replaced by the default of what it names)."""
    base = OmegaConf.to_container(OmegaConf.load(CONFIGS / "config.yaml"), resolve=False)
    for key in ("defaults", "hydra", "resume"):
        base.pop(key)
    found: dict[str, list] = {key: [value] for key, value in dotted_keys(base).items()}
    for group in GROUPS:
        for option in config_options(group):
            for key, value in dotted_keys(option_settings(group, option), f"{group}.").items():
                found.setdefault(key, []).append(value)
    for key, values in found.items():
        found[key] = [_followed(value, found) for value in values]
    return found


def _followed(value, found: dict[str, list]):
    """``${dataset.model_input.image_size}`` -> that key's first default that is not one."""
    if isinstance(value, str) and re.fullmatch(r"\$\{[\w.]+\}", value):
        named = [v for v in found.get(value[2:-1], []) if not str(v).startswith("${")]
        return named[0] if named else value
    return value


def _setting(key: str, defaults: list) -> Setting:
    nullable = any(d is None for d in defaults)
    known = [d for d in defaults if d is not None]
    if key in PATHS or key.endswith(".tracking_uri") or key.endswith(".subdir"):
        kind = "uri" if key.endswith(".tracking_uri") else "path"
        kind = "subpath" if key.endswith(".subdir") else kind
        return Setting(key, kind, nullable=nullable)
    if key in CHOICES:
        return Setting(key, "choice", CHOICES[key], nullable)
    if key.endswith(".handle"):
        return Setting(key, "handle", nullable=nullable)
    if known and all(isinstance(d, bool) for d in known):
        return Setting(key, "bool", nullable=nullable)
    fractional = key in LIMITS and not LIMITS[key].whole  # an int default, fractions welcome
    whole = (known and all(map(_is_int, known))) or (not known and key in LIMITS)  # null default
    if key in NUMBER_OR_AUTO or (whole and not fractional):
        return Setting(key, "int", ("auto",) if key in NUMBER_OR_AUTO else (), nullable)
    if known and all(_is_number(d) for d in known):
        return Setting(key, "float", nullable=nullable)
    if known and all(isinstance(d, list) and all(map(_is_number, d)) for d in known):
        return Setting(key, "numbers", nullable=nullable, length=len(known[0]))
    return Setting(key, "word", nullable=nullable)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_value(key: str, value: object, folders: Sequence[Path]) -> None:
    """Raises the sentence for a value that is not of ``key``'s kind, range or folders."""
    setting = allowlist()[key]
    if value is None:
        if setting.nullable:
            return
        raise ConfigError(
            f"{key}=null: {key} needs a value; leave the field empty for its default."
        )
    for number in value if isinstance(value, list) else [value]:
        check_range(key, number)  # first: the sentence train.py gives for a number out of range
    if setting.kind in ("path", "uri", "subpath", "handle"):
        _check_place(setting, value, folders)
    elif not _of_kind(setting, value):
        raise ConfigError(f"{key}={shown(value)} is not {_kind_words(setting)}.")


def _of_kind(setting: Setting, value: object) -> bool:
    kind = setting.kind
    if kind == "choice" or value in setting.choices:
        return value in setting.choices
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return _is_int(value)
    if kind == "float":
        return _is_number(value)
    if kind == "numbers":
        return (
            isinstance(value, list) and len(value) == setting.length and all(map(_is_number, value))
        )
    return not isinstance(value, (bool, list, dict)) and bool(WORD.fullmatch(str(value)))


def _kind_words(setting: Setting) -> str:
    if setting.kind == "choice":
        return f"one of {', '.join(c for c in setting.choices if not c.startswith('_'))}"
    return {
        "bool": "true or false",
        "int": "a whole number" + (" or auto" if setting.choices else ""),
        "float": "a number",
        "numbers": f"a list of {setting.length} numbers, e.g. [0.9,0.999]",
        "word": "a word of letters, digits and . _ : - (at most 80)",
    }[setting.kind]


def _check_place(setting: Setting, value: object, folders: Sequence[Path]) -> None:
    """A path under the allowed folders; an MLflow store as a SQLite file or a folder there; a
    subdir that stays inside dataset.root; a Kaggle handle (owner/name)."""
    key, text = setting.key, str(value)
    if not isinstance(value, str) or "\\" in text or "\0" in text:
        raise ConfigError(f"{key}={shown(value)} is not a path; give a folder or file by name.")
    if setting.kind in ("subpath", "handle"):
        pattern = r"[\w.-]+(/[\w.-]+)*" if setting.kind == "subpath" else r"[\w.-]+/[\w.-]+"
        if not re.fullmatch(pattern, text) or ".." in text.split("/"):
            what = "a folder inside dataset.root" if setting.kind == "subpath" else "owner/name"
            raise ConfigError(f"{key}={shown(value)} is not {what}, e.g. {_example(setting)}.")
        return
    if setting.kind == "uri" and re.match(r"\w+:", text):
        if not text.startswith("sqlite:///"):
            raise ConfigError(
                f"{key}: the page writes MLflow runs to a SQLite file (sqlite:///outputs/"
                "mlflow.db) under the folders it may use; a tracking server is set where the "
                "server starts (MLFLOW_TRACKING_URI), or from the command line."
            )
        text = unquote(text.removeprefix("sqlite:///").split("?")[0])
    path = Path(text).expanduser()
    resolved = (path if path.is_absolute() else Path.cwd() / path).resolve()
    if not any(resolved.is_relative_to(folder.resolve()) for folder in folders):
        raise ConfigError(
            f"{key}={shown(value)} is outside the folders the page may use "
            f"({', '.join(_named(f) for f in folders)}); put the files under one of them, or "
            "start app.py with --allow-folder FOLDER."
        )


def _example(setting: Setting) -> str:
    return "train/images" if setting.kind == "subpath" else "owner/dataset-name"


def _named(folder: Path) -> str:
    """A folder as the sentence names it: relative to where the server runs, when it is below."""
    folder = folder.resolve()
    return (
        f"{folder.relative_to(Path.cwd())}/" if folder.is_relative_to(Path.cwd()) else str(folder)
    )


def parsed_value(override: str) -> object:
    """The value Hydra reads from ``key=value``; a sweep or a function (choice(...)) is refused."""
    refuse_long_numbers([override])
    try:
        parsed = OverridesParser.create().parse_overrides([override])[0]
    except HydraException:
        raise ConfigError(
            f"{shown(override)} is not an override Hydra can read; write key=value, with quotes "
            "around a value that has spaces or signs, e.g. dataset.root='dataset_path/my photos'."
        ) from None
    if parsed.is_sweep_override():
        raise ConfigError(
            f"{shown(override)} is a sweep (several values), which the page does not start; "
            "give one value, or use python train.py --multirun."
        )
    return parsed.value()
