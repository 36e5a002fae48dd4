"""Reads a W&B offline run back, the way wandb-core does: its .wandb file is a LevelDB-style log
of ``wandb.proto`` ``Record`` messages (wandb >= 0.20 ships no Python reader of its own)."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024  # records never straddle a block; a block's tail shorter than a header is padding
HEADER = struct.Struct("<IHB")  # checksum, length, kind (1 full, 2 first, 3 middle, 4 last)
FILE_HEADER = b":W&B\xe1\xbe\x00"  # identifier, magic 0xBEE1, version 0


def records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    assert data.startswith(FILE_HEADER), f"{path} is not a .wandb file"
    pos, parts = len(FILE_HEADER), b""
    while pos + HEADER.size <= len(data):
        if BLOCK - pos % BLOCK < HEADER.size:
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = HEADER.unpack_from(data, pos)
        pos += HEADER.size
        parts += data[pos : pos + length]
        pos += length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


def read_run(path: Path) -> dict:
    """One offline run file as plain data: the run (id, name, group, config), its history rows
    by step, its summary and the artifacts it logged."""
    run: dict = {"history": {}, "summary": {}, "artifacts": []}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.update(
                id=r.run_id,
                name=r.display_name,
                group=r.run_group,
                project=r.project,
                config={i.key: json.loads(i.value_json) for i in r.config.update},
            )
        elif kind == "history":
            row = {_key(i): json.loads(i.value_json) for i in record.history.item}
            run["history"].setdefault(row["_step"], {}).update(row)
        elif kind == "artifact":
            a = record.artifact
            run["artifacts"].append(
                {
                    "name": a.name,
                    "type": a.type,
                    "aliases": list(a.aliases),
                    "files": sorted(e.path for e in a.manifest.contents),
                }
            )
        elif kind == "summary":
            run["summary"].update(
                {_key(i): json.loads(i.value_json) for i in record.summary.update}
            )
    return run


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)
