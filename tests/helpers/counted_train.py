"""Run by tests/test_fast_paths.py under torchrun: train.py with its Hydra overrides, counting
the graphs torch.compile makes per training and evaluation call; each process writes its counts
to the folder given as the first argument, as rank<N>.json.

    python -m torch.distributed.run --standalone --nproc_per_node=2 \
        tests/helpers/counted_train.py COUNTS_DIR trainer.compile=true ...
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import src.training.fit  # noqa: E402
from src import distributed  # noqa: E402
from tests.helpers.graph_log import count_graphs_per_call  # noqa: E402

counts_dir = Path(sys.argv.pop(1))
sys.argv[0] = str(ROOT / "train.py")
calls = count_graphs_per_call(src.training.fit)  # the loops as the fit calls them
try:
    runpy.run_path(sys.argv[0], run_name="__main__")  # as `python train.py ...`, for Hydra
finally:
    counts_dir.mkdir(parents=True, exist_ok=True)
    (counts_dir / f"rank{distributed.rank()}.json").write_text(json.dumps(calls))
