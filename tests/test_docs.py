"""The docs stay true to the code: the config reference lists every key of configs/, and the README
stays a short front door whose links all lead somewhere. (`mkdocs build --strict` checks the
site's own links and anchors; CI runs it.)"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import ROOT

CONFIGS = ROOT / "configs"
README = ROOT / "README.md"
README_MAX_LINES = 250


def load_hook(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def dotted_keys(tree, prefix: str = "") -> set[str]:
    """Leaf keys as dotted paths; lists, scalars and empty mappings are leaves."""
    if isinstance(tree, dict) and tree:
        keys = set()
        for key, value in tree.items():
            keys |= dotted_keys(value, f"{prefix}.{key}" if prefix else str(key))
        return keys
    return {prefix} if prefix else set()


def package_of(path: Path) -> str:
    """Where a file's keys land in the composed config: its group, or the root for
    ``# @package _global_`` files and config.yaml."""
    if "# @package _global_" in path.read_text().splitlines()[:3]:
        return ""
    return path.parent.relative_to(CONFIGS).as_posix().replace("/", ".").strip(".")


def yaml_files() -> list[Path]:
    return sorted(CONFIGS.rglob("*.yaml"))


def sections(markdown: str) -> dict[str, str]:
    """The generated page cut at its ``### <file>`` headings."""
    parts = re.split(r"^### (\S+\.yaml)$", markdown, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


@pytest.fixture(scope="module")
def reference() -> dict[str, str]:
    return sections(load_hook("config_reference").render_config_reference(CONFIGS))


def test_every_config_file_has_a_section(reference):
    assert yaml_files(), "no YAML files found under configs/"
    assert set(reference) == {p.relative_to(CONFIGS).as_posix() for p in yaml_files()}


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_config_reference_lists_every_key(path, reference):
    tree = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    tree.pop("defaults", None)  # Hydra's defaults list: how the file composes, not a setting
    package = package_of(path)
    section = reference[path.relative_to(CONFIGS).as_posix()]
    listed = set(re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE))
    expected = {f"{package}.{key}" if package else key for key in dotted_keys(tree)}
    assert expected <= listed, f"missing from the config reference: {sorted(expected - listed)}"
    assert listed <= expected, f"listed but not in the file: {sorted(listed - expected)}"


def test_config_reference_page_is_filled_in_by_the_hook():
    page = (ROOT / "docs" / "reference" / "config.md").read_text()
    hook = load_hook("config_reference")
    assert hook.MARKER in page
    assert "configs/config.yaml" in hook.render_config_reference(CONFIGS)


def test_readme_is_at_most_250_lines():
    lines = README.read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; the docs/ site takes the rest"


def readme_links() -> list[str]:
    text = README.read_text()
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # commands, not links
    inline = re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)
    reference_style = re.findall(r"^\s*\[[^\]]+\]:\s*(\S+)", text, flags=re.MULTILINE)
    return inline + reference_style


def test_readme_relative_links_point_to_files_that_exist():
    relative = [
        link
        for link in readme_links()
        if not re.match(r"^[a-z][a-z0-9+.-]*:", link) and not link.startswith("#")
    ]
    assert relative, "the README links into the docs"
    missing = [link for link in relative if not (ROOT / link.split("#")[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"
