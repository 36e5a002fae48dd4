"""A mkdocs hook: the config reference (docs/reference/config.md), generated from configs/ when
the docs are built, so it lists exactly the keys the YAML files hold.

Every file under configs/ is read twice: once as YAML (the keys and their values) and once line by
line (the comments). A key's meaning is the comment after it (with the comment lines that continue
it), or the comment lines just above it; a key without one takes its parent block's comment, then
the same key's comment in the file it builds on, in another option of its group, or in
config.yaml. ``render_config_reference`` is what the page shows; tests/test_docs.py calls it too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
PAGE = "reference/config.md"
MARKER = "<!-- config-reference -->"

# Sections of the old README that config comments still name, and the docs page of each
# (relative to reference/config.md). A name not found here stays plain text.
SECTION_PAGES = {
    "Accuracy recipes": "../guide/recipes.md",
    "Datasets": "../guide/datasets.md",
    "Fine-tuning": "../guide/fine-tuning.md",
    "Studies": "../guide/sweeps.md#studies-that-outlive-a-process",
    "Experiment tracking": "../guide/tracking.md",
    "Sweeps on a SLURM cluster": "../guide/clusters.md",
    "torchrun": "../guide/distributed.md",
    "Checking and measuring a GPU": "../development/benchmarks.md",
    "Deploying a run": "../guide/predicting.md#deploying-without-pytorch",
}

GROUP_INTRO = {
    "": "The primary config: the default choice of each group, and the settings no group owns.",
    "model": "The Vision Transformer's shape. Pick one with `model=NAME`; keys are `model.*`.",
    "dataset": "Where the images come from. Pick one with `dataset=NAME`; keys are `dataset.*`.",
    "optimizer": "Any argument of the torch optimizer. Pick one with `optimizer=NAME`.",
    "scheduler": "The learning-rate schedule, per optimizer step. Pick one with `scheduler=NAME`.",
    "logger": "Where a copy of the run folder is logged: `logger=NAME`, or a list "
    "`'logger=[tensorboard,wandb]'`.",
    "experiment": "Presets, added with `+experiment=NAME`. They are `# @package _global_`: "
    "their keys are full paths, and they override only what differs from the defaults.",
    "hparams_search": "Hyperparameter searches, added with `--multirun +hparams_search=NAME`.",
    "hydra/launcher": "Where the jobs of a `--multirun` run: `hydra/launcher=NAME`.",
    "hydra/sweeper": "The Optuna study sweeper that `+hparams_search=optuna` picks.",
    "hydra/sweeper/sampler": "Optuna's sampler: `hydra/sweeper/sampler=NAME`.",
    "hydra/sweeper/pruner": "Optuna's pruner: `hydra/sweeper/pruner=NAME`.",
}

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[^\s#:'\"-][^:#]*?|'[^']*'|\"[^\"]*\")\s*:(?:\s+|$)")
_COMMENT = re.compile(r"(^|\s)#\s?(?P<text>.*)$")
_LIST_PREVIEW = 4
# Meanings of the keys whose YAML has no comment (the comment, once written, wins). A ``*.`` key
# stands for that last part under any block.
FALLBACK: dict[str, str] = {
    "trainer.epochs": "epochs to train; the best epoch on validation is tested at the end",
    "trainer.batch_size": "training images per step, per process under torchrun",
    "trainer.label_smoothing": "label smoothing of the loss (also of Mixup/CutMix targets)",
    "hydra.output_subdir": "where Hydra writes .hydra/: not again on resume, only on rank 0",
    "hydra.sweep.dir": "the folder of a --multirun sweep",
    "hydra.sweep.subdir": "each job's folder inside it: its number",
    "model.name": "the option's name, as listed by inference.py and in summary.json",
    "model.image_size": "input size in pixels (square); images are resized to it",
    "model.patch_size": "patch size in pixels; must divide model.image_size",
    "model.embed_dim": "width of the tokens",
    "model.depth": "number of transformer blocks",
    "model.num_heads": "attention heads; must divide model.embed_dim",
    "model.mlp_ratio": "the MLP's hidden width as a multiple of model.embed_dim",
    "model.qkv_bias": "a bias in the attention's query, key and value projection",
    "dataset.name": "the option's name, as listed by inference.py and in summary.json",
    "dataset.source": "which reader loads it: digits, torchvision, folder or kaggle",
    "dataset.class_name": "the class in torchvision.datasets",
    "dataset.files": "the files to put under dataset.root by hand, named when a download fails",
    "dataset.splits": "torchvision constructor arguments of each official split",
    "optimizer.lr": "the peak learning rate",
    "optimizer.weight_decay": "weight decay, never on norms, biases, positions or the class token",
    "optimizer.betas": "the moving averages' coefficients",
    "optimizer.momentum": "SGD momentum",
    "optimizer.nesterov": "Nesterov momentum",
    "scheduler.warmup_epochs": "linear warmup, per optimizer step, over this many epochs",
    "scheduler.min_lr": "the learning rate at the last step",
    "scheduler.step_epochs": "epochs between two steps down",
    "scheduler.gamma": "the factor of each step down",
    "hydra.sweeper.params": "the search space",
    "logger.wandb.project": "the W&B project",
    "logger.wandb.tags": "tags of the W&B run",
    "dataset.root": "the folder the images are read from",
    "dataset.channels": "1 (grey) or 3 (RGB): images of the other kind are converted",
    "dataset.val_fraction": "held out of train (stratified, seeded) when there is no val split",
    "dataset.test_fraction": "held out of train (stratified, seeded) when there is no test split",
    "dataset.split_seed": "seed of the held-out splits, apart from `seed`, so seeds share a split",
    "dataset.augment.horizontal_flip": "flip training images left-right at random",
    "logger.tensorboard": "TensorBoard's event files in the run folder's tensorboard/",
    "*._target_": "the class or function Hydra calls with the other keys",
    "*._partial_": "called later with the rest of its arguments (the model's parameters, ...)",
    "*.seed": "seed of the sampler (null: not seeded)",
    "*.gpus_per_node": "GPUs per job",
    "*.tasks_per_node": "processes per job",
    "*.cpus_per_task": "CPUs per process",
    "*.mem_gb": "memory per job",
    "*.timeout_min": "the job's time limit, in minutes",
    "*.submitit_folder": "submitit's scripts and each job's stdout and stderr",
    "*.n_warmup_steps": "epochs of a trial that are never pruned",
    "*.n_startup_trials": "trials that end before any is pruned",
    "*.lower": "the validation accuracy below which a trial is pruned",
}


@dataclass
class Entry:
    """One key of one file: its dotted name inside the file, its value and its meaning."""

    key: str
    value: Any
    meaning: str = ""


@dataclass
class ConfigFile:
    path: Path  # relative to configs/
    group: str  # "" for config.yaml, "model", "hydra/launcher", ...
    package: str  # where its keys land: "", "model", "hydra.launcher", ... ("" for _global_)
    description: list[str]  # the header comment's lines ("" between paragraphs)
    defaults: list[tuple[str, str]]  # (entry, its comment) of the defaults list
    entries: list[Entry] = field(default_factory=list)
    comments: dict[str, str] = field(default_factory=dict)  # every commented key, leaves or not

    @property
    def option(self) -> str:
        return self.path.stem

    @property
    def is_base(self) -> bool:
        return self.option.startswith("_")

    def full_key(self, key: str) -> str:
        return f"{self.package}.{key}" if self.package else key


# -- reading --------------------------------------------------------------------------------


def config_files(configs: Path = CONFIGS) -> list[Path]:
    """Every YAML file under ``configs``, config.yaml first, then by group and option."""
    files = sorted(configs.rglob("*.yaml"), key=lambda p: (p.parent != configs, str(p)))
    return [p for p in files if p.is_file()]


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists, scalars and empty mappings are leaves."""
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree} if prefix else {}


def read_config(path: Path, configs: Path = CONFIGS) -> ConfigFile:
    rel = path.relative_to(configs)
    group = "" if rel.parent == Path(".") else rel.parent.as_posix()
    text = path.read_text()
    data = yaml.safe_load(text) or {}
    defaults = data.pop("defaults", []) if isinstance(data, dict) else []
    header, comments, default_notes = _read_comments(text)
    package = group.replace("/", ".")
    if any(line.strip() == "# @package _global_" for line in text.splitlines()[:3]):
        package = ""
    entries = [Entry(key, value) for key, value in flatten(data).items()]
    for entry in entries:
        entry.meaning = _own_meaning(entry.key, comments)
    return ConfigFile(
        path=rel,
        group=group,
        package=package,
        description=header,
        defaults=[(_default_text(d), default_notes.get(_default_text(d), "")) for d in defaults],
        entries=entries,
        comments=comments,
    )


def _default_text(item: Any) -> str:
    if isinstance(item, dict):
        return ", ".join(f"{k}: {v}" for k, v in item.items())
    return str(item)


def _split_comment(line: str) -> tuple[str, str | None]:
    """``key: value  # text`` -> (``key: value``, ``text``); quotes are not looked into, which is
    enough for these files (no value holds a ``#``)."""
    match = _COMMENT.search(line)
    if not match:
        return line, None
    return line[: match.start()].rstrip(), match.group("text").strip()


def _read_comments(text: str) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """The file's header comment (lines), the comment of each dotted key, and the comments of the
    defaults list's entries."""
    reader = _CommentReader()
    for raw in text.splitlines():
        reader.line(raw)
    return reader.finish()


class _CommentReader:
    """Reads a YAML file line by line, keeping track of the block each key is in."""

    def __init__(self) -> None:
        self.header: list[str] = []
        self.notes: list[list[str]] = []  # comment blocks at column 0 that belong to no key
        self.comments: dict[str, str] = {}
        self.default_notes: dict[str, str] = {}
        self.stack: list[tuple[int, str]] = []  # (indent, key) of the blocks a line is in
        self.above: list[str] = []  # comment lines waiting for the key below them
        self.above_col = -1
        self.above_raw: list[str] = []  # the same, with their indentation (commands)
        self.last_key: str | None = None  # a key whose trailing comment may go on below it
        self.last_indent = -1
        self.block_indent: int | None = None  # inside a block scalar (``|``) deeper than this
        self.in_header = True

    def line(self, raw: str) -> None:
        stripped = raw.strip()
        indent = len(raw) - len(raw.lstrip(" "))
        if self.block_indent is not None:
            if not stripped or indent > self.block_indent:
                return
            self.block_indent = None
        if not stripped:
            self._blank()
        elif stripped.startswith("#"):
            self._comment(stripped, indent)
        else:
            self.in_header = False
            self._content(raw, stripped, indent)

    def _blank(self) -> None:
        if self.above and self.above_col == 0 and not self.in_header:
            self.notes.append(self.above_raw)
        self.above, self.above_col, self.last_key = [], -1, None
        self.in_header = self.in_header and not self.header

    def _comment(self, stripped: str, indent: int) -> None:
        raw_body = stripped[1:].removeprefix(" ").rstrip()
        body = raw_body.strip()
        if body.startswith("@package"):
            return
        if self.in_header and indent == 0:
            self.header.append(raw_body)
        elif self.last_key is not None and indent > self.last_indent and not self.above:
            self.comments[self.last_key] += " " + body  # a trailing comment that goes on
        else:
            if not self.above:
                self.above_col, self.above_raw = indent, []
            self.above.append(body)
            self.above_raw.append(raw_body)

    def _content(self, raw: str, stripped: str, indent: int) -> None:
        content, trailing = _split_comment(raw)
        match = None if stripped.startswith("- ") else _KEY.match(content)
        if match is None:
            if stripped.startswith("- ") and trailing:  # an entry of a list: defaults, ...
                self.default_notes[content.strip()[2:].strip()] = trailing
            self.above, self.last_key = [], None
            return
        key = match.group("key").strip().strip("'\"")
        while self.stack and self.stack[-1][0] >= indent:
            self.stack.pop()
        dotted = ".".join([k for _, k in self.stack] + [key])
        self.stack.append((indent, key))
        meaning = list(self.above) if self.above and self.above_col == indent else []
        if trailing:
            meaning.append(trailing)
        if meaning:
            self.comments[dotted] = " ".join(meaning)
        self.above, self.above_col = [], -1
        self.last_key, self.last_indent = (dotted, indent) if trailing else (None, -1)
        if content[match.end() :].strip().startswith(("|", ">")):
            self.block_indent = indent

    def finish(self) -> tuple[list[str], dict[str, str], dict[str, str]]:
        if self.above and self.above_col == 0:
            self.notes.append(self.above_raw)
        description = list(self.header)
        for note in self.notes:
            description += ["", *note]
        return description, self.comments, self.default_notes


def _own_meaning(key: str, comments: dict[str, str]) -> str:
    """The key's comment, else its nearest commented parent block's."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        found = comments.get(".".join(parts[:n]))
        if found:
            return found
    return ""


def read_all(configs: Path = CONFIGS) -> list[ConfigFile]:
    """Every file, with meanings filled in from the files each builds on (its defaults list,
    within its group, followed to the end), then from config.yaml."""
    files = [read_config(p, configs) for p in config_files(configs)]
    by_path = {f.path.as_posix(): f for f in files}
    primary = by_path.get("config.yaml")
    for f in files:
        for entry in f.entries:
            if not entry.meaning:
                entry.meaning = _inherited(f, f.full_key(entry.key), by_path, primary, set())
    return files


def _bases(f: ConfigFile, by_path: dict[str, ConfigFile]) -> list[ConfigFile]:
    """The files of its own group that ``f``'s defaults list names (``_common``, ...)."""
    found = []
    for item, _ in f.defaults:
        if ":" in item or item == "_self_":
            continue
        base = by_path.get(f"{f.group}/{item}.yaml" if f.group else f"{item}.yaml")
        if base is not None:
            found.append(base)
    return found


def _inherited(
    f: ConfigFile,
    full_key: str,
    by_path: dict[str, ConfigFile],
    primary: ConfigFile | None,
    seen: set[str],
) -> str:
    seen.add(f.path.as_posix())
    for base in _bases(f, by_path):
        if base.path.as_posix() in seen:
            continue
        key = _relative(base, full_key)
        if key is not None:
            meaning = _own_meaning(key, base.comments) if key in _keys(base) else ""
            meaning = meaning or _inherited(base, full_key, by_path, primary, seen)
            if meaning:
                return meaning
    if primary is not None and f is not primary and full_key in _keys(primary):
        meaning = _own_meaning(full_key, primary.comments)
        if meaning:
            return meaning
    owner = _owning_group(f, full_key, by_path)
    if owner is not None:
        key = _relative(owner, full_key)
        if key in _keys(owner) and _own_meaning(key, owner.comments):
            return _own_meaning(key, owner.comments)
    return _fallback(full_key)


def _owning_group(
    f: ConfigFile, full_key: str, by_path: dict[str, ConfigFile]
) -> ConfigFile | None:
    """For a key that a global file (a preset, a search) sets in another group's block: the file
    of that group that holds the key, base files first. Never a sibling option of ``f``."""
    if f.package:
        return None
    holders = [
        g
        for g in by_path.values()
        if g.package and g.group != f.group and _relative(g, full_key) in _keys(g)
    ]
    holders.sort(key=lambda g: (not g.is_base, -len(g.package), g.path.as_posix()))
    return holders[0] if holders else None


def _fallback(full_key: str) -> str:
    parts = full_key.split(".")
    for n in range(len(parts), 0, -1):
        found = FALLBACK.get(".".join(parts[:n]))
        if found:
            return found
    return FALLBACK.get("*." + parts[-1], "")


def _relative(f: ConfigFile, full_key: str) -> str | None:
    if not f.package:
        return full_key
    prefix = f.package + "."
    return full_key[len(prefix) :] if full_key.startswith(prefix) else None


def _keys(f: ConfigFile) -> set[str]:
    return {entry.key for entry in f.entries}


# -- writing --------------------------------------------------------------------------------


def _escape(text: str) -> str:
    """Markdown-safe text for a table cell; code spans are kept as they are (but for ``|``)."""
    out = []
    for i, part in enumerate(text.split("`")):
        if i % 2:
            out.append("`" + part.replace("|", "\\|") + "`")
        else:
            part = part.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            for ch in "*[]|_":
                part = part.replace(ch, "\\" + ch)
            out.append(part)
    return "".join(out)


def _link_sections(text: str) -> str:
    """``the README ("Accuracy recipes")`` and ``README, "Studies"`` -> a link to the docs page
    that holds that section now; a section not in SECTION_PAGES stays as it is."""

    def replace(match: re.Match) -> str:
        target = SECTION_PAGES.get(match.group("name"))
        return f"[{match.group('name')}]({target})" if target else match.group(0)

    text = re.sub(r"the README \(\"(?P<name>[^\"]+)\"\)", replace, text)
    return re.sub(r"README, \"(?P<name>[^\"]+)\"", replace, text)


def _value(value: Any) -> str:
    if value is None:
        shown = "null"
    elif isinstance(value, bool):
        shown = "true" if value else "false"
    elif isinstance(value, dict):
        shown = "{}"
    elif isinstance(value, list):
        items = [_value(v).strip("`") for v in value[:_LIST_PREVIEW]]
        more = f", ... ({len(value)} items)" if len(value) > _LIST_PREVIEW else ""
        shown = "[" + ", ".join(items) + more + "]"
    elif isinstance(value, str) and "\n" in value:
        return f"(text, {value.count(chr(10))} lines)"
    else:
        shown = str(value)
    return "`" + shown.replace("|", "\\|").replace("`", "'") + "`"


def _choose(f: ConfigFile) -> str:
    if f.group == "":
        return "always loaded (`configs/config.yaml`)"
    if f.is_base:
        return "a base file that the other options of the group build on; not a choice by itself"
    if f.group in ("experiment", "hparams_search"):
        return f"`+{f.group}={f.option}`"
    return f"`{f.group}={f.option}`"


def _describe(raw: list[str]) -> list[str]:
    """Comment lines as Markdown: prose joined into paragraphs, indented lines (commands) as a
    code block."""
    out: list[str] = []
    prose: list[str] = []
    code: list[str] = []

    def flush() -> None:
        if prose:
            out.extend([_link_sections(_escape(" ".join(prose))), ""])
        if code:
            out.extend(["```bash", *code, "```", ""])
        prose.clear()
        code.clear()

    for line in raw:
        if line.startswith("  "):
            if prose:
                flush()
            code.append(line.strip())
        elif not line.strip():
            flush()
        else:
            if code:
                flush()
            prose.append(line.strip())
    flush()
    return out


def render_file(f: ConfigFile) -> str:
    lines = [f"### {f.path.as_posix()}", ""]
    lines += _describe(f.description)
    lines.append(f"Used as: {_choose(f)}.")
    if f.defaults:
        shown = ", ".join(
            f"`{d}`" + (f" ({_link_sections(_escape(note))})" if note else "")
            for d, note in f.defaults
        )
        lines.append(f"Defaults list: {shown}.")
    lines.append("")
    if not f.entries:
        lines += ["This file sets no keys.", ""]
        return "\n".join(lines)
    lines += ["| key | value | meaning |", "| --- | --- | --- |"]
    for entry in f.entries:
        meaning = _link_sections(_escape(entry.meaning)) if entry.meaning else ""
        lines.append(f"| `{f.full_key(entry.key)}` | {_value(entry.value)} | {meaning} |")
    lines.append("")
    return "\n".join(lines)


def render_config_reference(configs: Path = CONFIGS) -> str:
    """The generated part of reference/config.md: one section per group, one table per file."""
    files = read_all(configs)
    groups: dict[str, list[ConfigFile]] = {}
    for f in files:
        groups.setdefault(f.group, []).append(f)
    out = []
    for group, members in groups.items():
        title = "The primary config" if group == "" else f"{group}/"
        out += [f"## {title}", ""]
        intro = GROUP_INTRO.get(group)
        if intro:
            out += [intro, ""]
        choices = [f"`{m.option}`" for m in members if group and not m.is_base]
        if choices:
            out += ["Options: " + ", ".join(choices) + ".", ""]
        out += [render_file(m) for m in members]
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """mkdocs calls this for every page; only the config reference is filled in."""
    if page.file.src_uri == PAGE and MARKER in markdown:
        return markdown.replace(MARKER, render_config_reference())
    return markdown
