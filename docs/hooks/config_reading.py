"""Reading configs/ for the config reference (config_reference.py, the mkdocs hook that writes the
page): every key of every YAML file, its value, and its meaning.

Every file is read twice: once as YAML (the keys and their values) and once line by line (the
comments). A key's meaning is the comment after it (with the comment lines that continue it), or
the comment lines just above it; a key without one takes its parent block's comment, then the same
key's comment in the file it builds on (its defaults list, followed to the end), in config.yaml,
or, for a preset or a search, in the group that owns the key. The comments are the only source:
a key that none of them describes shows no meaning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[^\s#:'\"-][^:#]*?|'[^']*'|\"[^\"]*\")\s*:(?:\s+|$)")
_COMMENT = re.compile(r"(^|\s)#\s?(?P<text>.*)$")


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
        if key in _keys(owner):
            return _own_meaning(key, owner.comments)
    return ""


def _owning_group(
    f: ConfigFile, full_key: str, by_path: dict[str, ConfigFile]
) -> ConfigFile | None:
    """For a key that a global file (a preset, a search) sets in another group's block: the file
    of that group that holds the key, base files first, then the option config.yaml picks (a
    preset's ``optimizer.weight_decay`` is AdamW's). Never a sibling option of ``f``."""
    if f.package:
        return None
    holders = [
        g
        for g in by_path.values()
        if g.package and g.group != f.group and _relative(g, full_key) in _keys(g)
    ]
    primary = by_path.get("config.yaml")
    chosen = {f"{d.replace(': ', '/')}.yaml" for d, _ in primary.defaults} if primary else set()
    holders.sort(
        key=lambda g: (
            not g.is_base,
            g.path.as_posix() not in chosen,
            -len(g.package),
            g.path.as_posix(),
        )
    )
    return holders[0] if holders else None


def _relative(f: ConfigFile, full_key: str) -> str | None:
    if not f.package:
        return full_key
    prefix = f.package + "."
    return full_key[len(prefix) :] if full_key.startswith(prefix) else None


def _keys(f: ConfigFile) -> set[str]:
    return {entry.key for entry in f.entries}
