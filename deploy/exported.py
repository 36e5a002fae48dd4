"""What an export is: model.onnx beside the run's model.json, tied to it by fingerprints.

The exporter (src/predict/onnx_export.py) records the sha256 of model.json and of the weights in
model.onnx's metadata; the predictor recomputes them for the files it finds and refuses an export
that no longer matches (a run trained further, or a model.json copied from another run). A folder
on a server holds model.onnx and model.json only, and the weights' fingerprint is then not checked.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from deploy.errors import DamagedFile

ONNX_FILE = "model.onnx"
CARD_FILE = "model.json"
# metadata key -> the file (relative to the run folder) whose sha256 it holds
WEIGHTS_FILE = "weights/best.safetensors"
FINGERPRINTS = {
    "vit.model_json_sha256": CARD_FILE,
    "vit.weights_sha256": WEIGHTS_FILE,
}


def export_command(folder: Path) -> str:
    return f"python inference.py --run {folder} --export-onnx"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprints(folder: Path) -> dict[str, str]:
    """The metadata an export records: the sha256 of each fingerprinted file in ``folder``."""
    return {
        key: sha256(folder / name)
        for key, name in FINGERPRINTS.items()
        if (folder / name).is_file()
    }


def changed_files(folder: Path, recorded: dict[str, str]) -> list[str]:
    """The files of ``folder`` that differ from what the export recorded (missing files aside).
    A model.json the export has no fingerprint of counts as changed: it cannot be vouched for."""
    changed = []
    for key, name in FINGERPRINTS.items():
        path = folder / name
        if path.is_file() and recorded.get(key) != sha256(path):
            changed.append(name)
    return changed


def damaged_weights(folder: Path, changed: list[str]) -> None:
    """Weights that no longer match the export because they are damaged, not trained further,
    raise DamagedFile: exporting again would fail on them (the safetensors layout, read here
    without safetensors: an 8-byte header length, a JSON header, then the tensors it maps)."""
    path = folder / WEIGHTS_FILE
    if WEIGHTS_FILE not in changed:
        return
    size = path.stat().st_size
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little") if size >= 8 else 0
        try:
            header = json.loads(f.read(length)) if 8 < 8 + length <= size else None
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"))
        except (ValueError, TypeError, KeyError, AttributeError, IndexError):
            end = None
    if end is None or 8 + length + end != size:
        raise DamagedFile(
            path,
            "not a whole safetensors file",
            f"restore it from a copy of the run folder, or predict from a folder holding only "
            f"{ONNX_FILE} and {CARD_FILE}",
        )
