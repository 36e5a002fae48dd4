"""The web page: explore saved runs, try a model on an image, and train new runs.

    python app.py                       # http://127.0.0.1:7860, the runs in outputs/ and multirun/
    python app.py --port 8000 --runs outputs --max-upload-mb 5
    WORKBENCH_PASSWORD=... python app.py --host 0.0.0.0    # on the network: a login, to train too

It lists the runs as `python inference.py --list` does, shows a run's curves, per-class metrics and
figures, and predicts an uploaded image (or a test image) with the top-k classes and the attention
rollout over the image. Its Train tab runs train.py and follows the run (new runs go to outputs/).
It listens on this machine only unless --host says otherwise; on another address it trains only
behind a password (WORKBENCH_PASSWORD; the user name is WORKBENCH_USER, by default workbench).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from src.errors import ConfigError
from src.training.device import resolve_device
from src.web.page import build_page, serve
from src.web.train_control import PASSWORD_VARIABLE, USER_VARIABLE
from src.web.train_tab import training_part
from src.web.workbench import Workbench, run_roots


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs",
        nargs="+",
        metavar="FOLDER",
        help="folders to look for runs in (default: outputs multirun)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1, this machine only; "
        "0.0.0.0 opens the page to the network, where training needs "
        f"{PASSWORD_VARIABLE})",
    )
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=10,
        help="largest upload accepted, in MB (default 10)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument(
        "--allow-folder",
        action="append",
        default=[],
        metavar="FOLDER",
        help="a folder the Train tab may read data from and write to, besides dataset_path/ and "
        "outputs/ (repeat for more); paths typed on the page must lie under one of them",
    )
    parser.add_argument(
        "--no-training",
        action="store_true",
        help="leave out the Train tab: the page only shows runs and predicts",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error("--port must be between 1 and 65535")
    if args.max_upload_mb <= 0:
        parser.error("--max-upload-mb must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        bench = Workbench(
            run_roots(args.runs), args.max_upload_mb, resolve_device(args.device, "--device ")
        )
        password = os.environ.get(PASSWORD_VARIABLE) or None
        training = training_part(
            bench, args.host, password, not args.no_training, [Path(f) for f in args.allow_folder]
        )
        auth = (os.environ.get(USER_VARIABLE, "workbench"), password) if password else None
        serve(build_page(bench, training), bench, args.host, args.port, auth=auth)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
