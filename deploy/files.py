"""Reading a small file whole, or saying in one sentence that it is damaged (``DamagedFile``):
model.json here, and summary.json and model.json in the workbench (src/fileio.py uses these)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deploy.errors import DamagedFile


def read_text(path: Path, fix: str) -> str:
    """The whole file as text; DamagedFile when it is empty or not text."""
    data = Path(path).read_bytes()
    if not data.strip():
        raise DamagedFile(path, "empty", fix)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DamagedFile(path, "not text", fix) from None


def read_json(path: Path, fix: str) -> dict[str, Any]:
    """A JSON object; DamagedFile when the file is empty, cut short, not JSON or not an object."""
    text = read_text(path, fix)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        end = err.pos >= len(text.rstrip()) - 1 or err.msg.startswith("Unterminated")
        raise DamagedFile(path, "cut short" if end else f"not JSON: {err.msg}", fix) from None
    if not isinstance(data, dict):
        raise DamagedFile(path, "not a JSON object", fix)
    return data
