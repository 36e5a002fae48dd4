"""The page's training form, turned into train.py's overrides and checked as train.py checks them.

Every field becomes one override. Each is first checked against the page's allowlist (a setting
it knows, a value of its kind and range, a path under the allowed folders); then the config is
composed in-process with Hydra's compose API and checked by ``check_config``, the function
train.py calls, so a bad value gets the sentence train.py would print.
"""

from __future__ import annotations

import difflib
import re
import shlex
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.errors import ConfigError
from src.training.checks import CONFIGS, check_config, config_options
from src.training.ranges import shown
from src.web.allowlist import (
    DEFAULT_FOLDERS,
    GROUPS,
    MAX_LENGTH,
    allowlist,
    check_value,
    parsed_value,
)

TRAIN_PY = CONFIGS.parent / "train.py"
# A password lets people train, not run programs or read files on the server: the page passes on
# only the settings of its allowlist (src/web/allowlist.py), so not keys that name code for Hydra
# to call, interpolations (${oc.env:...} reads the server's environment), a config group's choice
# that is a path (optimizer=../../elsewhere would load any YAML file, with its _target_), nor a
# package override (+optimizer@a.b=PATH does the same). After composing, every group's choice
# must be one of the files in configs/ and every _target_ one that those files name, as a second
# line of defence. The command line can do all that.
CODE_KEYS = ("_target_", "_args_", "_partial_", "_recursive_", "_convert_")
# One override: unquoted characters or quoted strings (Hydra reads the quotes), up to a space.
OVERRIDE = re.compile(r"""(?:[^\s'"]+|'[^']*'|"[^"]*")+""")
LONG_WORD = re.compile(r"\S{81,}")
_hydra = threading.Lock()  # Hydra's compose and HydraConfig are process-wide
TARGET = re.compile(r"^\s*_target_:\s*([\w.]+)", re.MULTILINE)
HYDRAS_OWN_TARGETS = "hydra._internal.core_plugins."  # its basic launcher and sweeper


@dataclass
class TrainForm:
    """The page's training form, as typed. An empty field keeps the config's value (or the
    preset's); a value is passed on as typed, for train.py's own checks to judge."""

    dataset: str = ""
    model: str = ""
    experiment: str = ""  # +experiment=NAME, a preset from configs/experiment/
    epochs: str = ""
    lr: str = ""
    batch_size: str = ""
    seed: str = ""
    other: str = ""  # more overrides, separated by spaces, as on the command line

    def overrides(self, folders: Sequence[Path] = DEFAULT_FOLDERS) -> list[str]:
        """train.py's overrides, in the order a person would type them; refused ones raise.
        Paths must lie under ``folders``."""
        chosen = [
            ("+experiment", self.experiment),
            ("dataset", self.dataset),
            ("model", self.model),
            ("trainer.epochs", self.epochs),
            ("optimizer.lr", self.lr),
            ("trainer.batch_size", self.batch_size),
            ("seed", self.seed),
        ]
        overrides = [
            f"{key}={str(value).strip()}" for key, value in chosen if str(value or "").strip()
        ] + split_overrides(self.other)
        for override in overrides:
            refuse_for_the_page(override, folders)
        return overrides


def split_overrides(text: str) -> list[str]:
    """The free field's overrides: separated by spaces, quotes kept for Hydra to read (as a shell
    would pass key='a b')."""
    text = text.strip()
    if OVERRIDE.sub("", text).strip():  # what is left is a quote that was never closed
        raise ConfigError(
            f"other overrides: a quote is not closed in {text!r}; close it, e.g. "
            "dataset.root='my photos'."
        )
    return OVERRIDE.findall(text)


def refuse_for_the_page(override: str, folders: Sequence[Path] = DEFAULT_FOLDERS) -> None:
    """Raises the sentence for an override the page does not pass on: one it sets itself, or one
    that is not on its allowlist (src/web/allowlist.py) with a value of the setting's kind, in
    range, and (for a path) under ``folders``."""
    if len(override) > MAX_LENGTH:
        raise ConfigError(
            f"{shown(override)} is too long for an override; the page takes up to {MAX_LENGTH:,} "
            "characters."
        )
    key, sign, value = override.partition("=")
    name = key.lstrip("+")
    _refuse_what_the_page_sets(override, name)
    if "${" in override:
        raise ConfigError(
            f"{shown(name, 40)}: the page takes values as typed, not interpolations (${{...}}), "
            "which can read the server's environment and files; type the value itself."
        )
    typed = "+experiment" if name == "experiment" else name
    if key.startswith("~") or not sign or typed not in allowlist():
        raise ConfigError(_not_accepted(override, typed))
    if typed.lstrip("+") in GROUPS + ("experiment",) and re.search(r"/|\.\.", value):
        folder = typed.lstrip("+")
        raise ConfigError(
            f"{shown(override)}: a choice of configs/{folder}/ is a name, not a path; choose "
            f"one of its files by name, e.g. {typed}={(config_options(folder) or ['NAME'])[0]}."
        )
    check_value(typed, parsed_value(f"{name}={value}"), folders)


def _refuse_what_the_page_sets(override: str, key: str) -> None:
    """Options, Hydra's settings, resume, package moves and code: the friendlier sentences."""
    if override.startswith("-"):
        raise ConfigError(
            f"{shown(override)} is an option of train.py, not an override; the page starts "
            "single runs, so use the command line for --multirun and other options."
        )
    if "@" in key:
        raise ConfigError(
            f"{shown(override)} moves a config to another place (KEY@PACKAGE), which the "
            "page does not pass on; choose a group's file by name, e.g. optimizer=sgd."
        )
    if re.split(r"[./]", key)[0] == "hydra":
        raise ConfigError(
            f"{shown(override)} is Hydra's, and the page sets what it needs of Hydra (the "
            "run folder); leave it out."
        )
    if key == "resume":
        raise ConfigError(
            f"{shown(override)} is what the Resume button does; pick the run in the Run "
            "picker and press Resume instead."
        )
    if any(word in key for word in CODE_KEYS):
        raise ConfigError(
            f"{shown(override)} names code for Hydra to run, which the page does not pass "
            "on; use the command line for that."
        )


def _not_accepted(override: str, key: str) -> str:
    if override.startswith("~"):
        return f"{shown(override)} deletes a setting, which the page does not do; set it instead."
    if "=" not in override:
        return f"{shown(override)} is not key=value; give a value, e.g. seed=1."
    close = difflib.get_close_matches(key, allowlist(), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return (
        f"{shown(override)} is not a setting the page accepts ({hint}it takes key=value for "
        "the config groups and the keys of configs/, as in the config reference); use the "
        "command line for anything else."
    )


def check_overrides(overrides: list[str]) -> DictConfig:
    """The config train.py would compose from ``overrides``, checked by check_config as train.py
    checks it (the same sentence when a setting is bad); Hydra's own errors in one sentence.
    A sentence quotes at most 80 characters of any one word (a long path, say)."""
    try:
        return _composed_and_checked(overrides)
    except ConfigError as err:
        raise ConfigError(LONG_WORD.sub(lambda m: shown(m[0]), str(err))) from None


def _composed_and_checked(overrides: list[str]) -> DictConfig:
    with _hydra, initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        try:
            cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
        except OverrideParseException as err:
            raise ConfigError(_unreadable(overrides, err)) from None
        except HydraException as err:
            raise ConfigError(_one_sentence(str(err))) from None
        refuse_files_and_code_outside_configs(cfg)
        before, HydraConfig.instance().cfg = HydraConfig.instance().cfg, None
        try:
            HydraConfig.instance().set_config(cfg)  # check_config names the group's choice from it
            check_config(cfg)
        except OmegaConfBaseException as err:
            raise ConfigError(_one_sentence(str(err))) from None
        finally:
            HydraConfig.instance().cfg = before
    return cfg


def refuse_files_and_code_outside_configs(cfg: DictConfig) -> None:
    """The composed config may hold only configs/'s files and the _target_s they name: the
    overrides were checked one by one, and this is the check on what they added up to."""
    for group, choice in cfg.hydra.runtime.choices.items():
        if choice is None or group.startswith("hydra/"):  # Hydra's own groups: not overridable here
            continue
        name = group.split("@")[0]
        if re.search(r"/|\.\.", str(choice)) or not (CONFIGS / name / f"{choice}.yaml").is_file():
            options = config_options(name) or ["NAME"]
            raise ConfigError(
                f"{group}={choice} is not one of the files in configs/{name}/; the "
                f"page loads only those, e.g. {name}={options[0]}."
            )
    allowed = allowed_targets()
    for target in _targets(OmegaConf.to_container(cfg, resolve=False)):
        if target not in allowed and not str(target).startswith(HYDRAS_OWN_TARGETS):
            raise ConfigError(
                f"_target_: {target} is not code that configs/ names, and the page "
                "runs only that; use the command line for other code."
            )


def allowed_targets() -> set[str]:
    """Every _target_ that a file in configs/ names."""
    return {t for path in CONFIGS.rglob("*.yaml") for t in TARGET.findall(path.read_text())}


def _targets(node) -> list:
    if isinstance(node, dict):
        found = [node["_target_"]] if "_target_" in node else []
        return found + [t for value in node.values() for t in _targets(value)]
    if isinstance(node, list):
        return [t for value in node for t in _targets(value)]
    return []


def _unreadable(overrides: list[str], err: OverrideParseException) -> str:
    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except HydraException:
            return (
                f"{override} is not an override Hydra can read; write each as key=value, "
                "separated by spaces, with quotes around a value that has spaces or signs, "
                "e.g. dataset.root='my photos'."
            )
    return _one_sentence(str(err))


def _one_sentence(message: str) -> str:
    """Hydra's multi-line message as one line: lists joined by commas, the search path left out."""
    parts: list[str] = []
    for line in message.split("Config search path")[0].splitlines():
        if line.startswith("\t") and parts:  # an item of the list the line before announces
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line.strip()
        elif line.strip():
            parts.append(line.strip())
    return " ".join(p if p.endswith((".", ":")) else p + "." for p in parts)


def shown_command(argv: list[str]) -> str:
    """The argument list as one would type it: python, train.py as seen from here, quoted words."""
    script = Path(argv[1])
    here = script.relative_to(Path.cwd()) if script.is_relative_to(Path.cwd()) else script
    return " ".join(_shell_word(word) for word in ["python", str(here), *argv[2:]])


def _shell_word(word: str) -> str:
    """A word quoted for a shell as a person would: "key='a b'" rather than shlex's '\''."""
    if shlex.quote(word) == word or re.search(r"[\"$`\\!]", word):
        return shlex.quote(word)
    return f'"{word}"'
