"""A mkdocs hook: the Python API pages list the modules that src/ holds when the docs are built.

A page writes ``<!-- api: src.web -->`` where a room's modules belong; the hook puts there one
``::: module`` block (mkdocstrings) per module file of that package, in the order the package's
docstring names them (the rest alphabetically), so a module added, split or moved shows up, and
one that is gone does not break the build. Functions that a package's ``__init__.py`` defines
itself come first.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"<!-- api: (?P<package>[\w.]+) -->")


def modules(package: str, root: Path = ROOT) -> list[str]:
    """The dotted names of the module files directly inside ``package``."""
    folder = root.joinpath(*package.split("."))
    init = folder / "__init__.py"
    docstring = (ast.get_docstring(ast.parse(init.read_text())) or "") if init.exists() else ""
    named = re.findall(r"\b(\w+)\.py\b", docstring)
    found = sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
    order = [n for n in dict.fromkeys(named) if n in found] + [n for n in found if n not in named]
    return [f"{package}.{name}" for name in order]


def own_definitions(package: str, root: Path = ROOT) -> list[str]:
    """Public functions and classes that the package's ``__init__.py`` defines (not imports)."""
    init = root.joinpath(*package.split("."), "__init__.py")
    if not init.exists():
        return []
    tree = ast.parse(init.read_text())
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_")
    ]


def api_blocks(package: str, root: Path = ROOT) -> str:
    blocks = []
    own = own_definitions(package, root)
    if own and package != "src":
        members = "\n".join(f"        - {name}" for name in own)
        blocks.append(
            f"::: {package}\n    options:\n      show_root_toc_entry: true\n"
            f"      members:\n{members}\n"
        )
    blocks += [f"::: {module}\n" for module in modules(package, root)]
    return "\n".join(blocks)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return MARKER.sub(lambda m: api_blocks(m.group("package")), markdown)
