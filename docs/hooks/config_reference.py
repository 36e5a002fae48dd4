"""A mkdocs hook: the config reference (docs/reference/config.md), generated from configs/ when
the docs are built, so it lists exactly the keys the YAML files hold, each with the meaning its
comment gives (config_reading.py reads them). A comment's ``docs: guide/recipes.md`` (or
``docs: results.md#accuracy-recipes``) becomes a link to that page of the site.
``render_config_reference`` is what the page shows; tests/test_docs.py calls it too.
"""

from __future__ import annotations

import functools
import posixpath
import re
import sys
from pathlib import Path
from typing import Any

from markdown.extensions.toc import slugify

HOOKS = str(Path(__file__).resolve().parent)
if HOOKS not in sys.path:  # mkdocs puts it there while it loads a hook; tests/test_docs.py does not
    sys.path.insert(0, HOOKS)

from config_reading import CONFIGS, ROOT, ConfigFile, read_all  # noqa: E402

DOCS = ROOT / "docs"
PAGE = "reference/config.md"
MARKER = "<!-- config-reference -->"
RANGES_MARKER = "<!-- config-ranges -->"

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

_LIST_PREVIEW = 4
# A comment's pointer to a page of the site: docs: PAGE.md or docs: PAGE.md#ANCHOR.
_MENTION = re.compile(r"\bdocs:\s+(?P<page>[\w./-]+\.md)(?:#(?P<anchor>[\w-]+))?")


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


def _markdown(text: str) -> str:
    """Comment text as Markdown: escaped, with each ``docs: PAGE.md`` a link to that page."""
    out, start = [], 0
    for match in _MENTION.finditer(text):
        out += [_escape(text[start : match.start()]), _link(match["page"], match["anchor"])]
        start = match.end()
    return "".join(out) + _escape(text[start:])


def _link(page: str, anchor: str | None) -> str:
    """A link from the config reference to ``page`` (relative to docs/), named by its title and,
    with an anchor, the section's heading. A page or section that is not there keeps its path as
    the name (and ``mkdocs build --strict`` fails on the link)."""
    title, sections = _headings(page)
    name = title or page
    if anchor:
        name = f"{name}: {sections[anchor]}" if anchor in sections else f"{page}#{anchor}"
    target = posixpath.relpath(page, posixpath.dirname(PAGE)) + (f"#{anchor}" if anchor else "")
    return f"[{_escape(name)}]({target})"


@functools.cache
def _headings(page: str) -> tuple[str, dict[str, str]]:
    """The page's title and its sections' headings by anchor (outside code blocks)."""
    path = DOCS / page
    if not path.is_file():
        return "", {}
    title, sections, fenced = "", {}, False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else re.match(r"^(#{1,6})\s+(.+?)\s*$", line)
        if match and len(match[1]) == 1 and not title:
            title = match[2]
        elif match:
            sections.setdefault(slugify(match[2].replace("`", ""), "-"), match[2])
    return title, sections


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
            out.extend([_markdown(" ".join(prose)), ""])
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
            f"`{d}`" + (f" ({_markdown(note)})" if note else "") for d, note in f.defaults
        )
        lines.append(f"Defaults list: {shown}.")
    lines.append("")
    if not f.entries:
        lines += ["This file sets no keys.", ""]
        return "\n".join(lines)
    lines += ["| key | value | meaning |", "| --- | --- | --- |"]
    for entry in f.entries:
        meaning = _markdown(entry.meaning) if entry.meaning else ""
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


def render_ranges() -> str:
    """The table of src/training/ranges.py's LIMITS: the range train.py and the page enforce."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from src.training.ranges import LIMITS, number_text

    lines = ["| key | lowest | highest | |", "| --- | --- | --- | --- |"]
    for key, limit in sorted(LIMITS.items()):
        kind = "whole number" if limit.whole else "number"
        note = f"{kind}; {limit.hint}" if limit.hint else kind
        lines.append(f"| `{key}` | {number_text(limit.low)} | {number_text(limit.high)} | {note} |")
    return "\n".join(lines)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """mkdocs calls this for every page; only the config reference is filled in."""
    if page.file.src_uri == PAGE and MARKER in markdown:
        markdown = markdown.replace(RANGES_MARKER, render_ranges())
        return markdown.replace(MARKER, render_config_reference())
    return markdown
